"""ELBOs: known values with a constant decoder, training progress, missing modalities."""

import pytest
import torch
from model import AGGREGATIONS, LIKELIHOOD_SCALE, MultimodalVAE
from objectives import elbo_loss, elbo_terms
from torch import nn
from torch.distributions import Laplace, kl_divergence

LATENT = 4
BATCH = 16  # points in the `dataset` / `xs` fixtures of conftest.py


class ConstantDecoder(nn.Module):
    """Ignores ``z``: every likelihood is the same, so the reconstruction term is exact."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, z):
        return torch.full((len(z), *self.shape), 0.5)


def constant_decoder_model(dataset, aggregation):
    torch.manual_seed(0)
    model = MultimodalVAE(dataset.specs, LATENT, aggregation)
    model.decoders = nn.ModuleList(ConstantDecoder(spec.shape) for spec in dataset.specs)
    return model


def exact_log_likelihoods(xs):
    return torch.stack([Laplace(0.5, LIKELIHOOD_SCALE).log_prob(x).sum((1, 2, 3)) for x in xs], -1)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("all_components", [False, True])
def test_elbo_terms_with_a_constant_decoder(dataset, xs, aggregation, all_components):
    model = constant_decoder_model(dataset, aggregation)
    mask = torch.ones(BATCH, 3, dtype=torch.bool)
    mask[:5, 0] = False
    posterior = model.encode(xs, mask)
    reconstruction, kl = elbo_terms(posterior, model, xs, mask, all_components=all_components)
    torch.testing.assert_close(reconstruction, exact_log_likelihoods(xs) * mask)
    if aggregation in ("poe", "wb"):
        expected_kl = kl_divergence(posterior, model.prior((BATCH,)))
    else:
        components = posterior.component_distribution
        per_component = kl_divergence(components, model.prior(components.batch_shape))
        expected_kl = (posterior.mixture_distribution.probs * per_component).sum(-1)
    torch.testing.assert_close(kl, expected_kl)
    loss, terms = elbo_loss(model, xs, mask, beta=2.0, all_components=all_components)
    expected_loss = -(reconstruction.sum(-1) - 2.0 * kl).mean()
    torch.testing.assert_close(loss, expected_loss)
    assert set(terms) == {"loss", "kl", "rec_m0", "rec_m1", "rec_m2"}


def test_one_component_per_point_is_unbiased_for_all_components(dataset, xs):
    """Averaged over draws, the cheap estimator matches the exact stratified one."""
    torch.manual_seed(0)
    model = MultimodalVAE(dataset.specs, LATENT, "mwb")
    model.decoders = nn.ModuleList(  # linear: cheap to call many times
        nn.Sequential(nn.Linear(LATENT, 16), nn.Unflatten(1, (1, 4, 4))) for _ in range(3)
    )
    with torch.no_grad():
        posterior = model.encode(xs)
        exact = torch.stack(
            [elbo_terms(posterior, model, xs, None, all_components=True)[0] for _ in range(100)]
        ).mean(0)
        sampled = torch.stack([elbo_terms(posterior, model, xs, None)[0] for _ in range(700)])
    standard_error = sampled.std(0) / sampled.shape[0] ** 0.5
    assert ((sampled.mean(0) - exact).abs() < 5 * standard_error + 0.05).all()


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_training_lowers_the_loss(dataset, xs, aggregation):
    torch.manual_seed(0)
    model = MultimodalVAE(dataset.specs, LATENT, aggregation)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, _ = elbo_loss(model, xs)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_missing_modality_gives_a_finite_loss_without_its_reconstruction(dataset, xs, aggregation):
    torch.manual_seed(0)
    model = MultimodalVAE(dataset.specs, LATENT, aggregation)
    mask = torch.tensor([[True, False, True]]).expand(BATCH, 3)
    corrupted = [xs[0], torch.full_like(xs[1], 1e6), xs[2]]
    loss, terms = elbo_loss(model, corrupted, mask)
    assert torch.isfinite(loss)
    assert terms["rec_m1"] == 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
