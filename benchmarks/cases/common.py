"""Timing, environment, random problems and report helpers shared by every case."""

from __future__ import annotations

import datetime
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import ot
import scipy
import torch
from torch.utils.benchmark import Timer

import barycentric as bc
from barycentric.linalg import sqrtm_psd

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """What a run is asked for: the grid size, the device and where results go."""

    quick: bool
    device: torch.device
    output: Path

    @property
    def min_run_time(self) -> float:
        """Seconds that ``blocked_autorange`` spends on one fast measurement (less on an
        accelerator, whose synchronised timings vary little and whose lease is short)."""
        if self.quick:
            return 0.05
        return 0.5 if self.device.type == "cpu" else 0.2


@dataclass
class CaseResult:
    """What one case hands back to ``run.py``: a summary section, JSON records and plots."""

    name: str
    title: str
    summary: str
    records: list[dict[str, Any]]
    headline: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Measurement:
    """Median wall time of ``runs`` timed calls (warm-up excluded)."""

    median_s: float
    runs: int


def measure(
    fn: Callable[[], T], device: torch.device, min_run_time: float
) -> tuple[Measurement, T]:
    """Median time of ``fn()`` after one warm-up call, whose output is returned.

    ``torch.utils.benchmark.Timer`` synchronises the accelerator around every timed block.
    Calls that take longer than ``min_run_time`` are timed once more instead of being
    auto-ranged, which keeps the slow loops of the full grid affordable.
    """
    synchronize(device)
    start = time.perf_counter()
    output = fn()
    synchronize(device)
    warm_up = time.perf_counter() - start
    timer = Timer(stmt="fn()", globals={"fn": fn})
    if warm_up >= min_run_time:
        return Measurement(timer.timeit(1).median, 1), output
    result = timer.blocked_autorange(min_run_time=min_run_time)
    return Measurement(result.median, len(result.times) * result.number_per_run), output


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, hardware and date that every results file records."""
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "barycentric": bc.__version__,
        "torch": torch.__version__,
        "pot": ot.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "device": str(device),
        # Other processes share the machine: the load average tells how quiet it was.
        "load_average_1min": os.getloadavg()[0],
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def random_spd_problems(
    batch: int, experts: int, dim: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` problems of ``experts`` random Gaussians in ``dim`` dimensions, float64 on CPU.

    Covariances are ``Q diag(λ) Qᵀ`` with ``Q`` Haar-random and ``λ`` log-uniform in
    ``[0.1, 10]``, so the condition number (at most 100) does not grow with ``dim``.

    Returns
    -------
    loc : Tensor, shape (batch, experts, dim)
    cov : Tensor, shape (batch, experts, dim, dim)
    """
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(batch, experts, dim, dim, generator=generator, dtype=torch.float64)
    basis, _ = torch.linalg.qr(gaussian)
    log_eigenvalues = torch.empty(batch, experts, dim, dtype=torch.float64)
    log_eigenvalues.uniform_(math.log(0.1), math.log(10.0), generator=generator)
    cov = (basis * log_eigenvalues.exp().unsqueeze(-2)) @ basis.mT
    loc = torch.randn(batch, experts, dim, generator=generator, dtype=torch.float64)
    return loc, (cov + cov.mT) / 2


def fixed_point_residual(
    bary: torch.Tensor, cov: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The common residual ``‖Σ − Σ_m λ_m (Σ^½ Σ_m Σ^½)^½‖_F / ‖Σ‖_F``, in float64.

    Computed the same way for every solver's output, whatever its iteration and its own
    stopping rule.

    Parameters
    ----------
    bary : Tensor, shape (..., d, d)
    cov : Tensor, shape (..., M, d, d)
    weights : Tensor, shape (..., M), summing to 1
    """
    bary, cov, weights = bary.double(), cov.double(), weights.double()
    root = sqrtm_psd(bary).unsqueeze(-3)
    image = (weights[..., None, None] * sqrtm_psd(root @ cov @ root)).sum(-3)
    return torch.linalg.matrix_norm(bary - image) / torch.linalg.matrix_norm(bary)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def seconds(value: float | None) -> str:
    """A duration with a unit that keeps three significant digits."""
    if value is None or math.isnan(value):
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def speedup(baseline: float, ours: float) -> str:
    """``baseline / ours`` as ``"4.2×"``; below 1 it is marked as a slowdown."""
    ratio = baseline / ours
    text = f"{ratio:.3g}×"
    return text if ratio >= 1 else f"**{text} (slower)**"


def dtype_name(dtype: torch.dtype) -> str:
    """``"float64"`` for ``torch.float64``."""
    return str(dtype).removeprefix("torch.")
