"""``benchmarks/vae_aggregations.py``: every run trained, judged alike, and summarised right."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "vae_aggregations.py"

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


@pytest.fixture(scope="module")
def bench():
    if str(SCRIPT.parent) not in sys.path:  # the script imports the benchmarks' `cases`
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("vae_aggregations", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = root / "out"
    flags = ["--config", str(config), "--seeds", "0", "1", "--max-steps", "2"]
    flags += ["--aggregation", "poe", "--aggregation", "mwb", "--output", str(out)]
    bench.main([*flags, "--runs", str(root / "runs"), "--jobs", "2"])
    return out, root / "runs"


def test_every_run_is_recorded_with_the_same_judge(results):
    out, runs = results
    records = json.loads((out / "vae_aggregations.json").read_text())["records"]
    assert {(r["aggregation"], r["seed"]) for r in records} == {
        (a, s) for a in ("poe", "mwb") for s in (0, 1)
    }
    assert all(r["steps"] == 2 for r in records)
    assert len({json.dumps(r["classifier_accuracy"]) for r in records}) == 1
    assert (runs / "classifiers.pt").is_file()
    assert not any((runs / f"{a}-seed0" / "classifiers.pt").exists() for a in ("poe", "mwb"))
    assert (out / "vae_aggregations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_is_mean_and_std_over_seeds(results):
    out, _ = results
    records = json.loads((out / "vae_aggregations.json").read_text())["records"]
    table = (out / "vae_aggregations.md").read_text()
    for aggregation in ("poe", "mwb"):
        values = [
            r["eval"]["linear_probe"]["1"] for r in records if r["aggregation"] == aggregation
        ]
        mean, std = np.mean(values), np.std(values, ddof=1)
        assert f"| {aggregation} | {mean:.3f} ± {std:.3f} |" in table
    assert "![vae_aggregations](vae_aggregations.png)" in table


def test_rejects_zero_jobs(bench):
    with pytest.raises(SystemExit):
        bench.main(["--jobs", "0"])


def test_a_failed_run_reports_the_end_of_its_log(bench, tmp_path, monkeypatch):
    def command(args, *extra):
        seed = extra[extra.index("--seed") + 1]
        script = f"print('line', 1); print('disk full in seed {seed}'); raise SystemExit(3)"
        return [sys.executable, "-c", script if seed == "1" else "pass"]

    monkeypatch.setattr(bench, "_train_command", command)
    args = bench._parse(["--seeds", "0", "1", "--aggregation", "mwb", "--runs", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"\('mwb', 1\) failed \(exit 3\)") as failure:
        bench._run_all(args, [("mwb", 0), ("mwb", 1)])
    assert str(failure.value).endswith("line 1\ndisk full in seed 1\n")
