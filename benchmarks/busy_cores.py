"""Thread settings on an idle machine and when another process shares the cores.

Usage::

    python benchmarks/busy_cores.py [--quick] [--rounds R=3] [--single-passive]
                                    [--output DIR]

For each condition, ``idle`` (nothing started by the script) and ``busy`` (the script runs
one competing ``python -c "while True: pass"`` for the whole condition, and kills it at the
end), every thread setting is measured in a fresh Python process, because the OpenMP
runtime reads ``OMP_WAIT_POLICY`` when torch loads it. The settings run in rotating order
for ``R`` rounds, so drift in the machine's load hits each of them alike; the tables show
the median over rounds. Each process times four workloads: the full-covariance W2
barycenter on 256 problems (d = 16, M = 5) and on one problem (d = 2, M = 5), POT's fixed
point on the same 256 problems (a loop, numpy backend, to the same residual 1e-10 as
ours), and one training step of the multimodal VAE as the demo trains it.

Writes ``busy_cores.md`` and ``busy_cores.json`` to ``DIR`` (default
``benchmarks/results/cpu``).
``--quick`` (one round, smaller batches, few repeats) proves the script works and says
nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cases.common import environment, markdown_table, random_spd_problems, seconds
from cases.wasserstein_full import pot_loop

import barycentric.functional as F

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "multimodal_vae"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "cpu"
CONDITIONS = ("idle", "busy")
#: Variables of libgomp's waiting behaviour: a child gets only what its setting asks for.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SPINNER = "while True: pass"
#: The fixed-point residual both W2 solvers are asked for (as in case 1).
TOL = 1e-10
#: Seconds a child may run before it counts as hung.
CHILD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Setting:
    """Intra-op threads of torch and the OpenMP wait policy (``None``: unset)."""

    threads: int
    wait_policy: str | None = None

    @property
    def label(self) -> str:
        """``"threads 2, PASSIVE"``."""
        policy = f", {self.wait_policy}" if self.wait_policy else ""
        return f"threads {self.threads}{policy}"


#: The first setting is the baseline of the ratios.
SETTINGS = (Setting(1), Setting(2), Setting(2, "PASSIVE"))
SINGLE_PASSIVE = Setting(1, "PASSIVE")


@dataclass(frozen=True)
class Workload:
    """A timed call: its batch size, and how to time it.

    At most ``max_runs`` calls are timed, and none after ``budget_s`` seconds of them;
    ``warm_up``: one untimed call first.
    """

    name: str
    batch: int
    max_runs: int
    budget_s: float
    warm_up: bool = True

    @property
    def label(self) -> str:
        """How the tables name the workload."""
        return {
            "w2_batch": f"W2 barycenter, {self.batch} × (M=5, d=16)",
            "w2_single": f"W2 barycenter, {self.batch} × (M=5, d=2)",
            "pot_batch": f"POT fixed point, {self.batch} × (M=5, d=16)",
            "vae_step": f"VAE step (mwb, batch {self.batch})",
        }[self.name]


def workloads(quick: bool) -> tuple[Workload, ...]:
    """The four timed calls.

    ``quick`` shrinks the batches and the repeats, and times the first call instead of
    warming up: with two threads on busy cores, one call can take seconds.
    """
    if quick:
        return (
            Workload("w2_batch", 32, 2, 0.5, warm_up=False),
            Workload("w2_single", 1, 5, 0.2, warm_up=False),
            Workload("pot_batch", 4, 1, 0.5, warm_up=False),
            Workload("vae_step", 8, 2, 0.5, warm_up=False),
        )
    return (
        Workload("w2_batch", 256, 5, 2.0),
        Workload("w2_single", 1, 50, 0.5),
        Workload("pot_batch", 256, 2, 2.0, warm_up=False),
        Workload("vae_step", 64, 5, 1.5),
    )


def time_calls(fn: Callable[[], object], workload: Workload) -> dict[str, Any]:
    """Median wall time of ``fn()``, after one untimed call if ``workload.warm_up``.

    Calls are timed until ``workload.max_runs`` of them ran or ``workload.budget_s``
    seconds were spent on them, whichever comes first; at least one is timed.
    """
    if workload.warm_up:
        fn()
    times: list[float] = []
    while len(times) < workload.max_runs and (not times or sum(times) < workload.budget_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "runs": len(times)}


def _pot_loop(loc: torch.Tensor, cov: torch.Tensor) -> Callable[[], object]:
    """POT's fixed point, one call per problem, to the residual ``TOL`` (as in case 1)."""
    _, ours = F.wasserstein_barycenter_full(loc, cov, tol=TOL)
    eps = (TOL * torch.linalg.matrix_norm(ours)).tolist()
    weights = np.full(loc.shape[1], 1 / loc.shape[1])
    return pot_loop(list(zip(loc.numpy(), cov.numpy(), [weights] * len(eps), eps, strict=True)))


def _vae_step(batch: int) -> Callable[[], None]:
    """One training step of ``examples/multimodal_vae`` as the demo runs it."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    from data import ModalitySpec
    from model import MultimodalVAE
    from objectives import elbo_loss

    specs = [ModalitySpec(f"m{m}", "image", (3, 28, 28), "bernoulli") for m in range(5)]
    torch.manual_seed(0)
    model = MultimodalVAE(specs, 32, "mwb")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    xs = [torch.rand(batch, *spec.shape, generator=generator) for spec in specs]

    def step() -> None:
        loss, _ = elbo_loss(model, xs, beta=1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step


def child(threads: int, quick: bool) -> dict[str, Any]:
    """Time every workload in this process with ``threads`` intra-op threads."""
    torch.set_num_threads(threads)
    w2_batch, w2_single, pot_batch, vae_step = workloads(quick)
    batch_loc, batch_cov = random_spd_problems(w2_batch.batch, 5, 16)
    single_loc, single_cov = random_spd_problems(w2_single.batch, 5, 2, seed=1)
    calls = (
        (w2_batch, lambda: F.wasserstein_barycenter_full(batch_loc, batch_cov, tol=TOL)),
        (w2_single, lambda: F.wasserstein_barycenter_full(single_loc, single_cov, tol=TOL)),
        (pot_batch, _pot_loop(batch_loc[: pot_batch.batch], batch_cov[: pot_batch.batch])),
        (vae_step, _vae_step(vae_step.batch)),
    )
    return {
        "torch_threads": torch.get_num_threads(),
        **{variable: os.environ.get(variable) for variable in WAIT_VARIABLES},
        "timings": {workload.name: time_calls(call, workload) for workload, call in calls},
    }


def run_child(setting: Setting, quick: bool) -> dict[str, Any]:
    """:func:`child` in a fresh interpreter with ``setting``'s environment; its JSON."""
    env = {key: value for key, value in os.environ.items() if key not in WAIT_VARIABLES}
    if setting.wait_policy:
        env["OMP_WAIT_POLICY"] = setting.wait_policy
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(setting.threads)]
    completed = subprocess.run(
        [*command, *(["--quick"] if quick else [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    if completed.returncode:
        raise RuntimeError(f"{setting.label}: child failed\n{completed.stderr}")
    return json.loads(completed.stdout.splitlines()[-1])


def start_spinner() -> subprocess.Popen[bytes]:
    """The competing process: one Python loop that keeps a core busy."""
    return subprocess.Popen(
        [sys.executable, "-c", SPINNER], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )


@contextlib.contextmanager
def competing_process(busy: bool) -> Iterator[subprocess.Popen[bytes] | None]:
    """Run the spinner for the ``with`` block when ``busy``; it is killed however it ends."""
    if not busy:
        yield None
        return
    spinner = start_spinner()
    try:
        yield spinner
    finally:
        spinner.kill()
        spinner.wait()


def rotated(settings: Sequence[Setting], round_: int) -> list[Setting]:
    """``settings`` starting at position ``round_``: each setting takes every position."""
    shift = round_ % len(settings)
    return [*settings[shift:], *settings[:shift]]


def measure_all(
    settings: Sequence[Setting],
    rounds: int,
    quick: bool,
    conditions: Sequence[str] = CONDITIONS,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Every setting in every condition, ``rounds`` times in rotating order.

    Returns
    -------
    records : list of dict
        One per (condition, round, setting, workload): ``median_s`` and ``runs``.
    conditions : dict of str to dict
        Per condition: the 1-minute load average at its start and end, and its duration.
    """
    records: list[dict[str, Any]] = []
    info: dict[str, dict[str, float]] = {}
    for condition in conditions:
        with competing_process(condition == "busy"):
            start = time.perf_counter()
            info[condition] = {"load_average_1min_start": os.getloadavg()[0]}
            for round_ in range(rounds):
                for setting in rotated(settings, round_):
                    result = run_child(setting, quick)
                    tags = {"condition": condition, "round": round_, "setting": setting.label}
                    records += [
                        {
                            **tags,
                            "workload": workload,
                            "torch_threads": result["torch_threads"],
                            "OMP_WAIT_POLICY": result["OMP_WAIT_POLICY"],
                            **timing,
                        }
                        for workload, timing in result["timings"].items()
                    ]
                    summary = ", ".join(
                        f"{name} {seconds(timing['median_s'])}"
                        for name, timing in result["timings"].items()
                    )
                    print(
                        f"  {condition} round {round_ + 1}, {setting.label}: {summary}", flush=True
                    )
            info[condition]["load_average_1min_end"] = os.getloadavg()[0]
            info[condition]["elapsed_s"] = time.perf_counter() - start
    return records, info


def summarise(records: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Median over rounds per (workload, condition, setting), and ratios to ``labels[0]``.

    Returns
    -------
    list of dict
        One per (workload, condition), in the order first seen: ``median_s`` and ``ratio``
        (the setting's median over ``labels[0]``'s), each a dict keyed by setting label.
    """
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    for record in records:
        row = times.setdefault((record["workload"], record["condition"]), {})
        row.setdefault(record["setting"], []).append(record["median_s"])
    rows = []
    for (workload, condition), by_setting in times.items():
        medians = {label: statistics.median(by_setting[label]) for label in labels}
        baseline = medians[labels[0]]
        rows.append(
            {
                "workload": workload,
                "condition": condition,
                "median_s": medians,
                "ratio": {label: median / baseline for label, median in medians.items()},
            }
        )
    return rows


def speedups(
    rows: Sequence[dict[str, Any]], labels: Sequence[str], ours: str, peer: str
) -> list[list[str]]:
    """``peer``'s median over ``ours``' per condition and setting (one table row each
    condition where both workloads ran: they ran in the same processes)."""
    medians = {(row["workload"], row["condition"]): row["median_s"] for row in rows}
    conditions = dict.fromkeys(row["condition"] for row in rows)
    return [
        [
            condition,
            *(
                f"{medians[peer, condition][label] / medians[ours, condition][label]:.3g}×"
                for label in labels
            ),
        ]
        for condition in conditions
        if (ours, condition) in medians and (peer, condition) in medians
    ]


def markdown(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    workload_labels: dict[str, str],
    conditions: dict[str, dict[str, float]],
    env: dict[str, Any],
    rounds: int,
    quick: bool,
) -> str:
    """The results page: how it was measured, the table, the load and the environment."""
    reading = (
        "How torch's CPU thread settings behave on an idle machine and when another process "
        "shares the cores. Each setting runs in a fresh Python process, since the OpenMP "
        "runtime reads `OMP_WAIT_POLICY` when torch loads it: *threads N* is "
        "`torch.set_num_threads(N)` with `OMP_WAIT_POLICY` unset (libgomp's default, where a "
        "thread that runs out of work spins for a while before it sleeps), and *PASSIVE* "
        "adds `OMP_WAIT_POLICY=PASSIVE` (it sleeps at once). In the *idle* condition the "
        "benchmark starts nothing else (other users' load, listed below, still counts); in "
        '*busy* it runs one competing `python -c "while True: pass"` throughout. Every '
        "process times the full-covariance W2 barycenter "
        "(`barycentric.functional.wasserstein_barycenter_full`, float64) on a batch and on "
        "a single small problem, and one training step (Adam, `elbo_loss`) of the "
        "multimodal VAE example with 5 modalities of 3×28×28 and Bernoulli likelihoods: the "
        "median of several calls after a warm-up. Within a condition the settings run in "
        f"rotating order for {rounds} round{'s' if rounds > 1 else ''}, and each cell is the "
        "median over rounds; *÷ threads 1* is a setting's time divided by one thread's in "
        "the same condition (above 1: slower than one thread)."
    )
    baseline, *others = labels
    headers = ["workload", "condition", *labels, *(f"{label} ÷ {baseline}" for label in others)]
    table = [
        [
            workload_labels[row["workload"]],
            row["condition"],
            *(seconds(row["median_s"][label]) for label in labels),
            *(f"{row['ratio'][label]:.3g}×" for label in others),
        ]
        for row in rows
    ]
    ratios = speedups(rows, labels, "w2_batch", "pot_batch")
    comparison = (
        [
            "POT's fixed point over ours on the same 256 problems (POT ÷ ours, both timed in "
            "the same processes):",
            "",
            markdown_table(["condition", *labels], ratios),
            "",
        ]
        if ratios
        else []
    )
    load = [
        f"- {condition}: 1-minute load average {info['load_average_1min_start']:.2f} at the "
        f"start, {info['load_average_1min_end']:.2f} at the end ({info['elapsed_s']:.0f} s)"
        for condition, info in conditions.items()
    ]
    lines = [
        "# Thread settings on shared cores",
        "",
        reading,
        "",
        "Quick run (small batches, few repeats, no warm-up): not a speed claim." if quick else "",
        "",
        markdown_table(headers, table),
        "",
        *comparison,
        *load,
        "",
        markdown_table(["environment", ""], [[key, value] for key, value in env.items()]),
    ]
    return "\n".join(lines) + "\n"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, small batches")
    parser.add_argument("--rounds", type=int, help="rounds per condition (default 3; quick 1)")
    parser.add_argument(
        "--single-passive", action="store_true", help="also measure threads 1 with PASSIVE"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="where busy_cores.md and busy_cores.json go (default benchmarks/results/cpu)",
    )
    parser.add_argument("--child", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every setting in both conditions and write the Markdown and JSON results."""
    args = _parse(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.quick)))
        return
    rounds = args.rounds or (1 if args.quick else 3)
    settings = (*SETTINGS, SINGLE_PASSIVE) if args.single_passive else SETTINGS
    labels = [setting.label for setting in settings]
    env = environment(torch.device("cpu"))
    env["parallel_backend"] = next(
        line.split(":", 1)[1].strip()
        for line in torch.__config__.parallel_info().splitlines()
        if line.startswith("ATen parallel backend")
    )
    start = time.perf_counter()
    records, conditions = measure_all(settings, rounds, args.quick)
    rows = summarise(records, labels)
    workload_labels = {workload.name: workload.label for workload in workloads(args.quick)}
    args.output.mkdir(parents=True, exist_ok=True)
    payload = {
        "quick": args.quick,
        "rounds": rounds,
        "elapsed_s": time.perf_counter() - start,
        "settings": [asdict(setting) | {"label": setting.label} for setting in settings],
        "workloads": [
            asdict(workload) | {"label": workload.label} for workload in workloads(args.quick)
        ],
        "conditions": conditions,
        "environment": env,
        "summary": rows,
        "records": records,
    }
    (args.output / "busy_cores.json").write_text(json.dumps(payload, indent=2) + "\n")
    page = markdown(rows, labels, workload_labels, conditions, env, rounds, args.quick)
    (args.output / "busy_cores.md").write_text(page)
    print(page)
    print(f"results in {args.output}")


if __name__ == "__main__":
    main()
