"""What a CUDA device should hand to its host: the measurements behind ``barycentric._host``.

Usage::

    python benchmarks/host_policies.py [--quick] [--output DIR]
    python benchmarks/host_policies.py --render FILE.json [--output DIR]

Three measurements, each side by side in one process, float64, medians of a few runs after
a warm-up, the device synchronised around every timed call:

* **Decompositions**: ``torch.linalg.eigh`` (and ``svd``) of ``n`` matrices ``d × d`` on the
  device, against a copy to the host, the same call there on one thread and on all, and a
  copy back; the routing of the library is not involved.
* **Whole solves**: ``wasserstein_barycenter_full`` (``tol=1e-10``) of ``batch × (M, d)``
  with the whole-solve routing off (everything on the device; decompositions still routed)
  against the routing forced on (on one host thread, as the library runs small solves).
* **Routed decompositions in a solve**: ``32 × (5, d)`` for ``d > 32``, decompositions on
  the device against on the host, on one host thread and on all.

Writes ``host_policies.json`` and ``host_policies.md`` to ``DIR`` (default
``benchmarks/results/cuda``). ``--render`` rewrites the Markdown from a JSON file of an
earlier run. ``--quick`` (a small grid) proves the script runs; without a GPU it measures
the CPU against itself and says nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from cases.common import environment, markdown_table, synchronize

from barycentric import _host
from barycentric.functional import wasserstein_barycenter_full

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "cuda"
#: (d, n) of the decompositions; svd only at the dimensions in SVD_DIMS.
DECOMPOSITIONS = ((16, 160), (32, 160), (33, 160), (48, 160), (64, 160), (64, 640),
                  (96, 160), (128, 160), (192, 32), (256, 32))  # fmt: skip
SVD_DIMS = (16, 33, 64, 128)
#: (M, d, batches) of the whole solves.
SOLVES = ((5, 2, (1, 16, 256, 1024, 4096)), (5, 4, (1, 16, 256, 1024)),
          (5, 8, (1, 16, 64, 256)), (5, 16, (1, 4, 16, 64, 128)), (5, 32, (1, 4, 16, 32)),
          (2, 16, (1, 16, 64, 256)), (10, 8, (1, 16, 64)))  # fmt: skip
#: Solves with more elements than this are not timed on the host (the device wins there).
HOST_ELEMENTS_CAP = 2**18
ROUTED_DIMS = (48, 64, 128)
QUICK = {
    "decompositions": ((16, 8), (40, 8)),
    "svd": (40,),
    "solves": ((5, 2, (1, 4)), (2, 4, (1,))),
    "routed": (40,),
}


def _median_ms(device: torch.device, fn: Callable[[], object], runs: int) -> float:
    fn()
    synchronize(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[runs // 2]


def _spd(generator: torch.Generator, shape: tuple[int, ...], d: int) -> torch.Tensor:
    x = torch.randn(*shape, d, d, dtype=torch.float64, generator=generator)
    return x @ x.mT / d + 0.1 * torch.eye(d, dtype=torch.float64)


def measure(device: torch.device, quick: bool) -> dict[str, Any]:
    """The three measurements (module docstring), as records."""
    threads = torch.get_num_threads()
    runs = 2 if quick else 3
    generator = torch.Generator().manual_seed(0)
    records: dict[str, Any] = {"threads": threads, "decompositions": [], "solves": []}
    records["routed_decompositions"] = []

    def on_host(fn: Callable, a: torch.Tensor, host_threads: int) -> float:
        torch.set_num_threads(host_threads)
        try:
            return _median_ms(device, lambda: [f.to(device) for f in fn(a.cpu())], runs)
        finally:
            torch.set_num_threads(threads)

    svd_dims = QUICK["svd"] if quick else SVD_DIMS
    for d, n in QUICK["decompositions"] if quick else DECOMPOSITIONS:
        x = torch.randn(n, d, d, dtype=torch.float64, generator=generator).to(device)
        a = x @ x.mT + d * torch.eye(d, dtype=x.dtype, device=device)
        row: dict[str, Any] = {"d": d, "n": n}
        for name, fn, argument in (("eigh", torch.linalg.eigh, a), ("svd", torch.linalg.svd, x)):
            if name == "eigh" or d in svd_dims:
                row[name] = {
                    "device": _median_ms(device, lambda f=fn, t=argument: f(t), runs),
                    "host_1": on_host(fn, argument, 1),
                    "host_all": on_host(fn, argument, threads),
                }
        records["decompositions"].append(row)
        print("decomposition", json.dumps(row), flush=True)

    solve_limit, decomposition_limit = _host.HOST_SOLVE_ELEMENTS, _host.HOST_DECOMPOSITION_MAX
    try:
        for m, d, batches in QUICK["solves"] if quick else SOLVES:
            for batch in batches:
                cov = _spd(generator, (batch, m), d).to(device)
                loc = torch.zeros(batch, m, d, dtype=torch.float64, device=device)
                elements = batch * m * d * d

                def solve(cov=cov, loc=loc):
                    return wasserstein_barycenter_full(loc, cov, tol=1e-10)

                _host.HOST_SOLVE_ELEMENTS = 0
                row = {"batch": batch, "M": m, "d": d, "elements": elements}
                row["device"] = _median_ms(device, solve, 5)
                if elements <= HOST_ELEMENTS_CAP:
                    _host.HOST_SOLVE_ELEMENTS = 2**62
                    torch.set_num_threads(1)
                    row["host"] = _median_ms(device, solve, 5)
                    torch.set_num_threads(threads)
                records["solves"].append(row)
                print("solve", json.dumps(row), flush=True)
        _host.HOST_SOLVE_ELEMENTS = 0
        for d in QUICK["routed"] if quick else ROUTED_DIMS:
            batch = 2 if quick else 32
            cov = _spd(generator, (batch, 5), d).to(device)
            loc = torch.zeros(batch, 5, d, dtype=torch.float64, device=device)
            row = {"batch": batch, "M": 5, "d": d}
            for host_threads in (1, threads):
                torch.set_num_threads(host_threads)
                for label, limit in (("device", 0), ("host", 256)):
                    _host.HOST_DECOMPOSITION_MAX = limit
                    row[f"{label}_{host_threads}"] = _median_ms(
                        device, lambda c=cov, x=loc: wasserstein_barycenter_full(x, c), runs
                    )
            torch.set_num_threads(threads)
            records["routed_decompositions"].append(row)
            print("routed", json.dumps(row), flush=True)
    finally:
        _host.HOST_SOLVE_ELEMENTS, _host.HOST_DECOMPOSITION_MAX = solve_limit, decomposition_limit
        torch.set_num_threads(threads)
    return records


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _ratio(host: float | None, device: float) -> str:
    if host is None:
        return "not timed"
    ratio = device / host
    return f"**{ratio:.2g}×**" if ratio >= 1 else f"{ratio:.2g}× (device faster)"


def render(records: dict[str, Any]) -> str:
    """The Markdown report of :func:`measure`'s records."""
    env = records.get("environment", {})
    threads = records["threads"]
    decompositions = [
        [row["d"], row["n"], name, _ms(times["device"]), _ms(times["host_1"]),
         _ms(times["host_all"]), _ratio(min(times["host_1"], times["host_all"]), times["device"])]
        for row in records["decompositions"]
        for name in ("eigh", "svd")
        if (times := row.get(name))
    ]  # fmt: skip
    solves = [
        [row["batch"], row["M"], row["d"], row["elements"], _ms(row["device"]),
         _ms(row.get("host")), _ratio(row.get("host"), row["device"])]
        for row in records["solves"]
    ]  # fmt: skip
    routed = [
        [row["batch"], row["M"], row["d"], _ms(row["device_1"]), _ms(row["host_1"]),
         _ms(row[f"device_{threads}"]), _ms(row[f"host_{threads}"])]
        for row in records["routed_decompositions"]
    ]  # fmt: skip
    problem, host = ["batch", "M", "d"], ["host, 1 thread", f"host, {threads} threads"]
    on_device = ["device, 1 host thread", f"device, {threads} host threads"]
    lines = [
        f"# Host policies on {env.get('gpu') or env.get('cpu', 'an unnamed machine')}",
        "",
        "Made by `benchmarks/host_policies.py` (its docstring says how each figure is "
        "measured); times in ms, float64; *speed-up of the host* is device time / host time.",
        f"The host has {threads} threads; `barycentric._host` holds the rules these measure: "
        f"decompositions of `32 < d ≤ {_host.HOST_DECOMPOSITION_MAX}` on the host, whole "
        f"solves of at most {_host.HOST_SOLVE_ELEMENTS} elements (`batch · M · d²`) on the host.",
        "",
        "## Decompositions of n matrices d × d",
        "",
        markdown_table(
            ["d", "n", "call", "device", *host, "speed-up of the host (best)"], decompositions
        ),
        "",
        "## Whole solves, tol 1e-10",
        "",
        markdown_table([*problem, "elements", "device", host[0], "speed-up of the host"], solves),
        "",
        "## Decompositions of a solve on the device or on the host",
        "",
        markdown_table([*problem, on_device[0], host[0], on_device[1], host[1]], routed),
    ]
    if env:
        lines += ["", markdown_table(["environment", ""], [[k, v] for k, v in env.items()])]
    return "\n".join(lines) + "\n"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small grid")
    parser.add_argument("--render", type=Path, help="only rewrite the Markdown of this JSON")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Measure (or read) the records, and write the JSON and the Markdown."""
    args = _parse(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.render:
        records = json.loads(args.render.read_text())
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        records = measure(device, args.quick)
        records["environment"] = environment(device)
        (args.output / "host_policies.json").write_text(json.dumps(records, indent=1) + "\n")
    (args.output / "host_policies.md").write_text(render(records))
    print(f"results in {args.output}")


if __name__ == "__main__":
    main()
