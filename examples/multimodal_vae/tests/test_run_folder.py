"""A run folder after training: evaluated again, reloaded, logged, resumed, kept at its best."""

import json
import sys

import evaluate
import pytest
import torch
import train
from model import MultimodalVAE
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import default_collate

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
STEPS_PER_EPOCH = 4  # synthetic: 512 training points, batches of 128


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def run(config, run_dir, *flags):
    return train.main(["--config", str(config), "--run-dir", str(run_dir), *flags])


def results(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def trained(config, tmp_path):
    """A two-epoch mwb run folder."""
    run_dir = tmp_path / "run"
    assert run(config, run_dir, "--aggregation", "mwb") == 0
    return run_dir


# --- evaluate.py ----------------------------------------------------------------------------


def test_evaluate_help_documents_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("RUN_DIR", "--num-importance-samples", "--max-eval-samples", "--checkpoint"):
        assert flag in out


def test_evaluating_a_run_again_reproduces_its_table(trained, capsys):
    before = results(trained)
    capsys.readouterr()
    assert evaluate.main([str(trained)]) == 0
    after = results(trained)
    for metric, row in before["eval"].items():  # same sizes, same seed, same judge
        assert after["eval"][metric] == pytest.approx(row, rel=1e-12)
    assert after["classifier_accuracy"] == before["classifier_accuracy"]
    assert after["step_losses"] == before["step_losses"] and after["step"] == 2 * STEPS_PER_EPOCH
    assert "linear_probe" in capsys.readouterr().out


def test_evaluation_sizes_are_flags_and_config_json_stays(trained):
    config_before = (trained / "config.json").read_bytes()
    flags = ["--max-eval-samples", "16", "--num-importance-samples", "3"]
    assert evaluate.main([str(trained), *flags]) == 0
    settings = results(trained)["eval_settings"]
    assert settings["max_eval_samples"] == 16 and settings["num_importance_samples"] == 3
    assert settings["max_log_likelihood_samples"] == TINY["eval"]["max_log_likelihood_samples"]
    assert (trained / "config.json").read_bytes() == config_before


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: d.mkdir(), "not a run folder"),
        (lambda d: None, "not a run folder"),
        (lambda d: (d.mkdir(), (d / "config.json").write_text("{}")), "no checkpoint.pt"),
    ],
)
def test_evaluate_refuses_a_folder_that_is_not_a_run(tmp_path, capsys, make, fragment):
    folder = tmp_path / "notes"
    make(folder)
    assert evaluate.main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("evaluate.py: error: ") and fragment in err


def test_evaluate_refuses_bad_sizes(trained, capsys):
    assert evaluate.main([str(trained), "--max-eval-samples", "0"]) == 2
    assert "positive" in capsys.readouterr().err


# --- MultimodalVAE.from_run -----------------------------------------------------------------


def test_from_run_returns_the_trained_model_in_eval_mode(trained):
    model = MultimodalVAE.from_run(trained)
    assert not model.training and model.aggregation == "mwb" and model.latent_dim == 4
    saved = torch.load(trained / "checkpoint.pt", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    # the documented use: encode, aggregate with a modality missing, decode, generate
    _, test_set = evaluate.load_datasets(json.loads((trained / "config.json").read_text()))
    xs, _ = default_collate([test_set[i] for i in range(6)])
    mask = torch.tensor([[True, False]] * 6)
    posterior = model.aggregate(model.experts(xs), mask)
    torch.testing.assert_close(posterior.mean, model.encode(xs, mask).mean)
    assert [p.mean.shape for p in model.decode(posterior.mean)] == [(6, 1, 8, 8)] * 2
    assert [x.shape for x in model.generate(3)] == [(3, 1, 8, 8)] * 2


def test_from_run_reads_checkpoints_without_modalities(trained):
    checkpoint = torch.load(trained / "checkpoint.pt", weights_only=True)
    del checkpoint["specs"]  # as written before from_run existed
    torch.save(checkpoint, trained / "checkpoint.pt")
    model = MultimodalVAE.from_run(trained)
    assert [spec.name for spec in model.specs] == ["m0", "m1"]


def test_from_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        MultimodalVAE.from_run(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        MultimodalVAE.from_run(tmp_path)


# --- checkpoints ----------------------------------------------------------------------------


def test_keep_best_keeps_the_weights_of_the_lowest_test_loss(config, tmp_path):
    run_dir = tmp_path / "run"
    assert run(config, run_dir, "--aggregation", "wb", "--epochs", "3", "--keep-best") == 0
    history = results(run_dir)["history"]
    best_epoch = min(history, key=lambda record: record["test_loss"])["epoch"]
    # a run stopped at that epoch has the same weights
    stopped = tmp_path / "stopped"
    assert run(config, stopped, "--aggregation", "wb", "--epochs", str(best_epoch)) == 0
    best = MultimodalVAE.from_run(run_dir, checkpoint="best.pt").state_dict()
    for key, value in MultimodalVAE.from_run(stopped).state_dict().items():
        torch.testing.assert_close(best[key], value, rtol=0, atol=0)
    assert not (stopped / "best.pt").exists()  # only with --keep-best


# --- TensorBoard ----------------------------------------------------------------------------


def test_tensorboard_logs_losses_metrics_and_figures(trained):
    events = EventAccumulator(str(trained / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    metrics = results(trained)
    losses = [event.value for event in events.Scalars("train/loss")]
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, 9))
    assert losses == pytest.approx(metrics["step_losses"], rel=1e-6)
    assert losses[-1] < losses[0]  # it learns
    test_losses = [event.value for event in events.Scalars("epoch/test_loss")]
    assert test_losses == pytest.approx([r["test_loss"] for r in metrics["history"]], rel=1e-6)
    for k, value in metrics["eval"]["coherence"].items():
        (event,) = events.Scalars(f"eval/coherence/{k}")
        assert event.step == 8 and event.value == pytest.approx(value, rel=1e-6)
    assert {f"figures/{name}" for name in ("reconstructions", "metrics")} <= set(
        events.Tags()["images"]
    )
    assert {"train/kl", "train/rec_m0", "eval/classifier_accuracy/m1"} <= set(
        events.Tags()["scalars"]
    )


def test_without_tensorboard_the_run_works_and_says_so_once(config, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    run_dir = tmp_path / "run"
    assert run(config, run_dir, "--aggregation", "poe", "--max-steps", "3") == 0
    assert capsys.readouterr().err.count("tensorboard is not installed") == 1
    assert not (run_dir / "tensorboard").exists() and (run_dir / "metrics.json").is_file()


# --- --resume says what it does -------------------------------------------------------------


def test_resume_with_the_budget_reached_trains_nothing_and_rewrites_nothing(trained, capsys):
    before = {name: (trained / name).read_bytes() for name in ("config.json", "metrics.json")}
    capsys.readouterr()
    assert train.main(["--run-dir", str(trained), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and "evaluate.py" in out and "8 steps" in out
    assert {name: (trained / name).read_bytes() for name in before} == before


def test_resume_never_rewrites_the_budget_silently(config, tmp_path, capsys):
    run_dir = tmp_path / "run"  # the sequence: 6 steps, --epochs 1, --max-steps 8
    assert run(config, run_dir, "--aggregation", "wb", "--max-steps", "6") == 0
    capsys.readouterr()
    assert train.main(["--run-dir", str(run_dir), "--resume", "--epochs", "1"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2
    assert train.main(["--run-dir", str(run_dir), "--resume", "--max-steps", "8"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "max_steps: 6 -> 8" in out and "wb on synthetic, 8 steps" in out
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["epochs"], saved["max_steps"]) == (2, 8)
    assert len(results(run_dir)["step_losses"]) == 8


def test_an_old_run_folder_evaluates_and_resumes_with_the_estimator_it_trained_with(tmp_path):
    """A run folder written before ``mixture_estimator`` holds ``reconstruct_all_components``
    (false: one component per point drawn from π, now ``"sample"``): it evaluates, reloads
    and resumes as it was trained, its losses those of a straight ``"sample"`` run."""
    config = tmp_path / "sample.json"
    config.write_text(json.dumps({**TINY, "mixture_estimator": "sample"}))
    straight, old = tmp_path / "straight", tmp_path / "old"
    assert run(config, straight, "--aggregation", "mopoe", "--max-steps", "2") == 0
    assert run(config, old, "--aggregation", "mopoe", "--max-steps", "1") == 0
    saved = json.loads((old / "config.json").read_text())
    del saved["mixture_estimator"]
    saved["reconstruct_all_components"] = False  # as the old train.py wrote it
    (old / "config.json").write_text(json.dumps(saved))
    checkpoint = torch.load(old / "checkpoint.pt", weights_only=True)
    torch.save({**checkpoint, "config": saved}, old / "checkpoint.pt")
    assert evaluate.main([str(old)]) == 0
    assert MultimodalVAE.from_run(old).aggregation == "mopoe"
    assert train.main(["--run-dir", str(old), "--max-steps", "2", "--resume"]) == 0
    assert results(old)["step_losses"] == results(straight)["step_losses"]
    resumed = json.loads((old / "config.json").read_text())
    assert resumed["mixture_estimator"] == "sample" and "reconstruct_all_components" not in resumed


# --- --help and --quick ---------------------------------------------------------------------


def test_train_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("passes over the data (default 10)", "(default 0.001)", "(default 64)"):
        assert text in out
    for text in ("latent size (default 32)", "KL term (default 1.0)", "(default cpu)"):
        assert text in out
    assert "--quick" in out and "max_eval_samples 100" in out


def test_quick_preset_fills_in_the_built_in_polymnist():
    config, run_dir = train.resolve_config(train.build_parser().parse_args(["--quick"]))
    assert (config["dataset"], config["aggregation"]) == ("polymnist-mini", "mwb")
    assert config["max_steps"] == train.QUICK_STEPS and config["quick"] is True
    assert config["eval"] == {**train.DEFAULTS["eval"], **evaluate.QUICK_EVAL}
    assert run_dir.name == "quick-polymnist-mini-mwb"
    flags = ["--quick", "--aggregation", "wb", "--max-steps", "7"]
    config, _ = train.resolve_config(train.build_parser().parse_args(flags))
    assert (config["aggregation"], config["max_steps"]) == ("wb", 7)  # flags win


def test_quick_run_says_its_numbers_are_not_the_benchmarks(tmp_path, capsys):
    run_dir = tmp_path / "quick"
    flags = ["--quick", "--dataset", "synthetic", "--latent-dim", "4", "--run-dir", str(run_dir)]
    assert train.main(flags) == 0
    assert capsys.readouterr().out.count("not the benchmark's") == 2  # at the start and the end
    metrics = results(run_dir)
    assert len(metrics["step_losses"]) == train.QUICK_STEPS
    assert metrics["eval_settings"]["quick"] is True
    assert metrics["eval_settings"]["max_eval_samples"] == evaluate.QUICK_EVAL["max_eval_samples"]
