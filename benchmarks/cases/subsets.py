"""Case 3: mixtures over all 2^M − 1 subsets (MoPoE, MWB) in one call vs a loop over subsets.

Ours: ``bc.mixture_of_barycenters(experts, "all", divergence=...)``, the subsets a boolean
matrix multiplied into the weights. Baseline: what one writes without it, a Python loop
calling ``bc.wasserstein_barycenter`` (or ``bc.kl_barycenter(direction="reverse")``) with
``mask`` set to each subset, then stacking the results into the same
``MixtureSameFamily``. Both outputs are checked to agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

import barycentric as bc
from barycentric.functional import subset_masks

from .common import CaseResult, Settings, markdown_table, measure, seconds, speedup

DIVERGENCES: dict[str, Callable[..., Distribution]] = {
    "wasserstein": bc.wasserstein_barycenter,
    "reverse_kl": lambda experts, mask: bc.kl_barycenter(experts, direction="reverse", mask=mask),
}


def _loop_over_subsets(experts: Independent, divergence: str) -> MixtureSameFamily:
    members = subset_masks("all", experts.batch_shape[-1], experts.mean.device)
    barycenters = [DIVERGENCES[divergence](experts, mask=subset) for subset in members]
    loc = torch.stack([b.mean for b in barycenters], -2)
    scale = torch.stack([b.stddev for b in barycenters], -2)
    probs = torch.full(loc.shape[:-1], 1 / len(barycenters), dtype=loc.dtype, device=loc.device)
    return MixtureSameFamily(Categorical(probs=probs), Independent(Normal(loc, scale), 1))


def _compare(
    batch: int, experts_count: int, dim: int, divergence: str, settings: Settings
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(experts_count)
    loc = torch.randn(batch, experts_count, dim, generator=generator)
    scale = torch.rand(batch, experts_count, dim, generator=generator) + 0.1
    experts = Independent(Normal(loc.to(settings.device), scale.to(settings.device)), 1)
    ours_time, ours = measure(
        lambda: bc.mixture_of_barycenters(experts, "all", divergence=divergence),
        settings.device,
        settings.min_run_time,
    )
    loop_time, loop = measure(
        lambda: _loop_over_subsets(experts, divergence), settings.device, settings.min_run_time
    )
    ours_components, loop_components = ours.component_distribution, loop.component_distribution
    difference = max(
        (ours_components.mean - loop_components.mean).abs().max().item(),
        (ours_components.stddev - loop_components.stddev).abs().max().item(),
    )
    return {
        "batch": batch,
        "experts": experts_count,
        "subsets": 2**experts_count - 1,
        "dim": dim,
        "divergence": divergence,
        "dtype": "float32",
        "ours_s": ours_time.median_s,
        "loop_s": loop_time.median_s,
        "max_abs_difference": difference,
    }


def run(settings: Settings) -> CaseResult:
    """M = 5 and 10 experts (31 and 1,023 subsets), both divergences."""
    batch, dim, expert_counts = (64, 16, (3, 5)) if settings.quick else (256, 64, (5, 10))
    records = [
        _compare(batch, m, dim, divergence, settings)
        for m in expert_counts
        for divergence in DIVERGENCES
    ]
    rows = [
        [
            r["batch"],
            r["experts"],
            r["subsets"],
            r["dim"],
            r["divergence"],
            seconds(r["ours_s"]),
            seconds(r["loop_s"]),
            speedup(r["loop_s"], r["ours_s"]),
            f"{r['max_abs_difference']:.1e}",
        ]
        for r in records
    ]
    lead = next(r for r in records if r["experts"] == 5 and r["divergence"] == "wasserstein")
    headline = (
        f"Mixture of W2 barycenters over all {lead['subsets']} subsets, M={lead['experts']}, "
        f"d={lead['dim']}, B={lead['batch']}, diagonal, float32: ours {seconds(lead['ours_s'])} vs "
        f"loop over subsets {seconds(lead['loop_s'])} ({speedup(lead['loop_s'], lead['ours_s'])})"
    )
    summary = "\n\n".join(
        [
            "Diagonal experts (`Independent(Normal)`), float32, uniform weights. *Loop*: one "
            '`bc.wasserstein_barycenter` / `bc.kl_barycenter(direction="reverse")` call per '
            "subset with `mask`, stacked into the same `MixtureSameFamily`. *Max abs difference*: "
            "largest difference of the component means and standard deviations of the two.",
            markdown_table(
                [
                    "B",
                    "M",
                    "subsets",
                    "d",
                    "divergence",
                    "ours",
                    "loop",
                    "speedup",
                    "max abs difference",
                ],
                rows,
            ),
        ]
    )
    return CaseResult(
        "subsets", "3. Mixtures over subsets vs a loop over subsets", summary, records, [headline]
    )
