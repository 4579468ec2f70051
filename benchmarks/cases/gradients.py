"""Case 2: cost of gradients of the fixed point, implicit vs unrolled, as iterations grow.

``tol=0`` forces exactly ``max_iter`` forward steps (and, for the implicit backward, as many
adjoint steps). The loss is ``⟨G, Σ*⟩`` for a fixed random symmetric ``G``; gradients flow
to the experts' covariances.

Memory is the peak of bytes allocated during forward + backward above the level before
the forward:

* on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``;
* on CPU, the allocator's own events, recorded by ``torch.profiler`` with
  ``profile_memory=True``: the running sum of every allocation and free (each ``[memory]``
  event's ``Bytes``) in time order, whose maximum is the peak. Unlike RSS this sees every
  tensor and none of the allocator's caching, and unlike summing each operator's
  "self CPU memory" it accounts for when tensors are freed.

"Held by graph" is the same running sum when the backward starts: what the forward keeps
alive for the backward, the quantity that unrolling makes grow with the iterations.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from barycentric.functional import wasserstein_barycenter_full

from .common import (
    CaseResult,
    Settings,
    markdown_table,
    measure,
    random_spd_problems,
    seconds,
)

BACKWARDS = ("implicit", "unroll")


def _loss(cov: torch.Tensor, probe: torch.Tensor, max_iter: int, backward: str) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tol=0 never converges, by design
        loc = torch.zeros(cov.shape[:-1], dtype=cov.dtype, device=cov.device)
        _, bary = wasserstein_barycenter_full(
            loc, cov, max_iter=max_iter, tol=0.0, backward=backward
        )
    return (bary * probe).sum()


def _cpu_memory(
    cov: torch.Tensor, probe: torch.Tensor, max_iter: int, backward: str
) -> tuple[int, int]:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = _loss(cov, probe, max_iter, backward)
        with record_function("backward"):
            loss.backward()
    with tempfile.TemporaryDirectory() as directory:
        trace = Path(directory) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    backward_start = min(e["ts"] for e in events if e.get("name") == "backward")
    allocated = peak = held = 0
    for event in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        if event["ts"] < backward_start:
            held = allocated + event["args"]["Bytes"]
        allocated += event["args"]["Bytes"]
        peak = max(peak, allocated)
    return peak, held


def _cuda_memory(
    cov: torch.Tensor, probe: torch.Tensor, max_iter: int, backward: str
) -> tuple[int, int]:
    torch.cuda.synchronize(cov.device)
    base = torch.cuda.memory_allocated(cov.device)
    torch.cuda.reset_peak_memory_stats(cov.device)
    loss = _loss(cov, probe, max_iter, backward)
    torch.cuda.synchronize(cov.device)
    held = torch.cuda.memory_allocated(cov.device) - base
    loss.backward()
    torch.cuda.synchronize(cov.device)
    return torch.cuda.max_memory_allocated(cov.device) - base, held


def _measure_point(
    cov: torch.Tensor, probe: torch.Tensor, max_iter: int, backward: str, settings: Settings
) -> tuple[dict[str, Any], torch.Tensor]:
    leaf = cov.clone().requires_grad_()

    def forward() -> torch.Tensor:
        return _loss(leaf, probe, max_iter, backward)

    def forward_backward() -> torch.Tensor:
        leaf.grad = None
        forward().backward()
        return leaf.grad

    forward_time, _ = measure(forward, settings.device, settings.min_run_time)
    total_time, grad = measure(forward_backward, settings.device, settings.min_run_time)
    memory = _cuda_memory if settings.device.type == "cuda" else _cpu_memory
    leaf.grad = None
    peak, held = memory(leaf, probe, max_iter, backward)
    record = {
        "backward": backward,
        "max_iter": max_iter,
        "forward_s": forward_time.median_s,
        "forward_backward_s": total_time.median_s,
        "backward_s": total_time.median_s - forward_time.median_s,
        "peak_bytes": peak,
        "held_by_graph_bytes": held,
    }
    return record, grad


def _at_tolerance(settings: Settings) -> dict[str, Any]:
    """Forward alone and forward + implicit backward as a user runs them: to ``tol=1e-10``."""
    batch, experts, dim, tol = (8, 5, 8, 1e-10) if settings.quick else (256, 5, 16, 1e-10)
    _, cov = random_spd_problems(batch, experts, dim, seed=4)
    cov = cov.to(settings.device)
    loc = torch.zeros(cov.shape[:-1], dtype=cov.dtype, device=cov.device)
    probe = torch.randn(batch, dim, dim, dtype=cov.dtype, generator=torch.Generator())
    probe = (probe + probe.mT).to(settings.device)
    leaf = cov.clone().requires_grad_()

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return wasserstein_barycenter_full(loc, cov, tol=tol)[1]

    def forward_backward() -> torch.Tensor:
        leaf.grad = None
        (wasserstein_barycenter_full(loc, leaf, tol=tol)[1] * probe).sum().backward()
        return leaf.grad

    forward_time, _ = measure(forward, settings.device, settings.min_run_time)
    total_time, _ = measure(forward_backward, settings.device, settings.min_run_time)
    backward_s = total_time.median_s - forward_time.median_s
    return {
        "batch": batch,
        "experts": experts,
        "dim": dim,
        "tol": tol,
        "forward_s": forward_time.median_s,
        "backward_s": backward_s,
        "backward_over_forward": backward_s / forward_time.median_s,
    }


def _mib(value: int) -> str:
    return f"{value / 2**20:.2f} MiB"


def _plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    fig, (ax_time, ax_memory) = plt.subplots(1, 2, figsize=(10, 4))
    for backward, marker in zip(BACKWARDS, "os", strict=True):
        rows = [r for r in records if r["backward"] == backward]
        iters = [r["max_iter"] for r in rows]
        ax_time.plot(iters, [r["backward_s"] * 1e3 for r in rows], marker=marker, label=backward)
        ax_memory.plot(
            iters, [r["peak_bytes"] / 2**20 for r in rows], marker=marker, label=backward
        )
    ax_time.set(xlabel="fixed-point iterations (tol = 0)", ylabel="backward time [ms]")
    ax_memory.set(
        xlabel="fixed-point iterations (tol = 0)", ylabel="peak memory, forward + backward [MiB]"
    )
    ax_memory.set_ylim(bottom=0)
    ax_time.set_ylim(bottom=0)
    for ax in (ax_time, ax_memory):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(settings: Settings) -> CaseResult:
    """Both backward modes at every iteration count; gradients compared at the largest."""
    batch, dim, experts = (8, 8, 5) if settings.quick else (64, 16, 5)
    iteration_counts = (5, 20) if settings.quick else (5, 10, 20, 40)
    _, cov = random_spd_problems(batch, experts, dim, seed=2)
    cov = cov.to(settings.device)
    probe = torch.randn(
        batch, dim, dim, dtype=cov.dtype, generator=torch.Generator().manual_seed(3)
    )
    probe = (probe + probe.mT).to(settings.device)
    records, grads = [], {}
    for max_iter in iteration_counts:
        for backward in BACKWARDS:
            record, grads[backward] = _measure_point(cov, probe, max_iter, backward, settings)
            records.append(record)
    gap = (
        torch.linalg.norm(grads["implicit"] - grads["unroll"]) / torch.linalg.norm(grads["unroll"])
    ).item()
    at_tol = _at_tolerance(settings)
    at_tol_problem = (
        f"{at_tol['batch']} problems, M = {at_tol['experts']}, d = {at_tol['dim']}, float64, "
        f"tol = {at_tol['tol']:g}"
    )
    at_tol_line = (
        f"At tolerance ({at_tol_problem}): forward {seconds(at_tol['forward_s'])}, implicit "
        f"backward {seconds(at_tol['backward_s'])} ({at_tol['backward_over_forward']:.2f}× the "
        "forward)"
    )
    rows = [
        [
            r["max_iter"],
            r["backward"],
            seconds(r["forward_s"]),
            seconds(r["backward_s"]),
            _mib(r["peak_bytes"]),
            _mib(r["held_by_graph_bytes"]),
        ]
        for r in records
    ]
    problem = f"batch {batch}, M = {experts}, d = {dim}, float64"
    plot = settings.output / "gradients.png"
    _plot(records, plot, f"Gradient of the W2 fixed point ({problem}, {settings.device.type})")
    memory_source = (
        "torch.cuda.max_memory_allocated"
        if settings.device.type == "cuda"
        else "torch.profiler allocator events"
    )
    summary = "\n\n".join(
        [
            f"{problem}; loss ⟨G, Σ*⟩, gradient w.r.t. the experts' covariances; `tol=0` forces "
            "`max_iter` steps (the implicit backward also runs `max_iter` adjoint steps). "
            "Backward time = median(forward + backward) − median(forward). Peak memory: "
            "peak allocated during forward + backward above the level before it "
            f"({memory_source}); "
            "held by graph: allocated when the backward starts.",
            markdown_table(
                ["iterations", "backward", "forward", "backward", "peak memory", "held by graph"],
                rows,
            ),
            f"Relative difference of the implicit and unrolled gradients at {iteration_counts[-1]} "
            f"iterations: {gap:.1e}.",
            f"{at_tol_line}: the forward without autograd, the backward as median(forward + "
            "backward) − median(forward), both run to the tolerance as a user runs them.",
        ]
    )
    for r in records:
        r["gradient_relative_difference_at_max"] = gap
    implicit = [r["peak_bytes"] for r in records if r["backward"] == "implicit"]
    unroll = [r["peak_bytes"] for r in records if r["backward"] == "unroll"]
    headline = (
        f"Gradients ({problem}): peak memory implicit {_mib(implicit[0])} → {_mib(implicit[-1])}, "
        f"unroll {_mib(unroll[0])} → {_mib(unroll[-1])} from {iteration_counts[0]} to "
        f"{iteration_counts[-1]} iterations; implicit vs unroll gradient gap {gap:.1e}"
    )
    records.append({"at_tolerance": at_tol})
    return CaseResult(
        "gradients",
        "2. Gradients: implicit vs unrolled",
        summary,
        records,
        [headline, at_tol_line],
        [plot],
    )
