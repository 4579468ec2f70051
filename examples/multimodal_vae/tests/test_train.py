"""The command line: run folders, exact resumption, refusals with exit code 2."""

import json

import pytest
import torch
from data import ModalitySpec
from threadpoolctl import threadpool_info, threadpool_limits
from train import default_config, main, weighted_specs

STEPS_PER_EPOCH = 4  # synthetic: 512 training points, batches of 128

TINY = {
    "dataset": "synthetic",
    "latent_dim": 4,
    "batch_size": 128,
    "epochs": 2,
    "eval": {
        "num_importance_samples": 2,
        "max_eval_samples": 32,
        "max_log_likelihood_samples": 8,
        "classifier_epochs": 1,
    },
}
RUN_FILES = {
    "config.json",
    "checkpoint.pt",
    "classifiers.pt",
    "metrics.json",
    "metrics.csv",
    "reconstructions.png",
    "conditional_generations.png",
    "metrics.png",
}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def run(config, run_dir, *flags):
    return main(["--config", str(config), "--run-dir", str(run_dir), *flags])


def step_losses(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["step_losses"]


def assert_refused(capsys, code, *fragments):
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train.py: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_run_folder_contents_and_metrics_table(config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(config, run_dir, "--aggregation", "mopoe", "--max-steps", "5") == 0
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    out = capsys.readouterr().out
    for metric in ("linear_probe", "coherence", "log_likelihood"):
        assert metric in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["step_losses"]) == 5
    assert [r["epoch"] for r in metrics["history"]] == [1]
    assert set(metrics["eval"]) == {
        "linear_probe",
        "coherence",
        "log_likelihood",
        "coherence_by_direction",
    }
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["aggregation"] == "mopoe" and saved["latent_dim"] == 4
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert header == "section,epoch,metric,num_inputs,value"


def test_flags_override_the_config_file(config, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        run(config, run_dir, "--aggregation", "poe", "--latent-dim", "3", "--max-steps", "1") == 0
    )
    assert json.loads((run_dir / "config.json").read_text())["latent_dim"] == 3


def test_resume_continues_exactly(config, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    steps = 2 * STEPS_PER_EPOCH - 1
    assert run(config, straight, "--aggregation", "mwb", "--max-steps", str(steps)) == 0
    assert run(config, resumed, "--aggregation", "mwb", "--max-steps", "3") == 0  # mid-epoch
    assert run(config, resumed, "--aggregation", "mwb", "--max-steps", "5", "--resume") == 0
    assert main(["--run-dir", str(resumed), "--max-steps", str(steps), "--resume"]) == 0
    assert step_losses(resumed) == step_losses(straight)
    checkpoints = [torch.load(d / "checkpoint.pt", weights_only=True) for d in (straight, resumed)]
    for key, value in checkpoints[0]["model"].items():
        torch.testing.assert_close(checkpoints[1]["model"][key], value, rtol=0, atol=0)


def test_refuses_to_overwrite_without_overwrite(config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(config, run_dir, "--aggregation", "wb", "--max-steps", "1") == 0
    before = (run_dir / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert_refused(capsys, run(config, run_dir, "--aggregation", "wb"), "--overwrite", "--resume")
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert run(config, run_dir, "--aggregation", "moe", "--max-steps", "1", "--overwrite") == 0
    assert json.loads((run_dir / "config.json").read_text())["aggregation"] == "moe"


def test_overwrite_refuses_a_folder_that_is_not_a_run(config, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    code = run(config, precious, "--aggregation", "wb", "--overwrite")
    assert_refused(capsys, code, "not a run folder")
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_resume_refuses_another_configuration(config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(config, run_dir, "--aggregation", "wb", "--max-steps", "1") == 0
    capsys.readouterr()
    code = run(config, run_dir, "--aggregation", "wb", "--latent-dim", "8", "--resume")
    assert_refused(capsys, code, "another configuration", "latent_dim")


def test_resume_refuses_a_corrupt_checkpoint(config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(config, run_dir, "--aggregation", "wb", "--max-steps", "1") == 0
    (run_dir / "checkpoint.pt").write_bytes(b"\x00garbage")
    capsys.readouterr()
    assert_refused(capsys, run(config, run_dir, "--resume"), "cannot read checkpoint")


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--dataset", "imagenet", "--aggregation", "wb"], ["dataset must be", "'imagenet'"]),
        (["--dataset", "synthetic", "--aggregation", "sum"], ["aggregation must be", "mwb"]),
        (["--dataset", "synthetic"], ["aggregation must be", "got None"]),
        (["--dataset", "synthetic", "--aggregation", "wb", "--lr", "-1"], ["lr must be"]),
        (["--dataset", "synthetic", "--aggregation", "wb", "--epochs", "x"], ["--epochs"]),
        (["--dataset", "synthetic", "--aggregation", "wb", "--resume"], ["no checkpoint.pt"]),
        (["--config", "/nonexistent/c.json", "--aggregation", "wb"], ["does not exist"]),
        (["--aggregation", "wb", "--unknown-flag"], ["unrecognized arguments"]),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, flags, fragments):
    run_dir = tmp_path / "run"
    assert_refused(capsys, main([*flags, "--run-dir", str(run_dir)]), *fragments)
    assert not run_dir.exists()


def test_missing_data_directory(tmp_path, capsys):
    flags = ["--dataset", "polymnist", "--aggregation", "wb", "--data-root", str(tmp_path / "no")]
    assert_refused(capsys, main([*flags, "--run-dir", str(tmp_path / "run")]))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"latent_dims": 3}', "unknown keys"),
        ("[1]", "object"),
        ('{"dataset": "synthetic", "latent_dim": "32"}', "latent_dim must be an integer"),
        (
            '{"dataset": "synthetic", "eval": {"num_importance_samples": 0}}',
            "eval.num_importance_samples must be positive",
        ),
        (
            '{"dataset": "synthetic", "eval": {"max_test_loss_samples": 0}}',
            "eval.max_test_loss_samples must be positive",
        ),
        ('{"eval": {"k": 1}}', "unknown eval keys"),
        (
            '{"dataset": "synthetic", "mixture_estimator": "mean"}',
            "mixture_estimator must be one of split, sample, all; got 'mean'",
        ),
        ('{"reconstruct_all_components": 1}', "reconstruct_all_components must be true or false"),
        (
            '{"reconstruct_all_components": true, "mixture_estimator": "all"}',
            "give mixture_estimator alone",
        ),
    ],
)
def test_bad_config_file(tmp_path, capsys, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code = main(["--config", str(path), "--aggregation", "wb", "--run-dir", str(tmp_path / "r")])
    assert_refused(capsys, code, fragment)


@pytest.mark.parametrize(
    ("old", "estimator"),
    [
        ({}, "split"),
        ({"reconstruct_all_components": True}, "all"),
        ({"reconstruct_all_components": False}, "sample"),
    ],
)
def test_the_old_key_maps_to_the_estimator_it_chose(old, estimator):
    config = default_config(dataset="synthetic", aggregation="mopoe", **old)
    assert config["mixture_estimator"] == estimator
    assert "reconstruct_all_components" not in config


def test_train_classifiers_only(config, tmp_path, capsys):
    run_dir = tmp_path / "classifiers"
    assert main(["--config", str(config), "--run-dir", str(run_dir), "--train-classifiers"]) == 0
    assert {p.name for p in run_dir.iterdir()} == {"classifiers.pt"}
    capsys.readouterr()
    code = main(["--config", str(config), "--run-dir", str(run_dir), "--train-classifiers"])
    assert_refused(capsys, code, "already exists")


def test_shared_classifiers_file_is_trained_once_and_reused(config, tmp_path):
    shared = tmp_path / "judge" / "classifiers.pt"
    shared.parent.mkdir()
    flags = ("--aggregation", "poe", "--max-steps", "1", "--classifiers", str(shared))
    assert run(config, tmp_path / "a", *flags) == 0
    written = shared.stat().st_mtime_ns
    assert run(config, tmp_path / "b", *flags) == 0
    assert shared.stat().st_mtime_ns == written
    assert not (tmp_path / "a" / "classifiers.pt").exists()
    accuracies = [
        json.loads((tmp_path / r / "metrics.json").read_text())["classifier_accuracy"] for r in "ab"
    ]
    assert accuracies[0] == accuracies[1]  # the same judge for both runs


@pytest.fixture
def restore_threads():
    threads, pools = torch.get_num_threads(), threadpool_info()
    yield
    torch.set_num_threads(threads)
    for pool in pools:
        threadpool_limits(limits=pool["num_threads"], user_api=pool["user_api"])


def blas_threads() -> set[int]:
    """Thread counts of the BLAS and OpenMP pools NumPy, SciPy and scikit-learn use."""
    return {pool["num_threads"] for pool in threadpool_info()}


def test_threads_flag_sets_torch_and_blas_pools(config, tmp_path, restore_threads):
    run_dir = tmp_path / "run"
    assert run(config, run_dir, "--aggregation", "wb", "--max-steps", "1", "--threads", "2") == 0
    assert torch.get_num_threads() == 2 and blas_threads() == {2}
    assert json.loads((run_dir / "config.json").read_text())["threads"] == 2
    assert run(config, run_dir, "--aggregation", "wb", "--max-steps", "1", "--overwrite") == 0
    # the default: steady on a shared machine, for the linear probe's BLAS too
    assert torch.get_num_threads() == 1 and blas_threads() == {1}


def test_negative_threads_refused(config, tmp_path, capsys, restore_threads):
    code = run(config, tmp_path / "run", "--aggregation", "wb", "--threads", "-1")
    assert_refused(capsys, code, "threads must be non-negative")


def test_the_epoch_test_loss_reads_at_most_max_test_loss_samples(monkeypatch) -> None:
    import train

    config = {**train.DEFAULTS, **TINY, "eval": {**train.DEFAULTS["eval"], **TINY["eval"]}}
    _, test_set = train.load_datasets(config)
    model = train.MultimodalVAE(test_set.specs, config["latent_dim"], "mwb")
    seen: list[int] = []
    elbo = train.elbo_loss

    def counting(model, xs, **kwargs):
        seen.append(len(xs[0]))
        return elbo(model, xs, **kwargs)

    monkeypatch.setattr(train, "elbo_loss", counting)
    config["eval"]["max_test_loss_samples"] = 5
    few = train.test_loss(model, test_set, config)
    assert sum(seen) == 5
    # the mean over the first five points, whatever follows them
    config["eval"]["max_test_loss_samples"] = 1000
    assert train.test_loss(model, torch.utils.data.Subset(test_set, range(5)), config) == few


def test_likelihood_weights_replace_the_dataset_s_for_the_named_modalities():
    specs = (
        ModalitySpec("a", "image", (1, 2, 2), "bernoulli", 3.0),
        ModalitySpec("b", "text", (4, 5), "categorical", 2.0),
    )
    weighted = weighted_specs(specs, {"b": 0.5})
    assert [spec.weight for spec in weighted] == [3.0, 0.5]
    assert weighted[1] == ModalitySpec("b", "text", (4, 5), "categorical", 0.5)
    assert weighted_specs(specs, {}) == specs
    with pytest.raises(ValueError, match=r"likelihood_weights names unknown modalities \['c'\]"):
        weighted_specs(specs, {"c": 1.0})
    with pytest.raises(ValueError, match="weight must be positive"):
        weighted_specs(specs, {"a": 0.0})


def test_config_likelihood_weights_of_an_unknown_modality_are_refused(tmp_path, capsys):
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({**TINY, "likelihood_weights": {"m9": 2.0}}))
    code = run(path, tmp_path / "run", "--aggregation", "mwb")
    assert_refused(capsys, code, "likelihood_weights", "m9")
    assert not (tmp_path / "run").exists()
