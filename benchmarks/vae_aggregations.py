"""The five aggregations of the multimodal VAE side by side: the paper's Figure 3 on a CPU.

Usage::

    python benchmarks/vae_aggregations.py [--dataset NAME] [--seeds 0 1 2]
                                          [--aggregation NAME ...] [--jobs 2] [--config FILE]
                                          [--max-steps N] [--output DIR] [--runs DIR]

Trains ``poe``, ``moe``, ``mopoe``, ``wb`` and ``mwb`` with ``examples/multimodal_vae/train.py``
on a built-in set (``--dataset``: ``polymnist-mini``, the default, ``mnist-svhn-text-mini`` or
``celeba-mini``, each with its demo's configuration ``configs/<name>.json``, the same for
every aggregation), once per seed, and evaluates the three metrics by number of input
modalities, and the coherence of every direction. Every run is judged by the same
coherence classifiers, trained once first. Runs go ``--jobs`` at a time, each on one
thread (one run per core beats two threads per run, and keeps its speed when something
else shares the machine).

Writes to ``DIR`` (default ``benchmarks/results/cpu``), with ``STEM`` ``vae_aggregations``
for ``polymnist-mini`` and ``vae_aggregations_<dataset>`` for the others:

* ``STEM.json``: every run's table, wall time and the environment;
* ``STEM.md``: mean ± standard deviation over seeds, per aggregation and number of inputs
  (and per direction of coherence, for three modalities or fewer);
* ``STEM.png``: latent linear probe, coherence and log-likelihood against the number of
  inputs, one line per aggregation (error bars: ± one standard deviation).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cases.common import environment, markdown_table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "multimodal_vae"
AGGREGATIONS = ("poe", "moe", "mopoe", "wb", "mwb")
METRICS = ("linear_probe", "coherence", "log_likelihood")
#: Built-in set → how its probe and coherence are scored, and their chance level: 10
#: balanced classes, or for CelebA's attributes the mean of their frequencies (a random
#: score's expected average precision is the attribute's frequency).
DATASETS = {
    "polymnist-mini": ("accuracy", 0.1),
    "mnist-svhn-text-mini": ("accuracy", 0.1),
    "celeba-mini": ("mean average precision", 0.1879),
}
DEFAULT_DATASET = "polymnist-mini"
#: The markdown lists the coherence of every direction up to this many (three modalities).
MAX_DIRECTIONS = 12


def titles(dataset: str) -> dict[str, str]:
    """Metric → its title for ``dataset``."""
    score = DATASETS.get(dataset, DATASETS[DEFAULT_DATASET])[0]
    return {
        "linear_probe": f"latent linear probe ({score})",
        "coherence": f"cross-modal coherence ({score})",
        "log_likelihood": "test log-likelihood (nats)",
    }


def output_stem(dataset: str) -> str:
    """``vae_aggregations`` for the default set, ``vae_aggregations_<dataset>`` otherwise."""
    return "vae_aggregations" + ("" if dataset == DEFAULT_DATASET else f"_{dataset}")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=tuple(DATASETS), default=DEFAULT_DATASET)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--aggregation", action="append", choices=AGGREGATIONS, help="repeatable; default all"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--config", type=Path, help="default: the dataset's demo config")
    parser.add_argument("--max-steps", type=int, help="cap every run (a quick check)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "cpu")
    parser.add_argument("--runs", type=Path, help="default: runs/bench-vae[-<dataset>]")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.config is None:
        args.config = EXAMPLE / "configs" / f"{args.dataset.replace('-', '_')}.json"
    if args.runs is None:
        suffix = "" if args.dataset == DEFAULT_DATASET else f"-{args.dataset}"
        args.runs = ROOT / "runs" / f"bench-vae{suffix}"
    return args


def _train_command(args: argparse.Namespace, *extra: str) -> list[str]:
    command = [sys.executable, str(EXAMPLE / "train.py"), "--config", str(args.config)]
    command += ["--threads", "1", "--classifiers", str(args.runs / "classifiers.pt"), *extra]
    if args.max_steps is not None:
        command += ["--max-steps", str(args.max_steps)]
    return command


def _run_all(args: argparse.Namespace, jobs: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
    """Run every ``(aggregation, seed)``, ``args.jobs`` at a time; their wall times."""
    pending = list(jobs)
    running: dict[tuple[str, int], tuple[subprocess.Popen, float, Any]] = {}
    wall: dict[tuple[str, int], float] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            aggregation, seed = job = pending.pop(0)
            run_dir = args.runs / f"{aggregation}-seed{seed}"
            log = open(args.runs / f"{aggregation}-seed{seed}.log", "w")
            command = _train_command(
                args,
                *("--aggregation", aggregation, "--seed", str(seed)),
                *("--run-dir", str(run_dir), "--overwrite"),
            )
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            running[job] = (process, time.perf_counter(), log)
        time.sleep(1)
        for job, (process, start, log) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[job]
            if process.returncode != 0:
                for other, *_ in running.values():
                    other.kill()
                tail = "".join(Path(log.name).read_text(errors="replace").splitlines(True)[-20:])
                code = process.returncode
                raise SystemExit(f"{job} failed (exit {code}); {log.name} ends:\n{tail}")
            wall[job] = time.perf_counter() - start
            print(f"  {job[0]} seed {job[1]}: {wall[job]:.0f} s", flush=True)
    return wall


def _collect(
    args: argparse.Namespace, jobs: list[tuple[str, int]], wall: dict[tuple[str, int], float]
) -> list[dict[str, Any]]:
    records = []
    for aggregation, seed in jobs:
        metrics = json.loads((args.runs / f"{aggregation}-seed{seed}" / "metrics.json").read_text())
        records.append(
            {
                "aggregation": aggregation,
                "seed": seed,
                "steps": len(metrics["step_losses"]),
                "wall_time_s": wall[aggregation, seed],
                "eval": {
                    metric: {int(k): v for k, v in metrics["eval"][metric].items()}
                    for metric in METRICS
                },
                "coherence_by_direction": metrics["eval"].get("coherence_by_direction", {}),
                "classifier_accuracy": metrics["classifier_accuracy"],
            }
        )
    return records


def _statistics(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, tuple]]]:
    """aggregation → metric → number of inputs → (mean, std over seeds)."""
    stats: dict[str, dict[str, dict[int, tuple]]] = {}
    for aggregation in dict.fromkeys(r["aggregation"] for r in records):
        runs = [r for r in records if r["aggregation"] == aggregation]
        stats[aggregation] = {}
        for metric in METRICS:
            by_k = sorted(runs[0]["eval"][metric])
            values = {k: np.array([r["eval"][metric][k] for r in runs]) for k in by_k}
            stats[aggregation][metric] = {
                k: (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
                for k, v in values.items()
            }
    return stats


def _direction_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """One row per aggregation: mean ± std over seeds of every direction's coherence."""
    rows = []
    for aggregation in dict.fromkeys(r["aggregation"] for r in records):
        runs = [r for r in records if r["aggregation"] == aggregation]
        cells = []
        for direction in runs[0]["coherence_by_direction"]:
            v = np.array([r["coherence_by_direction"][direction] for r in runs])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}")
        rows.append([aggregation, *cells])
    return rows


def _markdown(
    stats: dict, records: list[dict[str, Any]], env: dict[str, Any], dataset: str, stem: str
) -> str:
    seeds = sorted({r["seed"] for r in records})
    ks = sorted({k for s in stats.values() for row in s.values() for k in row})
    score, chance = DATASETS.get(dataset, DATASETS[DEFAULT_DATASET])
    lines = [
        f"# The five aggregations on the built-in {dataset} (CPU)",
        "",
        f"Mean ± standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
        f"every run {records[0]['steps']} steps of the demo's configuration, judged by the "
        f"same coherence classifiers; chance is {chance} for the probe's and coherence's "
        f"{score}. Generated by `python benchmarks/vae_aggregations.py --dataset {dataset}` "
        f"on {env['date']} ({env['cpu']}, {env['jobs']} runs at a time, one thread each).",
    ]
    for metric, title in titles(dataset).items():
        header = ["aggregation", *[f"{k} input{'s' if k > 1 else ''}" for k in ks]]
        rows = []
        for aggregation, by_metric in stats.items():
            row = by_metric[metric]
            precision = 0 if metric == "log_likelihood" else 3
            rows.append(
                [aggregation]
                + [
                    f"{row[k][0]:.{precision}f} ± {row[k][1]:.{precision}f}" if k in row else "–"
                    for k in ks
                ]
            )
        lines += ["", f"## {title}", "", markdown_table(header, rows)]
    directions = list(records[0]["coherence_by_direction"])
    if 0 < len(directions) <= MAX_DIRECTIONS:
        table = markdown_table(["aggregation", *directions], _direction_rows(records))
        lines += ["", f"## coherence by direction ({score})", "", table]
    accuracy = np.mean([list(r["classifier_accuracy"].values()) for r in records], axis=0)
    names = list(records[0]["classifier_accuracy"])
    wall = [r["wall_time_s"] for r in records]
    lines += [
        "",
        f"Coherence classifiers' {score} on real test data (the ceiling of coherence): "
        + ", ".join(f"{n} {a:.3f}" for n, a in zip(names, accuracy, strict=True))
        + ".",
        "",
        f"Wall time per run: {min(wall):.0f}–{max(wall):.0f} s; the whole benchmark "
        f"{env['total_wall_time_s'] / 60:.1f} min.",
        "",
        f"![{stem}]({stem}.png)",
    ]
    return "\n".join(lines) + "\n"


def _figure(stats: dict, path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    chance = DATASETS.get(dataset, DATASETS[DEFAULT_DATASET])[1]
    for axis, (metric, title) in zip(axes, titles(dataset).items(), strict=True):
        for aggregation, by_metric in stats.items():
            ks = sorted(by_metric[metric])
            mean = [by_metric[metric][k][0] for k in ks]
            std = [by_metric[metric][k][1] for k in ks]
            axis.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=aggregation)
        if metric != "log_likelihood":
            axis.axhline(chance, color="grey", linestyle=":", label="chance")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("number of input modalities")
        axis.set_xticks(sorted({k for s in stats.values() for k in s[metric]}))
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    config = args.config.resolve()
    return {
        **environment(torch.device("cpu")),
        "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
        "jobs": args.jobs,
        "max_steps": args.max_steps,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Train every aggregation and seed, then write the table, the figure and the records."""
    args = _parse(argv)
    start = time.perf_counter()
    env = _environment(args)
    args.runs.mkdir(parents=True, exist_ok=True)
    args.output.mkdir(parents=True, exist_ok=True)
    print("training the coherence classifiers", flush=True)
    subprocess.run(
        _train_command(args, "--train-classifiers", "--overwrite", "--run-dir", str(args.runs)),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    jobs = [(a, s) for a in (args.aggregation or AGGREGATIONS) for s in args.seeds]
    wall = _run_all(args, jobs)
    records = _collect(args, jobs, wall)
    env["total_wall_time_s"] = time.perf_counter() - start
    stats = _statistics(records)
    payload = {"environment": {**env, "dataset": args.dataset}, "records": records}
    stem = output_stem(args.dataset)
    (args.output / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    markdown = _markdown(stats, records, env, args.dataset, stem)
    (args.output / f"{stem}.md").write_text(markdown)
    _figure(stats, args.output / f"{stem}.png", args.dataset)
    print(markdown)


if __name__ == "__main__":
    main()
