"""Train and evaluate a multimodal VAE; the command-line entry point of the example.

Run ``python examples/multimodal_vae/train.py --help``. A run folder holds ``config.json``,
``checkpoint.pt`` (the last state, written every epoch and at the stop), ``best.pt`` (with
``--keep-best``: the weights of the epoch with the lowest test loss), ``metrics.json`` and
``metrics.csv``, ``classifiers.pt`` (for coherence), the figures ``reconstructions.png``,
``conditional_generations.png`` and ``metrics.png``, and ``tensorboard/`` (the events of
``tensorboard --logdir``). ``evaluate.py RUN_DIR`` evaluates a run folder again.

Under ``torchrun --nproc_per_node=N`` the ``N`` processes train one model with
DistributedDataParallel (:mod:`distributed`); ``batch_size`` is the global batch, and
process 0 alone writes the run folder.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from data import DATASETS, ModalitySpec, MultimodalDataset
from distributed import GlobalBatchNoise, Processes, TrainingObjective
from evaluate import (
    CHECKPOINT_FILE,
    CLASSIFIER_BATCH_SIZE,
    CLASSIFIERS_FILE,
    CONFIG_FILE,
    QUICK_EVAL,
    QUICK_NOTE,
    RESULTS_FILE,
    classifier_training_set,
    evaluate_model,
    load_datasets,
    report,
    save_classifiers,
    train_classifiers,
    use_threads,
)
from model import AGGREGATIONS, MultimodalVAE
from objectives import ESTIMATORS, elbo_loss
from tensorboard_log import TensorBoardLog
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

BEST_FILE = "best.pt"

#: Every configuration key with its default; a config file may hold any subset of them.
DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "aggregation": None,
    "data_root": None,
    "dataset_options": {},
    "latent_dim": 32,
    "batch_size": 64,
    "epochs": 10,
    "lr": 1e-3,
    "beta": 1.0,
    "likelihoods": {},
    "likelihood_weights": {},
    "mixture_estimator": ESTIMATORS[0],
    "num_workers": 0,
    "seed": 0,
    "max_steps": None,
    "device": "cpu",
    "threads": 1,
    "keep_best": False,
    "quick": False,
    "world_size": 1,
    "eval": {
        "num_importance_samples": 100,
        "max_eval_samples": 1000,
        "max_log_likelihood_samples": 100,
        "max_test_loss_samples": 1000,
        "classifier_epochs": 5,
        "classifier_batch_size": CLASSIFIER_BATCH_SIZE,
        "max_classifier_samples": None,
    },
    "notes": "",
}
#: Keys that may differ between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "max_steps",
        "device",
        "threads",
        "num_workers",
        "data_root",
        "eval",
        "notes",
        "keep_best",
        "quick",
        "world_size",
    }
)
#: What ``--quick`` sets (dataset and aggregation only where nothing else names them).
QUICK_STEPS = 5
QUICK_DATASET, QUICK_AGGREGATION = "polymnist-mini", "mwb"


class UsageError(ValueError):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _default(key: str) -> str:
    """``(default X)`` for an option that overrides config key ``key``."""
    value = DEFAULTS[key]
    return "(default: none)" if value is None else f"(default {value})"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; every option but the modes overrides a config key."""
    parser = _Parser(
        prog="train.py",
        description="Train a multimodal VAE whose joint posterior is a barycenter, then "
        "evaluate it (latent linear probe, coherence, test log-likelihood). Settings come "
        "from the defaults shown, overridden by --config, then by the flags. Under "
        "'torchrun --nproc_per_node=N' the N processes train one model "
        "(DistributedDataParallel; --batch-size is the global batch).",
    )
    parser.add_argument(
        "--config", type=Path, help="JSON config file (examples/multimodal_vae/configs/)"
    )
    parser.add_argument(
        "--quick",
        action="store_const",
        const=True,
        help=f"a check in seconds, not a benchmark: {QUICK_STEPS} steps of {QUICK_AGGREGATION} "
        f"on {QUICK_DATASET} (unless --config or flags name others) and a reduced "
        "evaluation (" + ", ".join(f"{k} {v}" for k, v in QUICK_EVAL.items()) + ")",
    )
    parser.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} {_default('dataset')}")
    parser.add_argument(
        "--aggregation", help=f"one of {', '.join(AGGREGATIONS)} {_default('aggregation')}"
    )
    parser.add_argument("--epochs", type=int, help=f"passes over the data {_default('epochs')}")
    parser.add_argument(
        "--batch-size",
        type=int,
        dest="batch_size",
        help=f"global batch, shared by the processes under torchrun {_default('batch_size')}",
    )
    parser.add_argument("--lr", type=float, help=f"Adam's learning rate {_default('lr')}")
    parser.add_argument(
        "--latent-dim", type=int, dest="latent_dim", help=f"latent size {_default('latent_dim')}"
    )
    parser.add_argument("--beta", type=float, help=f"weight of the KL term {_default('beta')}")
    parser.add_argument(
        "--data-root",
        dest="data_root",
        help="data directory (default: <repo>/.data/<dataset>; the README says what it holds)",
    )
    parser.add_argument(
        "--device", help=f"cpu or cuda {_default('device')}; torchrun: one GPU per process"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        dest="max_steps",
        help="stop after N steps (default: none, every epoch)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads of torch's intra-op pool and of the BLAS under the linear probe "
        "(default 1; 0: every CPU this process may use): one thread keeps its speed when "
        "other processes share the cores",
    )
    parser.add_argument(
        "--seed", type=int, help=f"seed of the weights, data order and noise {_default('seed')}"
    )
    parser.add_argument(
        "--keep-best",
        action="store_const",
        const=True,
        dest="keep_best",
        help=f"also keep the weights of the epoch with the lowest test loss in {BEST_FILE} "
        "(default: only the last checkpoint)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="run folder (default runs/<dataset>-<aggregation>; quick: runs/quick-...)",
    )
    parser.add_argument(
        "--classifiers",
        type=Path,
        help="coherence classifiers: read from this file if it exists, else trained and "
        f"written to it (default: <run-dir>/{CLASSIFIERS_FILE}); lets runs share one judge",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue a run from its checkpoint, with --epochs or --max-steps raised to train "
        "further; says so and does nothing when its budget is already reached",
    )
    parser.add_argument(
        "--train-classifiers",
        action="store_true",
        help="only train the coherence classifiers into the run folder",
    )
    return parser


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path} is not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return content


def _renamed(config: dict[str, Any], source: str) -> dict[str, Any]:
    """``config`` with ``reconstruct_all_components``, the key that run folders and config
    files written before ``mixture_estimator`` hold, replaced by it.

    The old key chose between the estimators now named ``"all"`` (true) and ``"sample"``
    (false, its default), so it maps to those, not to the new default ``"split"``: an old
    run folder resumes with the estimator it was trained with.
    """
    if "reconstruct_all_components" not in config:
        return config
    config = dict(config)
    value = config.pop("reconstruct_all_components")
    if "mixture_estimator" in config:
        raise ValueError(
            f"{source}: reconstruct_all_components is the old name of mixture_estimator; "
            "give mixture_estimator alone"
        )
    if not isinstance(value, bool):
        raise ValueError(
            f"{source}: reconstruct_all_components must be true or false, got {value!r}"
        )
    config["mixture_estimator"] = "all" if value else "sample"
    return config


def _merge(config: dict[str, Any], update: dict[str, Any], source: str) -> dict[str, Any]:
    update = _renamed(update, source)
    unknown = sorted(set(update) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; known keys: {sorted(DEFAULTS)}")
    merged = {**config, **update}
    if "eval" in update:
        if not isinstance(update["eval"], dict):
            raise ValueError(f"{source}: eval must be an object, got {update['eval']!r}")
        unknown = sorted(set(update["eval"]) - set(DEFAULTS["eval"]))
        if unknown:
            raise ValueError(
                f"{source}: unknown eval keys {unknown}; known: {sorted(DEFAULTS['eval'])}"
            )
        merged["eval"] = {**config["eval"], **update["eval"]}
    return merged


def _quick(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` made a quick run: :data:`QUICK_STEPS` steps, :data:`QUICK_EVAL` sizes."""
    return {
        **config,
        "dataset": config["dataset"] or QUICK_DATASET,
        "aggregation": config["aggregation"] or QUICK_AGGREGATION,
        "max_steps": QUICK_STEPS,
        "eval": {**config["eval"], **QUICK_EVAL},
        "quick": True,
    }


def resolve_config(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """The run's configuration and folder.

    Defaults, then the run folder's ``config.json`` when resuming, then ``--config``, then
    :func:`_quick` for a quick run, then the flags, each overriding the one before.
    """
    config = copy.deepcopy(DEFAULTS)
    flags = {
        key: value for key, value in vars(args).items() if key in DEFAULTS and value is not None
    }
    if args.resume and args.run_dir is not None:
        if not (args.run_dir / CHECKPOINT_FILE).is_file():
            raise FileNotFoundError(f"no {CHECKPOINT_FILE} to resume in {args.run_dir}")
        config = _merge(config, _read_json(args.run_dir / CONFIG_FILE, "run config"), "run config")
    if args.config is not None:
        config = _merge(config, _read_json(args.config, "config file"), str(args.config))
    if flags.get("quick") or config["quick"] is True:
        config = _quick(config)
    config = _merge(config, flags, "command line")
    _validate(config, need_aggregation=not args.train_classifiers)
    prefix = "quick-" if config["quick"] else ""
    default = Path("runs") / f"{prefix}{config['dataset']}-{config['aggregation']}"
    return config, args.run_dir or default


#: Numeric keys: (key, integer, smallest allowed value, whether that value is excluded).
_NumberCheck = tuple[str, bool, int, bool]
_NUMBERS: tuple[_NumberCheck, ...] = (
    ("latent_dim", True, 0, True),
    ("batch_size", True, 0, True),
    ("epochs", True, 0, False),
    ("num_workers", True, 0, False),
    ("threads", True, 0, False),
    ("seed", True, 0, False),
    ("lr", False, 0, True),
    ("beta", False, 0, False),
)
_EVAL_NUMBERS: tuple[_NumberCheck, ...] = (
    ("num_importance_samples", True, 0, True),
    ("max_eval_samples", True, 0, True),
    ("max_log_likelihood_samples", True, 0, True),
    ("max_test_loss_samples", True, 0, True),
    ("classifier_epochs", True, 0, False),
    ("classifier_batch_size", True, 0, True),
)


def _check_numbers(
    config: dict[str, Any], checks: tuple[_NumberCheck, ...], prefix: str = ""
) -> None:
    for key, integer, minimum, exclusive in checks:
        value = config[key]
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(
                f"{prefix}{key} must be {'an integer' if integer else 'a number'}, got {value!r}"
            )
        if value < minimum or (exclusive and value == minimum):
            bound = "positive" if exclusive else "non-negative"
            raise ValueError(f"{prefix}{key} must be {bound}, got {value!r}")


def _validate(config: dict[str, Any], *, need_aggregation: bool, registered: bool = True) -> None:
    if registered and config["dataset"] not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {config['dataset']!r}")
    if not isinstance(config["dataset"], str):
        raise ValueError(f"dataset must be a name, got {config['dataset']!r}")
    if need_aggregation and config["aggregation"] not in AGGREGATIONS:
        raise ValueError(
            f"aggregation must be one of {', '.join(AGGREGATIONS)}; got {config['aggregation']!r}"
        )
    _check_numbers(config, _NUMBERS)
    _check_numbers(config["eval"], _EVAL_NUMBERS, prefix="eval.")
    if config["max_steps"] is not None:
        _check_numbers(config, (("max_steps", True, 0, False),))
    if config["eval"]["max_classifier_samples"] is not None:
        _check_numbers(config["eval"], (("max_classifier_samples", True, 0, True),), "eval.")
    for key in ("keep_best", "quick"):
        if not isinstance(config[key], bool):
            raise ValueError(f"{key} must be true or false, got {config[key]!r}")
    if config["mixture_estimator"] not in ESTIMATORS:
        raise ValueError(
            f"mixture_estimator must be one of {', '.join(ESTIMATORS)}; "
            f"got {config['mixture_estimator']!r}"
        )
    if not isinstance(config["dataset_options"], dict):
        raise ValueError(f"dataset_options must be an object, got {config['dataset_options']!r}")
    if config["device"] not in ("cpu", "cuda") or (
        config["device"] == "cuda" and not torch.cuda.is_available()
    ):
        raise ValueError(f"device must be cpu or an available cuda, got {config['device']!r}")


def check_run_dir(run_dir: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber: an existing run folder needs ``--overwrite`` or ``--resume``."""
    if resume:
        if not (run_dir / CHECKPOINT_FILE).is_file():
            raise FileNotFoundError(f"no {CHECKPOINT_FILE} to resume in {run_dir}")
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise ValueError(
                f"run folder {run_dir} already exists; pass --overwrite to replace it or "
                "--resume to continue it"
            )
        if not (run_dir / CONFIG_FILE).is_file():
            raise ValueError(f"refusing to overwrite {run_dir}: it is not a run folder")


@dataclass
class TrainState:
    """Where training stands; everything needed to continue it exactly."""

    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    step: int = 0
    step_losses: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)

    def budget_reached(self, config: dict[str, Any]) -> bool:
        """Whether ``config``'s ``epochs`` or ``max_steps`` is already trained."""
        max_steps = config["max_steps"]
        return self.epoch >= config["epochs"] or (max_steps is not None and self.step >= max_steps)

    def describe(self) -> str:
        """``"12 steps (epoch 2, batch 5)"``: where training stands, in words."""
        if self.batch_in_epoch:
            return f"{self.step} steps (epoch {self.epoch + 1}, batch {self.batch_in_epoch})"
        return f"{self.step} steps ({self.epoch} epochs)"


def _specs(model: MultimodalVAE) -> list[dict[str, Any]]:
    return [asdict(spec) for spec in model.specs]


def _save(content: dict[str, Any], path: Path) -> None:
    """``torch.save`` atomically: a crash never leaves a half-written file."""
    partial = path.with_suffix(".partial")
    torch.save(content, partial)
    os.replace(partial, path)


def save_checkpoint(
    path: Path,
    model: MultimodalVAE,
    optimiser: torch.optim.Optimizer,
    state: TrainState,
    config: dict[str, Any],
    noise: GlobalBatchNoise,
) -> None:
    """Write the checkpoint: model, optimiser, position, RNG state, config and modalities."""
    checkpoint = {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "state": asdict(state),
        "rng": _rng_state(noise),
        "config": config,
        "specs": _specs(model),
    }
    _save(checkpoint, path)


def _rng_state(noise: GlobalBatchNoise) -> dict[str, Any]:
    """The generator states that continue the run: torch's default ones, the noise's in
    their place when several processes draw it from their own generator."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    generator = noise.generator
    if generator is None:
        return {"torch": torch.get_rng_state(), "cuda": cuda}
    if generator.device.type == "cpu":
        return {"torch": generator.get_state(), "cuda": cuda}
    return {"torch": torch.get_rng_state(), "cuda": [generator.get_state()]}


def load_checkpoint(
    path: Path, model: MultimodalVAE, optimiser: torch.optim.Optimizer, config: dict[str, Any]
) -> tuple[TrainState, dict[str, Any]]:
    """Restore model, optimiser and RNG states from ``path``.

    Returns
    -------
    state : TrainState
    saved_config : dict
        The configuration the checkpoint was written with.

    Raises
    ------
    ValueError
        If the file is damaged or comes from a run with another configuration.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from error
    saved = _renamed(checkpoint["config"], f"checkpoint {path}")
    differing = sorted(
        key
        for key in DEFAULTS
        if key not in RESUMABLE_CHANGES and saved.get(key, DEFAULTS[key]) != config[key]
    )
    if differing:
        details = ", ".join(f"{key}: {saved.get(key)!r} vs {config[key]!r}" for key in differing)
        raise ValueError(f"checkpoint {path} comes from another configuration ({details})")
    model.load_state_dict(checkpoint["model"])
    optimiser.load_state_dict(checkpoint["optimiser"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    return TrainState(**checkpoint["state"]), saved


def _noise(processes: Processes, device: torch.device, seed: int, step: int) -> GlobalBatchNoise:
    """The reparameterisation noise of the ELBO (see :mod:`distributed`).

    One process draws from torch's default generator. Several draw from a generator that
    starts in the default generator's state, the same on every process (seeded alike,
    or restored from one checkpoint); the default generator is then seeded apart on each
    process, for the draws that are not the global batch's (the ``"sample"`` estimator's
    choice of component per row).
    """
    if not processes.distributed:
        return GlobalBatchNoise()
    generator = torch.Generator(device=device)
    if device.type == "cuda":
        generator.set_state(torch.cuda.get_rng_state(device))
    else:
        generator.set_state(torch.get_rng_state())
    process_seed = np.random.SeedSequence([seed, step, processes.rank]).generate_state(1)[0]
    torch.manual_seed(int(process_seed))
    return GlobalBatchNoise(processes.rank, processes.world_size, generator)


def _epoch_seed(config: dict[str, Any], epoch: int) -> int:
    return int(np.random.SeedSequence([config["seed"], epoch]).generate_state(1)[0])


def _epoch_loader(
    dataset: MultimodalDataset, config: dict[str, Any], epoch: int, processes: Processes
) -> DataLoader:
    """This process's share of the epoch's global batches.

    The order depends only on the seed and the epoch (resumable), and the global batches
    on nothing else: a :class:`~torch.utils.data.DistributedSampler` deals every
    permutation round robin, so the ``N`` processes' batches of ``batch_size / N`` points
    make up the one process's batch of ``batch_size`` (the epoch's last batch padded with
    repeated points up to a multiple of ``N``).
    """
    seed = _epoch_seed(config, epoch)
    sampler = DistributedSampler(
        dataset, num_replicas=processes.world_size, rank=processes.rank, shuffle=True, seed=seed
    )
    return DataLoader(
        dataset,
        batch_size=config["batch_size"] // processes.world_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),  # the workers' seeds; not torch's RNG
        num_workers=config["num_workers"],
    )


@torch.no_grad()
def test_loss(model: MultimodalVAE, dataset: MultimodalDataset, config: dict[str, Any]) -> float:
    """Mean negative ELBO on at most ``eval.max_test_loss_samples`` points (the per-epoch
    test loss), leaving the RNG as is."""
    device = next(model.parameters()).device
    subset = Subset(dataset, range(min(len(dataset), config["eval"]["max_test_loss_samples"])))
    model.eval()
    total = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config["seed"])
        for xs, _ in DataLoader(subset, batch_size=config["batch_size"]):
            loss, _ = elbo_loss(
                model,
                [x.to(device) for x in xs],
                beta=config["beta"],
                estimator=config["mixture_estimator"],
            )
            total += loss.item() * len(xs[0])
    return total / len(subset)


@dataclass
class Trainer:
    """What a training loop needs besides its state: the model and how it steps."""

    model: MultimodalVAE
    optimiser: torch.optim.Optimizer
    noise: GlobalBatchNoise
    processes: Processes
    config: dict[str, Any]
    run_dir: Path
    log: TensorBoardLog | None  # process 0 only

    def objective(self) -> torch.nn.Module:
        """The loss module to call: DistributedDataParallel's wrapper with several processes."""
        objective = TrainingObjective(
            self.model,
            self.noise,
            beta=self.config["beta"],
            estimator=self.config["mixture_estimator"],
        )
        if not self.processes.distributed:
            return objective
        from torch.nn.parallel import DistributedDataParallel  # seconds to import

        device = next(self.model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=ids)

    def checkpoint(self, state: TrainState) -> None:
        if self.processes.is_main:
            save_checkpoint(
                self.run_dir / CHECKPOINT_FILE,
                self.model,
                self.optimiser,
                state,
                self.config,
                self.noise,
            )

    def keep_if_best(self, state: TrainState) -> None:
        """Write :data:`BEST_FILE` when the last epoch's test loss is the lowest so far."""
        losses = [record["test_loss"] for record in state.history]
        if self.config["keep_best"] and losses[-1] <= min(losses):
            best = {
                "model": self.model.state_dict(),
                "state": asdict(state),
                "config": self.config,
                "specs": _specs(self.model),
            }
            _save(best, self.run_dir / BEST_FILE)


def train(
    trainer: Trainer,
    state: TrainState,
    train_set: MultimodalDataset,
    test_set: MultimodalDataset,
) -> None:
    """Train until ``epochs`` or ``max_steps``, checkpointing every epoch and at the stop.

    Every process steps; process 0 records the global batch's loss (the mean over the
    processes), the test loss, the checkpoints and the TensorBoard events.
    """
    config, processes, log = trainer.config, trainer.processes, trainer.log
    device = next(trainer.model.parameters()).device
    objective = trainer.objective()
    max_steps = config["max_steps"]
    while not state.budget_reached(config):
        loader = _epoch_loader(train_set, config, state.epoch, processes)
        batches = itertools.islice(loader, state.batch_in_epoch, None)
        progress = tqdm(
            batches,
            total=len(loader) - state.batch_in_epoch,
            desc=f"epoch {state.epoch + 1}/{config['epochs']}",
            leave=False,
            disable=not processes.is_main,
        )
        trainer.model.train()
        for xs, _ in progress:
            loss, terms = objective([x.to(device) for x in xs])
            means = processes.mean(torch.stack(list(terms.values()))).tolist()
            values = dict(zip(terms, means, strict=True))
            if not np.isfinite(values["loss"]):
                raise ValueError(
                    f"training diverged (loss {values['loss']}) at step {state.step}; "
                    "try a smaller --lr"
                )
            trainer.optimiser.zero_grad()
            loss.backward()
            trainer.optimiser.step()
            state.step += 1
            state.batch_in_epoch += 1
            state.step_losses.append(values["loss"])
            progress.set_postfix(loss=f"{values['loss']:.2f}", kl=f"{values['kl']:.2f}")
            if log is not None:
                log.scalars("train", values, state.step)
            if max_steps is not None and state.step >= max_steps:
                break
        if state.batch_in_epoch == len(loader):
            if processes.is_main:
                epoch_losses = state.step_losses[state.step - state.batch_in_epoch :]
                record = {
                    "epoch": state.epoch + 1,
                    "step": state.step,
                    "train_loss": float(np.mean(epoch_losses)),
                    "test_loss": test_loss(trainer.model, test_set, config),
                }
                state.history.append(record)
                tqdm.write(
                    "epoch {epoch}: train loss {train_loss:.3f}, test loss {test_loss:.3f}".format(
                        **record
                    )
                )
                if log is not None:
                    losses = {key: record[key] for key in ("train_loss", "test_loss")}
                    log.scalars("epoch", losses, state.step)
                trainer.keep_if_best(state)
            state.epoch += 1
            state.batch_in_epoch = 0
        trainer.checkpoint(state)


def _budget(config: dict[str, Any]) -> str:
    steps = config["max_steps"]
    return f"epochs {config['epochs']}" + ("" if steps is None else f", max_steps {steps}")


def _evaluated_at(run_dir: Path) -> int | None:
    """The step whose evaluation ``metrics.json`` holds, if any."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    return results.get("step", len(results.get("step_losses", [])))


def _changes(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every key a resumed run changes."""
    return [
        f"{key}: {saved.get(key, DEFAULTS[key])!r} -> {config[key]!r}"
        for key in DEFAULTS
        if saved.get(key, DEFAULTS[key]) != config[key]
    ]


def weighted_specs(
    specs: Sequence[ModalitySpec], weights: dict[str, float] | None
) -> tuple[ModalitySpec, ...]:
    """``specs`` with the likelihood weights of ``weights`` (modality name → weight).

    A config's ``likelihood_weights`` replaces the dataset's (MoPoE's ``rec_weights``) for the
    modalities it names; the training loss multiplies each modality's log-likelihood by it.

    Raises
    ------
    ValueError
        When ``weights`` names an unknown modality or gives a weight that is not positive.
    """
    weights = dict(weights or {})
    names = [spec.name for spec in specs]
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"likelihood_weights names unknown modalities {unknown}; known: {names}")
    return tuple(replace(spec, weight=float(weights.get(spec.name, spec.weight))) for spec in specs)


def _run_classifiers_only(config: dict[str, Any], path: Path, overwrite: bool) -> int:
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; pass --overwrite to retrain the classifiers")
    train_set, _ = load_datasets(config)
    classifiers = train_classifiers(
        classifier_training_set(train_set, config["eval"], config["seed"]),
        epochs=config["eval"]["classifier_epochs"],
        batch_size=config["eval"]["classifier_batch_size"],
        seed=config["seed"],
        device=config["device"],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_classifiers(classifiers, train_set, path)
    print(f"classifiers for {config['dataset']} saved to {path}")
    return 0


def default_config(**keys: Any) -> dict[str, Any]:
    """A complete, checked configuration: :data:`DEFAULTS` updated with ``keys`` (and
    ``eval`` key by key), as a config file would be. ``dataset`` may name data of your own,
    which :func:`fit` takes as given."""
    config = _merge(copy.deepcopy(DEFAULTS), keys, "default_config")
    _validate(config, need_aggregation=True, registered=False)
    return config


def fit(
    config: dict[str, Any],
    run_dir: Path,
    datasets: tuple[MultimodalDataset, MultimodalDataset],
    *,
    overwrite: bool = False,
    resume: bool = False,
    classifiers_path: Path | None = None,
    processes: Processes | None = None,
) -> MultimodalVAE | None:
    """Train a model on ``datasets``, evaluate it and write the run folder ``run_dir``.

    What ``train.py`` does once its configuration is resolved and its data loaded; call it
    with datasets of your own (any :class:`~data.MultimodalDataset`). Prints the table.

    Parameters
    ----------
    config : dict
        A complete configuration (:func:`default_config`).
    run_dir : Path
    datasets : (MultimodalDataset, MultimodalDataset)
        The train and test splits.
    overwrite, resume : bool
        Replace an existing run folder, or continue it from its checkpoint.
    classifiers_path : Path, optional
        The coherence classifiers (default ``run_dir / classifiers.pt``).
    processes : Processes, optional
        This process among those ``torchrun`` started; ``None``: the only one.

    Returns
    -------
    MultimodalVAE or None
        The trained model on process 0; ``None`` on the others, and when a resumed run has
        nothing to train.
    """
    start = time.perf_counter()
    processes = processes or Processes()
    check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    train_set, test_set = datasets
    device = processes.device(config["device"])
    torch.manual_seed(config["seed"])
    model = MultimodalVAE(
        weighted_specs(train_set.specs, config["likelihood_weights"]),
        config["latent_dim"],
        config["aggregation"],
        config["likelihoods"],
    ).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config["lr"])
    if resume:
        state, saved = load_checkpoint(run_dir / CHECKPOINT_FILE, model, optimiser, config)
        if state.budget_reached(config) and _evaluated_at(run_dir) == state.step:
            if processes.is_main:
                print(
                    f"{run_dir} has trained {state.describe()}: its budget ({_budget(config)}) "
                    "is reached, so there is nothing to train and config.json is unchanged. "
                    "Raise --epochs or --max-steps to train further; evaluate it again with "
                    f"python examples/multimodal_vae/evaluate.py {run_dir}"
                )
            return None
        changes = _changes(saved, config)
        if processes.is_main:
            if state.budget_reached(config):
                print(f"{run_dir} has trained {state.describe()}; evaluating it")
            else:
                print(f"resuming {run_dir} at {state.describe()}; training to {_budget(config)}")
            if changes:
                print(f"config.json updated: {'; '.join(changes)}")
    else:
        state = TrainState()
        if processes.is_main:
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
    if processes.is_main:
        (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    noise = _noise(processes, device, config["seed"], state.step)
    log = TensorBoardLog(run_dir, purge_step=state.step or None) if processes.is_main else None
    try:
        trainer = Trainer(model, optimiser, noise, processes, config, run_dir, log)
        train(trainer, state, train_set, test_set)
        if not processes.is_main:
            return None
        training = {"step": state.step, "step_losses": state.step_losses}
        training["history"] = state.history
        table, accuracy = evaluate_model(
            model,
            config,
            run_dir,
            datasets,
            training=training,
            classifiers_path=classifiers_path,
            log=log,
        )
    finally:
        if log is not None:
            log.close()
    results = json.loads((run_dir / RESULTS_FILE).read_text())
    results["wall_time_s"] = time.perf_counter() - start
    (run_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    print(report(config, run_dir, state.step, table, accuracy))
    return model.eval()


def run(args: argparse.Namespace, processes: Processes) -> int:
    """Resolve the configuration, load the data and :func:`fit`; see :func:`main`."""
    config, run_dir = resolve_config(args)
    classifiers_path = args.classifiers or run_dir / CLASSIFIERS_FILE
    if args.train_classifiers:
        return _run_classifiers_only(config, classifiers_path, args.overwrite)
    check_run_dir(run_dir, overwrite=args.overwrite, resume=args.resume)  # before the data
    if config["batch_size"] % processes.world_size:
        raise ValueError(
            f"batch_size {config['batch_size']} is the global batch: it must be a multiple of "
            f"the {processes.world_size} processes"
        )
    config["world_size"] = processes.world_size
    if config["quick"] and processes.is_main:
        print(QUICK_NOTE)
    use_threads(config["threads"])
    processes.start(processes.device(config["device"]))
    # process 0 first: it writes the caches of generated datasets, which the others read
    if not processes.is_main:
        processes.barrier()
    datasets = load_datasets(config)
    if processes.is_main:
        processes.barrier()
    fit(
        config,
        run_dir,
        datasets,
        overwrite=args.overwrite,
        resume=args.resume,
        classifiers_path=classifiers_path,
        processes=processes,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv``; 0 on success, 2 with a one-line message on bad input."""
    processes = Processes.from_environment()
    try:
        return run(build_parser().parse_args(argv), processes)
    except (ValueError, FileNotFoundError) as error:
        message = " ".join(str(error).split())  # one line, whatever the source
        where = f" (process {processes.rank})" if processes.distributed else ""
        print(f"train.py{where}: error: {message}", file=sys.stderr)
        return 2
    finally:
        processes.stop()


if __name__ == "__main__":
    sys.exit(main())
