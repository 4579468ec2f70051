"""Case 1: full-covariance W2 barycenters, batched, against POT's fixed point.

Both sides solve the same random problems (:func:`common.random_spd_problems`) to the same
relative tolerance ``tol`` (:data:`TOLERANCE`: 1e-10 in float64, 1e-5 in float32):

* ours, ``wasserstein_barycenter_full(..., tol=tol)``, one batched call, stops each problem
  when the relative fixed-point residual of its iterate,
  ``‖Σ − Σ_m λ_m (Σ^½ Σ_m Σ^½)^½‖_F / ‖Σ‖_F``, is at most ``tol``;
* POT, ``ot.gaussian.bures_wasserstein_barycenter(method="fixed_point")``, one call per
  problem (it has no batch dimension), with ``eps = tol · ‖Σ*‖_F`` (``Σ*`` our solution of
  that problem): POT's ``eps`` bounds the absolute change ``‖F(Σ_k) − Σ_k‖_F`` of its step
  ``F(Σ) = Σ_m λ_m (Σ^½ Σ_m Σ^½)^½`` and it returns ``Σ_k``, so its stopping rule is exactly
  "common residual ≤ tol".

Both outputs are then scored by one measure, :func:`common.fixed_point_residual`.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import ot
import torch

from barycentric.functional import wasserstein_barycenter_full

from .common import (
    CaseResult,
    Settings,
    dtype_name,
    fixed_point_residual,
    markdown_table,
    measure,
    random_spd_problems,
    seconds,
    speedup,
)

#: POT's iteration cap (its default).
POT_MAX_ITER = 1000
#: The relative fixed-point residual both sides are asked for (the library's float64 default
#: is tighter, 1e-12; 1e-10 keeps POT within its iteration cap and the tables comparable).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
#: Grid points with ``batch·(M+1)·d³`` above this are skipped: the time budget of one full run
#: on a small CPU machine; on an accelerator, where torch decomposes each matrix of d > 32 in
#: its own cuSOLVER call (0.45 ms at d = 33 and 0.83 ms at d = 64 on an H200, against about
#: 1 µs per matrix batched at d ≤ 32), the batches of 1024 problems with M ≥ 5 at d = 64 and
#: of 64 at d = 256, whose POT loops and decompositions would take most of a GPU lease.
WORK_CAP = {"cpu": 2e8, "cuda": 1e9}


def _grid(quick: bool) -> list[tuple[int, int, int, torch.dtype]]:
    batches, experts, dims = (
        ((1, 8), (2, 5), (2, 8)) if quick else ((1, 64, 1024), (2, 5, 10), (2, 16, 64, 256))
    )
    return [
        (batch, m, d, dtype)
        for dtype in (torch.float64, torch.float32)
        for d in dims
        for m in experts
        for batch in batches
    ]


def _pot_problems(settings: Settings, d: int) -> int:
    """How many problems POT's loop is timed on (the rest is extrapolated per problem).

    Fewer on an accelerator, where POT's torch backend launches one small cuSOLVER call
    per root and the grid is larger.
    """
    if settings.quick or settings.device.type != "cpu":
        return 2 if d >= 256 else 4
    return 2 if d >= 256 else 16


def _ours(
    loc: torch.Tensor, cov: torch.Tensor, weights: torch.Tensor, tol: float, settings: Settings
) -> tuple[dict[str, Any], torch.Tensor]:
    def solve() -> tuple[torch.Tensor, torch.Tensor, Any]:
        return wasserstein_barycenter_full(loc, cov, weights, tol=tol, return_info=True)

    timing, (_, bary, info) = measure(solve, settings.device, settings.min_run_time)
    residual = fixed_point_residual(bary, cov, weights)
    return {
        "time_s": timing.median_s,
        "runs": timing.runs,
        "iterations": info.iterations,
        "residual_max": residual.max().item(),
        "solver_residual_max": info.residual.max().item(),
        "converged": bool(info.converged.all()),
    }, bary


def pot_loop(
    problems: list[tuple[Any, Any, Any, float]],
) -> Callable[[], list[tuple[Any, dict[str, Any]]]]:
    """POT's fixed point on each ``(means, covs, weights, eps)``, one call per problem:
    ``[(barycenter covariance, log)]``."""

    def solve() -> list[tuple[Any, dict[str, Any]]]:
        out = []
        # POT prints "Dit not converge." instead of warning; keep stdout for the report.
        with contextlib.redirect_stdout(io.StringIO()):
            for m, c, w, eps in problems:
                _, bary, log = ot.gaussian.bures_wasserstein_barycenter(
                    m, c, w, method="fixed_point", num_iter=POT_MAX_ITER, eps=eps, log=True
                )
                out.append((bary, log))
        return out

    return solve


def _pot(
    backend: str,
    loc: torch.Tensor,
    cov: torch.Tensor,
    weights: torch.Tensor,
    eps: torch.Tensor,
    batch: int,
    settings: Settings,
) -> dict[str, Any]:
    n = loc.shape[0]
    if backend == "numpy":
        convert: Callable[[torch.Tensor], Any] = lambda t: t.cpu().numpy()  # noqa: E731
    else:
        convert = lambda t: t.to(settings.device)  # noqa: E731
    problems = [
        (convert(loc[i]), convert(cov[i]), convert(weights[i]), eps[i].item()) for i in range(n)
    ]
    timing, out = measure(pot_loop(problems), settings.device, settings.min_run_time)
    bary = torch.stack([torch.as_tensor(b).cpu() for b, _ in out])
    iterations = [int(log["num_iter"]) + 1 for _, log in out]  # maps evaluated
    converged = [
        float(log["final_diff"]) <= e for (_, log), e in zip(out, eps.tolist(), strict=True)
    ]
    residual = fixed_point_residual(bary, cov.cpu(), weights.cpu())
    return {
        "time_s": timing.median_s / n * batch,
        "measured_time_s": timing.median_s,
        "measured_problems": n,
        "runs": timing.runs,
        "iterations_median": statistics.median(iterations),
        "iterations_max": max(iterations),
        "residual_max": residual.max().item(),
        "converged": all(converged),
    }


def solve_grid_point(
    batch: int,
    experts: int,
    dim: int,
    dtype: torch.dtype,
    settings: Settings,
    pot_problems: int,
) -> dict[str, Any]:
    """Time ours (whole batch) and POT (numpy and torch backends, first ``pot_problems``)."""
    record: dict[str, Any] = {"batch": batch, "experts": experts, "dim": dim}
    record["dtype"] = dtype_name(dtype)
    loc, cov = random_spd_problems(batch, experts, dim, seed=batch * 1000 + experts * 10 + dim)
    loc, cov = loc.to(settings.device, dtype), cov.to(settings.device, dtype)
    weights = torch.full((batch, experts), 1 / experts, dtype=dtype, device=settings.device)
    tol = TOLERANCE[dtype]
    record["tol"] = tol
    record["ours"], bary = _ours(loc, cov, weights, tol, settings)
    n = min(batch, pot_problems)
    eps = tol * torch.linalg.matrix_norm(bary[:n]).cpu()
    for backend in ("numpy", "torch"):
        record[f"pot_{backend}"] = _pot(
            backend, loc[:n], cov[:n], weights[:n], eps, batch, settings
        )
    return record


def _iterations(ours: dict[str, Any], experts: int) -> str:
    text = str(ours["iterations"])
    if experts == 2:
        return f"{text} (closed form)"
    return text if ours["converged"] else f"{text} **(not converged)**"


def _pot_cells(pot: dict[str, Any], ours_time: float) -> list[str]:
    iterations = f"{pot['iterations_median']:g} / {pot['iterations_max']}"
    if not pot["converged"]:
        iterations += " **(not converged)**"
    return [
        seconds(pot["time_s"]),
        iterations,
        f"{pot['residual_max']:.1e}",
        speedup(pot["time_s"], ours_time),
    ]


def table_row(record: dict[str, Any]) -> list[str]:
    """One summary row: ours, POT numpy, POT torch, speedups and POT's sample size."""
    head = [record["batch"], record["experts"], record["dim"], record["dtype"]]
    if "skipped" in record:
        return [*head, f"skipped: {record['skipped']}", *[""] * 10]
    ours = record["ours"]
    return [
        *head,
        seconds(ours["time_s"]),
        _iterations(ours, record["experts"]),
        f"{ours['residual_max']:.1e}",
        *_pot_cells(record["pot_numpy"], ours["time_s"]),
        *_pot_cells(record["pot_torch"], ours["time_s"]),
        str(record["pot_numpy"]["measured_problems"]),
    ]


HEADERS = [
    "batch",
    "M",
    "d",
    "dtype",
    "ours time",
    "ours iters",
    "ours residual",
    "POT-np time",
    "POT-np iters (median / max)",
    "POT-np residual",
    "speedup vs POT-np",
    "POT-torch time",
    "POT-torch iters",
    "POT-torch residual",
    "speedup vs POT-torch",
    "POT measured on n problems",
]


def headline(record: dict[str, Any]) -> str:
    """The lead's line: our iterations and time against POT's on one grid point."""
    ours, numpy_, torch_ = record["ours"], record["pot_numpy"], record["pot_torch"]
    return (
        f"W2 full, {record['batch']} problems, d={record['dim']}, M={record['experts']}, "
        f"{record['dtype']}, tol={record['tol']:g}: ours {ours['iterations']} iterations in "
        f"{seconds(ours['time_s'])} (residual ≤ {ours['residual_max']:.1e}); POT numpy "
        f"{numpy_['iterations_median']:g} median / {numpy_['iterations_max']} max iterations in "
        f"{seconds(numpy_['time_s'])} ({speedup(numpy_['time_s'], ours['time_s'])}, residual ≤ "
        f"{numpy_['residual_max']:.1e}); POT torch {seconds(torch_['time_s'])} "
        f"({speedup(torch_['time_s'], ours['time_s'])}); POT measured on "
        f"{numpy_['measured_problems']} problems"
    )


def run(settings: Settings) -> CaseResult:
    """Every grid point, then the lead's figure (256 problems, d=16, M=5, float64)."""
    # the lead first, so that a run cut short has printed it
    lead_pot = 256 if not settings.quick and settings.device.type == "cpu" else 16
    lead = solve_grid_point(256, 5, 16, torch.float64, settings, lead_pot)
    lead["headline"] = True
    print("  wasserstein_full lead", table_row(lead), flush=True)
    records = []
    for batch, experts, dim, dtype in _grid(settings.quick):
        start = time.perf_counter()
        work = batch * (experts + 1) * dim**3
        cap = WORK_CAP[settings.device.type]
        if work > cap:
            reason = f"batch·(M+1)·d³ = {work:.2g} > {cap:.0g} ({settings.device.type} budget)"
            records.append(
                {"batch": batch, "experts": experts, "dim": dim, "dtype": dtype_name(dtype)}
                | {"skipped": reason}
            )
        else:
            pot_problems = _pot_problems(settings, dim)
            records.append(solve_grid_point(batch, experts, dim, dtype, settings, pot_problems))
        elapsed = f"{time.perf_counter() - start:.1f} s"
        print("  wasserstein_full", table_row(records[-1]), elapsed, flush=True)
    records.append(lead)
    rows = [table_row(r) for r in records]
    summary = "\n\n".join(
        [
            "Ours: one batched call. POT: a Python loop over problems, timed on the first "
            "*n* problems and extrapolated linearly to the batch (last column). Both stop at "
            "relative fixed-point residual ≤ tol (1e-10 float64, 1e-5 float32); *residual* is the "
            "largest common residual ‖Σ − Σ λ_m (Σ^½ Σ_m Σ^½)^½‖_F / ‖Σ‖_F over the problems "
            "solved, computed in float64 by the benchmark on both outputs. POT iterations "
            "count evaluated maps. M = 2 is McCann's closed form on our side. Speedups below "
            "1× are marked *slower*. The last row is the lead's figure.",
            markdown_table(HEADERS, rows),
        ]
    )
    return CaseResult(
        "wasserstein_full",
        "1. Full-covariance W2 barycenter vs POT",
        summary,
        records,
        headline=[headline(lead)],
    )
