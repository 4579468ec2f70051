"""Case 5: training throughput of the multimodal VAE for each aggregation.

One training step of ``examples/multimodal_vae`` (``MultimodalVAE`` + ``elbo_loss`` + Adam,
the configuration of ``configs/polymnist.json``: latent 512, β 2.5, lr 5e-4) on
PolyMNIST-shaped data, 5 modalities of 3×28×28 in [0, 1] (random pixels: the step's cost
does not depend on their values). Reported: samples per second of the full step, and the
share of it spent in the aggregation, timed alone (forward + backward of the model's own
aggregation call on experts of the same shape, ``latent`` means and scales requiring grad).
Mixture aggregations (moe, mopoe, mwb) are trained with ``elbo_loss``'s default estimator
for mixtures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Distribution, Independent, MixtureSameFamily, Normal

from .common import CaseResult, Settings, markdown_table, measure, seconds

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multimodal_vae"
MODALITIES = 5
IMAGE_SHAPE = (3, 28, 28)


def _import_example() -> tuple[Any, Any, Any, dict[str, Any]]:
    """``MultimodalVAE``, ``elbo_loss``, ``ModalitySpec`` and the PolyMNIST config."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    from data import ModalitySpec
    from model import AGGREGATIONS, MultimodalVAE
    from objectives import elbo_loss

    config = json.loads((EXAMPLE / "configs" / "polymnist.json").read_text())
    config["aggregations"] = AGGREGATIONS
    return MultimodalVAE, elbo_loss, ModalitySpec, config


def _parameters(posterior: Distribution) -> torch.Tensor:
    components = (
        posterior.component_distribution if isinstance(posterior, MixtureSameFamily) else posterior
    )
    return components.mean.sum() + components.stddev.sum()


def run(settings: Settings) -> CaseResult:
    """One step per aggregation; the aggregation timed on its own on the same shapes."""
    vae_class, elbo_loss, spec_class, config = _import_example()
    batch = 8 if settings.quick else config["batch_size"]
    latent = config["latent_dim"]
    specs = [spec_class(f"m{m}", "image", IMAGE_SHAPE, "laplace") for m in range(MODALITIES)]
    generator = torch.Generator().manual_seed(5)
    xs = [torch.rand(batch, *IMAGE_SHAPE, generator=generator).to(settings.device) for _ in specs]
    loc = torch.randn(batch, MODALITIES, latent, generator=generator).to(settings.device)
    scale = (torch.rand(batch, MODALITIES, latent, generator=generator) + 0.1).to(settings.device)
    records = []
    for aggregation in config["aggregations"]:
        torch.manual_seed(0)
        model = vae_class(specs, latent, aggregation).to(settings.device)
        optimiser = torch.optim.Adam(model.parameters(), lr=config["lr"])

        def step(model: Any = model, optimiser: torch.optim.Optimizer = optimiser) -> None:
            optimiser.zero_grad()
            loss, _ = elbo_loss(model, xs, beta=config["beta"])
            loss.backward()
            optimiser.step()

        # The model's own aggregation call, so the share is of exactly what training runs.
        def aggregate(model: Any = model) -> None:
            experts = Independent(
                Normal(loc.clone().requires_grad_(), scale.clone().requires_grad_()), 1
            )
            _parameters(model._aggregate(experts, None)).backward()

        step_time, _ = measure(step, settings.device, settings.min_run_time)
        aggregation_time, _ = measure(aggregate, settings.device, settings.min_run_time)
        records.append(
            {
                "aggregation": aggregation,
                "batch": batch,
                "latent_dim": latent,
                "step_s": step_time.median_s,
                "samples_per_s": batch / step_time.median_s,
                "aggregation_s": aggregation_time.median_s,
                "aggregation_share": aggregation_time.median_s / step_time.median_s,
            }
        )
        print(f"  vae_step {aggregation}: {seconds(step_time.median_s)}", flush=True)
    rows = [
        [
            r["aggregation"],
            seconds(r["step_s"]),
            f"{r['samples_per_s']:.3g}",
            seconds(r["aggregation_s"]),
            f"{100 * r['aggregation_share']:.2g} %",
        ]
        for r in records
    ]
    summary = "\n\n".join(
        [
            f"`examples/multimodal_vae` `MultimodalVAE` + `elbo_loss` + Adam, batch {batch}, "
            f"latent {latent}, {MODALITIES} modalities of {'×'.join(map(str, IMAGE_SHAPE))} "
            "(MoPoE's PolyMNIST networks). *Aggregation*: forward + backward of the "
            "aggregation alone on experts of the same shape; its share is of the step time.",
            markdown_table(
                ["aggregation", "step", "samples/s", "aggregation", "share of step"], rows
            ),
        ]
    )
    headline = "VAE step samples/s: " + ", ".join(
        f"{r['aggregation']} {r['samples_per_s']:.3g} "
        f"(aggregation {100 * r['aggregation_share']:.2g} %)"
        for r in records
    )
    return CaseResult(
        "vae_step", "5. Multimodal VAE training throughput", summary, records, [headline]
    )
