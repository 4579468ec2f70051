"""Run the benchmarks: side-by-side timings of barycentric against POT and plain loops.

Usage::

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--output DIR] [--threads N=1]
                             [--case NAME ...]

Writes ``<case>.json`` (records plus the environment), ``summary.md`` and PNG plots to
``DIR`` (default ``benchmarks/results/<device>``). ``--quick`` runs a small grid of every
case with few repeats; it proves the benchmarks work and says nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

CASES = ("wasserstein_full", "gradients", "subsets", "scaling", "vae_step")
#: Environment variables read by the OpenMP, MKL and OpenBLAS pools of torch and numpy.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid, few repeats")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/<device>")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of torch and numpy's BLAS/LAPACK; 0: the libraries' defaults "
        "(default 1: the same compute for both sides, stable on a shared machine)",
    )
    parser.add_argument(
        "--case", action="append", choices=CASES, help="run only these (repeatable)"
    )
    return parser.parse_args(argv)


def _summary(settings: Any, env: dict[str, Any], results: list[Any]) -> str:
    from cases.common import markdown_table

    lines = [
        f"# Benchmarks on {env.get('gpu', env['cpu'])} ({settings.device.type})",
        "",
        "Quick run (small grid, few repeats): not a speed claim." if settings.quick else "",
        "",
        markdown_table(["environment", ""], [[key, value] for key, value in env.items()]),
        "",
        "## Headline figures",
        "",
        *[f"- {line}" for result in results for line in result.headline],
    ]
    for result in results:
        lines += ["", f"## {result.title}", "", result.summary]
        lines += [f"\n![{plot.stem}]({plot.name})" for plot in result.plots]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the selected cases and write their JSON, ``summary.md`` and plots."""
    args = _parse(argv)
    if args.threads:
        # The BLAS pools size themselves when numpy and torch are first imported.
        os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(args.threads)))
    import importlib

    import torch
    from cases.common import Settings, environment

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    output = args.output or Path(__file__).resolve().parent / "results" / device.type
    settings = Settings(args.quick, device, output)
    settings.output.mkdir(parents=True, exist_ok=True)
    env = environment(settings.device)
    env.update({variable: os.environ.get(variable) for variable in THREAD_VARIABLES})
    results = []
    for name in args.case or CASES:
        print(f"[{name}]", flush=True)
        start = time.perf_counter()
        result = importlib.import_module(f"cases.{name}").run(settings)
        elapsed = time.perf_counter() - start
        payload = {
            "case": result.name,
            "title": result.title,
            "quick": settings.quick,
            "elapsed_s": elapsed,
            "environment": env,
            "headline": result.headline,
            "records": result.records,
        }
        (settings.output / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
        for line in result.headline:
            print(f"  >> {line}", flush=True)
        print(f"  done in {elapsed:.1f} s", flush=True)
        results.append(result)
        # after each case, so that an interrupted run keeps a summary of what it measured
        (settings.output / "summary.md").write_text(_summary(settings, env, results))
    print(f"results in {settings.output}")


if __name__ == "__main__":
    main()
