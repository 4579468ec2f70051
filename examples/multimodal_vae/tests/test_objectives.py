"""ELBOs: known values with a constant decoder, the mixture estimators against the exact
one, training progress, missing modalities."""

import objectives
import pytest
import torch
from model import AGGREGATIONS, LIKELIHOOD_SCALE, MultimodalVAE
from objectives import elbo_loss, elbo_terms, reconstruction_log_probs
from torch import nn
from torch.distributions import (
    Categorical,
    Independent,
    Laplace,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

import barycentric as bc

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
@pytest.mark.parametrize("estimator", ["split", "sample", "all"])
def test_elbo_terms_with_a_constant_decoder(dataset, xs, aggregation, estimator):
    model = constant_decoder_model(dataset, aggregation)
    mask = torch.ones(BATCH, 3, dtype=torch.bool)
    mask[:5, 0] = False
    posterior = model.encode(xs, mask)
    reconstruction, kl = elbo_terms(posterior, model, xs, mask, estimator=estimator)
    torch.testing.assert_close(reconstruction, exact_log_likelihoods(xs) * mask)
    if aggregation in ("poe", "wb"):
        expected_kl = kl_divergence(posterior, model.prior((BATCH,)))
    else:
        components = posterior.component_distribution
        per_component = kl_divergence(components, model.prior(components.batch_shape))
        expected_kl = (posterior.mixture_distribution.probs * per_component).sum(-1)
    torch.testing.assert_close(kl, expected_kl)
    loss, terms = elbo_loss(model, xs, mask, beta=2.0, estimator=estimator)
    expected_loss = -(reconstruction.sum(-1) - 2.0 * kl).mean()
    torch.testing.assert_close(loss, expected_loss)
    assert set(terms) == {"loss", "kl", "rec_m0", "rec_m1", "rec_m2"}


def linear_decoder_model(dataset, aggregation):
    torch.manual_seed(0)
    model = MultimodalVAE(dataset.specs, LATENT, aggregation)
    model.decoders = nn.ModuleList(  # linear: cheap to call many times
        nn.Sequential(nn.Linear(LATENT, 16), nn.Unflatten(1, (1, 4, 4))) for _ in range(3)
    )
    return model


def test_one_component_per_point_is_unbiased_for_all_components(dataset, xs):
    """Averaged over draws, one component per point drawn from ``π`` ("sample") matches
    the exact stratified estimator ("all")."""
    model = linear_decoder_model(dataset, "mwb")
    with torch.no_grad():
        posterior = model.encode(xs)
        exact = torch.stack(
            [elbo_terms(posterior, model, xs, None, estimator="all")[0] for _ in range(100)]
        ).mean(0)
        sampled = torch.stack(
            [elbo_terms(posterior, model, xs, None, estimator="sample")[0] for _ in range(700)]
        )
    standard_error = sampled.std(0) / sampled.shape[0] ** 0.5
    assert ((sampled.mean(0) - exact).abs() < 5 * standard_error + 0.05).all()


MIXTURES = ("moe", "mopoe", "mwb")


def subsets_of(aggregation):
    """Which of the ``M = 3`` modalities each component of ``aggregation`` joins, (S, 3)."""
    return bc.functional.subset_masks("singletons" if aggregation == "moe" else "all", 3)


@pytest.mark.parametrize("aggregation", MIXTURES)
def test_split_shares_the_batch_by_the_weights(dataset, xs, aggregation):
    """Rows that share their weights ``π``: component ``s`` takes ``n_s`` of the ``B`` rows,
    ``|n_s - B π_s| < 1`` (16 rows, 3 or 7 components: no share is an integer)."""
    model = constant_decoder_model(dataset, aggregation)
    posterior = model.encode(xs)
    _, component = objectives.split_draws(posterior)
    weights = posterior.mixture_distribution.probs
    torch.testing.assert_close(weights, weights[:1].expand_as(weights), rtol=0, atol=0)
    shares = torch.bincount(component, minlength=weights.shape[-1])
    assert ((shares - BATCH * weights[0]).abs() < 1).all()


@pytest.mark.parametrize("aggregation", MIXTURES)
def test_split_never_draws_a_component_of_missing_modalities_and_is_what_elbo_terms_decodes(
    dataset, xs, aggregation
):
    model = linear_decoder_model(dataset, aggregation)
    mask = torch.ones(BATCH, 3, dtype=torch.bool)
    mask[:4, 0] = mask[4:8, :2] = mask[8:10, 1:] = False  # 1, 2 or 0 missing per row
    posterior = model.encode(xs, mask)
    weights = posterior.mixture_distribution.probs
    with torch.random.fork_rng():
        z, component = objectives.split_draws(posterior)
    assert (weights.gather(-1, component[:, None]) > 0).all()
    assert (subsets_of(aggregation)[component] & mask).any(-1).all()
    with torch.random.fork_rng():
        reconstruction, _ = elbo_terms(posterior, model, xs, mask, estimator="split")
    torch.testing.assert_close(reconstruction, reconstruction_log_probs(model, z, xs, mask))


def reordered(posterior, order):
    """The mixture ``posterior`` (batch ``(B,)``) with its rows in ``order``."""
    components = posterior.component_distribution.base_dist
    return MixtureSameFamily(
        Categorical(posterior.mixture_distribution.probs[order]),
        Independent(Normal(components.loc[order], components.scale[order]), 1),
    )


def test_split_averaged_over_row_orders_is_unbiased_for_all_components(dataset, xs):
    """MoPoE's split over a shuffled batch matches the exact stratified estimator.

    14 rows and 7 subsets: each takes 2 rows, exactly ``B π_s``, so the split averaged
    over uniformly random row orders gives each row each component with probability
    ``π_s``, the "all" estimator's weights (with ``B π_s`` not integers, ``n_s / B``
    instead, ``|n_s / B - π_s| < 1 / B``). The experts are far apart and narrow (means
    ``N(0, 1)``, standard deviation 0.1), so that the components' terms differ by many
    standard errors: shares of 3, 3, 2, 2, 2, 1, 1 rows instead of 2 each miss by 6-9 of
    them, one component for every row by 50. Both sides are Monte Carlo means (700 row
    orders; 100 draws of every component): they agree within 5 standard errors of their
    difference (2-3 seen).
    """
    model = linear_decoder_model(dataset, "mopoe")
    rows = 14
    batch = [x[:rows] for x in xs]
    experts = Independent(
        Normal(torch.randn(rows, 3, LATENT), torch.full((rows, 3, LATENT), 0.1)), 1
    )
    with torch.no_grad():
        posterior = model.aggregate(experts)
        exact = torch.stack(
            [elbo_terms(posterior, model, batch, None, estimator="all")[0] for _ in range(100)]
        )
        split = []
        for _ in range(700):
            order = torch.randperm(rows)
            shuffled = [x[order] for x in batch]
            estimate, _ = elbo_terms(
                reordered(posterior, order), model, shuffled, None, estimator="split"
            )
            split.append(torch.empty_like(estimate).index_copy_(0, order, estimate))
        split = torch.stack(split)
    standard_error = (split.var(0) / split.shape[0] + exact.var(0) / exact.shape[0]).sqrt()
    assert ((split.mean(0) - exact.mean(0)).abs() < 5 * standard_error).all()


def test_an_unknown_estimator_is_refused(dataset, xs):
    model = constant_decoder_model(dataset, "poe")
    with pytest.raises(ValueError, match="estimator must be one of split, sample, all; got 'one'"):
        elbo_loss(model, xs, estimator="one")


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
