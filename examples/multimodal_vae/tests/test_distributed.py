"""Training on N processes is training on one: the same global batches, the same noise, the
same parameters (to float round-off), and one run folder written by process 0."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import train
from distributed import GlobalBatchNoise, Processes, TrainingObjective
from model import MultimodalVAE
from torch.distributions import Independent, Normal

import barycentric as bc

BATCH = 16
EXAMPLE = Path(__file__).resolve().parents[1]


def test_the_processes_share_out_every_global_batch(dataset):
    config = {"seed": 3, "batch_size": 8, "num_workers": 0}

    def batches(rank, world_size):
        loader = train._epoch_loader(dataset, config, 1, Processes(rank, world_size))
        return [labels.tolist() for _, labels in loader]

    whole = batches(0, 1)
    halves = batches(0, 2), batches(1, 2)
    assert [len(b) for b in whole] == [8, 8] and [len(b) for b in halves[0]] == [4, 4]
    for k, batch in enumerate(whole):
        # process r holds rows r, r + 2, ... of the one-process batch, in its order
        assert halves[0][k] == batch[0::2] and halves[1][k] == batch[1::2]


@pytest.mark.parametrize(
    ("aggregation", "estimator"),
    [
        ("poe", "split"),
        ("wb", "split"),
        ("mwb", "all"),
        ("mopoe", "all"),
        ("moe", "all"),
        ("mwb", "split"),
        ("mopoe", "split"),
        ("moe", "split"),
    ],
)
def test_two_shares_give_the_one_process_gradient(dataset, xs, aggregation, estimator):
    """Float64, so that only the order of the sums differs: agreement to 1e-12."""
    torch.manual_seed(0)
    model = MultimodalVAE(dataset.specs, 3, aggregation).double()
    batch = [x.double() for x in xs]

    def gradient(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    def objective(noise):
        return TrainingObjective(model, noise, beta=1.0, estimator=estimator)

    state = torch.get_rng_state()
    one_loss, _ = objective(GlobalBatchNoise())(batch)
    one = gradient(one_loss)
    shares, losses = [], []
    for rank in range(2):
        generator = torch.Generator()
        generator.set_state(state)
        loss, _ = objective(GlobalBatchNoise(rank, 2, generator))([x[rank::2] for x in batch])
        shares.append(gradient(loss))
        losses.append(loss.item())
    torch.testing.assert_close(sum(losses) / 2, one_loss.item(), rtol=1e-12, atol=0)
    torch.testing.assert_close((shares[0] + shares[1]) / 2, one, rtol=1e-10, atol=1e-12)
    # each process drawing its own noise for its rows gives another gradient
    torch.set_rng_state(state)
    own, _ = objective(GlobalBatchNoise())([x[1::2] for x in batch])
    assert (gradient(own) - shares[1]).abs().max() > 1e-3 * one.abs().max()


def test_two_shares_split_the_global_batch(dataset, xs):
    """MoPoE's split under two processes: each row takes the component and the noise it
    takes in the one process's batch, with missing modalities too; a process that split
    its own rows anew would give other rows other components."""
    torch.manual_seed(0)
    model = MultimodalVAE(dataset.specs, 3, "mopoe").double()
    batch = [x.double() for x in xs]
    mask = torch.ones(BATCH, 3, dtype=torch.bool)
    mask[:3, 0] = mask[3:5, 1:] = False
    state = torch.get_rng_state()
    with torch.no_grad():
        one_z, one_component = GlobalBatchNoise().split_rsample(model.encode(batch, mask))
        for rank in range(2):
            generator = torch.Generator()
            generator.set_state(state)
            share = model.encode([x[rank::2] for x in batch], mask[rank::2])
            z, component = GlobalBatchNoise(rank, 2, generator).split_rsample(share)
            assert component.tolist() == one_component[rank::2].tolist()
            torch.testing.assert_close(z, one_z[rank::2], rtol=1e-12, atol=1e-12)
            anew = bc.split_rsample(share)[1]
            assert (anew != component).any()


def test_one_process_splits_as_the_library_does():
    """Even where the midpoints are cumulative weights in exact arithmetic (3 rows, 6 of 7
    subsets present: midpoints 1/6, 1/2, 5/6), one process's split is
    :func:`barycentric.split_rsample`'s."""
    torch.manual_seed(0)
    experts = Independent(Normal(torch.randn(3, 3, 2).double(), torch.ones(3, 3, 2).double()), 1)
    mixture = bc.mixture_of_products(experts, mask=torch.tensor([False, True, True]))
    state = torch.get_rng_state()
    z, component = bc.split_rsample(mixture)
    torch.set_rng_state(state)
    one_z, one_component = GlobalBatchNoise().split_rsample(mixture)
    assert one_component.tolist() == component.tolist()
    torch.testing.assert_close(one_z, z)


TINY = {
    "dataset": "synthetic",
    "latent_dim": 4,
    "batch_size": 128,
    "epochs": 1,
    "eval": {
        "num_importance_samples": 2,
        "max_eval_samples": 32,
        "max_log_likelihood_samples": 8,
        "classifier_epochs": 1,
    },
}
STEPS, LR = 3, 1e-3


def test_torchrun_two_processes_train_the_one_process_model(tmp_path):
    """``torchrun --nproc_per_node=2`` on the CPU (gloo) against one process.

    The two runs see the same global batches and noise; they differ in the order of the
    float32 sums (two halves of the batch, then the all-reduce, against one sum) and in the
    batch size of the kernels, which changes each gradient by a few float32 ulps of the
    terms summed. Adam divides by the gradients' root mean square, so those relative
    errors reach the updates about unchanged: after 3 steps of at most ``lr = 1e-3`` each,
    differences of ~1e-7 (6e-7 measured). ``atol = 1e-5``, 1 % of one step's change, is
    far below what a wrong split, wrong noise or unaveraged gradients give (changes of
    order ``lr`` in every parameter), and the parameters move by ``3 lr`` from their start.
    """
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    flags = ["--config", str(config), "--aggregation", "wb", "--max-steps", str(STEPS)]
    one, two = tmp_path / "one", tmp_path / "two"
    assert train.main([*flags, "--run-dir", str(one)]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(EXAMPLE / "train.py"), *flags, "--run-dir", str(two)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wb on synthetic, 3 steps") == 1  # process 0 reports, alone
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
    assert len(list((two / "tensorboard").iterdir())) == 1
    torch.manual_seed(0)  # the runs' seed: their initial parameters
    start = MultimodalVAE(train.load_datasets({**train.DEFAULTS, **TINY})[0].specs, 4, "wb")
    trained = [MultimodalVAE.from_run(d).state_dict() for d in (one, two)]
    assert max((trained[0][k] - v).abs().max() for k, v in start.state_dict().items()) > LR
    for key, value in trained[0].items():
        torch.testing.assert_close(trained[1][key], value, rtol=0, atol=1e-5)
    losses = [json.loads((d / "metrics.json").read_text())["step_losses"] for d in (one, two)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_the_global_batch_must_split_evenly(tmp_path, capsys):
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        args = train.build_parser().parse_args(
            ["--dataset", "synthetic", "--aggregation", "wb", "--run-dir", str(tmp_path / "r")]
        )
        train.run(args, Processes(0, 3))
    assert not (tmp_path / "r").exists()
