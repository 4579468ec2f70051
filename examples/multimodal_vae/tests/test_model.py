"""The multimodal VAE: aggregations, shapes, missing modalities, likelihoods."""

import pytest
import torch
from model import AGGREGATIONS, LIKELIHOOD_SCALE, MultimodalVAE
from torch.distributions import Independent, Laplace, MixtureSameFamily

from barycentric.functional import subset_masks

LATENT = 4
BATCH = 6  # points in the `dataset` / `xs` fixtures of conftest.py


def make_model(dataset, aggregation, **kwargs):
    torch.manual_seed(0)
    return MultimodalVAE(dataset.specs, LATENT, aggregation, **kwargs)


def test_aggregations_are_the_papers_five():
    assert AGGREGATIONS == ("poe", "moe", "mopoe", "wb", "mwb")


def test_unknown_aggregation_lists_the_valid_ones(dataset):
    with pytest.raises(ValueError, match="poe, moe, mopoe, wb, mwb"):
        MultimodalVAE(dataset.specs, LATENT, "average")


@pytest.mark.parametrize(
    ("aggregation", "family", "components"),
    [
        ("poe", Independent, None),
        ("wb", Independent, None),
        ("moe", MixtureSameFamily, 3),
        ("mopoe", MixtureSameFamily, 7),
        ("mwb", MixtureSameFamily, 7),
    ],
)
def test_posterior_family_and_shapes(dataset, xs, aggregation, family, components):
    posterior = make_model(dataset, aggregation).encode(xs)
    assert isinstance(posterior, family)
    assert posterior.batch_shape == (BATCH,)
    assert posterior.event_shape == (LATENT,)
    if components is not None:
        assert posterior.mixture_distribution.probs.shape == (BATCH, components)


def test_product_of_experts_includes_the_prior(dataset, xs):
    model = make_model(dataset, "poe")
    experts = model.experts(xs)
    precision = 1 + experts.base_dist.scale.pow(-2).sum(-2)
    torch.testing.assert_close(model.encode(xs).variance, precision.reciprocal())


def _assert_subset_mixture(posterior, mean, variance, present):
    """``posterior`` has the components ``(mean, variance)`` ``(B, S, d)`` where ``present
    (B, S)``, N(0, I) elsewhere, and mixes the present ones uniformly."""
    components = posterior.component_distribution
    torch.testing.assert_close(components.mean[present], mean[present])
    torch.testing.assert_close(components.variance[present], variance[present])
    torch.testing.assert_close(
        posterior.mixture_distribution.probs, present / present.sum(-1, True)
    )
    absent = int((~present).sum())
    torch.testing.assert_close(components.mean[~present], torch.zeros(absent, LATENT))
    torch.testing.assert_close(components.variance[~present], torch.ones(absent, LATENT))


def _products(experts, observed, prior):
    """Precision-weighted products of the experts in each row of ``observed (B, S, M)``,
    times N(0, I) where ``prior (B, S)``: their means and variances, ``(B, S, d)``."""
    precision = experts.base_dist.scale.pow(-2).unsqueeze(-3) * observed.unsqueeze(-1)
    weighted = (precision * experts.base_dist.loc.unsqueeze(-3)).sum(-2)
    precision = precision.sum(-2) + prior.unsqueeze(-1)
    return weighted / precision, precision.reciprocal()


def test_mopoe_multiplies_the_experts_of_each_subset_and_the_prior_on_the_full_set(dataset, xs):
    model = make_model(dataset, "mopoe")
    experts = model.experts(xs)
    members = subset_masks("all", 3)
    observed = members.expand(BATCH, 7, 3)
    mean, variance = _products(experts, observed, members.all(-1).expand(BATCH, 7).float())
    posterior = model.encode(xs)
    torch.testing.assert_close(posterior.component_distribution.mean, mean)
    torch.testing.assert_close(posterior.component_distribution.variance, variance)
    torch.testing.assert_close(posterior.mixture_distribution.probs, torch.full((BATCH, 7), 1 / 7))


def test_mopoe_with_a_missing_modality_multiplies_the_observed_experts_without_the_prior(
    dataset, xs
):
    model = make_model(dataset, "mopoe")
    experts = model.experts(xs)
    mask = torch.tensor([[True, False, True]]).expand(BATCH, 3)
    observed = subset_masks("all", 3) & mask.unsqueeze(-2)
    present = observed.any(-1)  # all but the singleton {1}
    mean, variance = _products(experts, observed, torch.zeros(BATCH, 7))
    # {1} keeps the prior alone as its placeholder, with weight 0
    _assert_subset_mixture(model.encode(xs, mask), mean, variance, present)


def test_mopoe_is_sutter_et_al_s_closed_form_row_by_row(dataset, xs):
    """Rows with every modality, one or two missing: each subset's product of its observed
    experts, the prior in the full set's alone and only where nothing is missing (the
    closed form of the example's own MoPoE before it called the library)."""
    model = make_model(dataset, "mopoe")
    experts = model.experts(xs)
    mask = torch.tensor([[True] * 3, [True, False, True], [False, False, True]] * 2)
    members = subset_masks("all", 3)
    observed = members & mask.unsqueeze(-2)
    present = observed.any(-1)
    mean, variance = _products(experts, observed, (members.all(-1) & observed.all(-1)).float())
    _assert_subset_mixture(model.encode(xs, mask), mean, variance, present)


def test_wasserstein_barycenter_of_diagonal_experts_averages_loc_and_scale(dataset, xs):
    model = make_model(dataset, "wb")
    experts = model.experts(xs)
    posterior = model.encode(xs)
    torch.testing.assert_close(posterior.mean, experts.base_dist.loc.mean(-2))
    torch.testing.assert_close(posterior.stddev, experts.base_dist.scale.mean(-2))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_posterior_ignores_a_missing_modalitys_input(dataset, xs, aggregation):
    model = make_model(dataset, aggregation)
    mask = torch.ones(BATCH, 3, dtype=torch.bool)
    mask[::2, 1] = False  # modality 1 missing in every other row
    changed = list(xs)
    changed[1] = torch.where(mask[:, 1, None, None, None], xs[1], torch.rand_like(xs[1]) * 50)
    before, after = model.encode(xs, mask), model.encode(changed, mask)
    assert torch.isfinite(after.mean).all() and torch.isfinite(after.variance).all()
    torch.testing.assert_close(after.mean, before.mean)
    torch.testing.assert_close(after.variance, before.variance)
    # ... while an observed modality's input does change it
    observed = list(xs)
    observed[1] = torch.rand_like(xs[1])
    assert not torch.allclose(model.encode(observed, mask).mean[1::2], before.mean[1::2])


@pytest.mark.parametrize("aggregation", ["moe", "mopoe", "mwb"])
def test_mixtures_give_no_weight_to_subsets_of_missing_modalities(dataset, xs, aggregation):
    mask = torch.tensor([[True, False, True]]).expand(BATCH, 3)
    probs = make_model(dataset, aggregation).encode(xs, mask).mixture_distribution.probs
    assert (probs[:, 1] == 0).all()  # the singleton {1} (moe: expert 1)
    torch.testing.assert_close(probs.sum(-1), torch.ones(BATCH))


def test_decode_keeps_leading_dims_and_uses_the_specs_likelihood(dataset):
    model = make_model(dataset, "wb")
    z = torch.randn(2, BATCH, 5, LATENT)
    likelihoods = model.decode(z)
    assert len(likelihoods) == 3
    for likelihood in likelihoods:
        assert isinstance(likelihood.base_dist, Laplace)
        assert likelihood.batch_shape == (2, BATCH, 5)
        assert likelihood.event_shape == (1, 4, 4)
        assert (likelihood.base_dist.scale == LIKELIHOOD_SCALE).all()


def test_likelihood_override_changes_the_decoder_output(dataset, xs):
    model = make_model(dataset, "wb", likelihoods={"m1": "bernoulli"})
    assert [spec.likelihood for spec in model.specs] == ["laplace", "bernoulli", "laplace"]
    likelihood = model.decode(torch.randn(BATCH, LATENT))[1]
    assert torch.isfinite(likelihood.log_prob(xs[1])).all()


@pytest.mark.parametrize(
    ("likelihoods", "message"),
    [({"m9": "laplace"}, "unknown modalities"), ({"m0": "poisson"}, "likelihood must be")],
)
def test_bad_likelihood_override(dataset, likelihoods, message):
    with pytest.raises(ValueError, match=message):
        make_model(dataset, "wb", likelihoods=likelihoods)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_generation_shapes(dataset, xs, aggregation):
    model = make_model(dataset, aggregation)
    assert [x.shape for x in model.generate(5)] == [(5, 1, 4, 4)] * 3
    mask = torch.tensor([[True, False, False]]).expand(BATCH, 3)
    generated = model.cond_generate(xs, mask)
    assert [x.shape for x in generated] == [x.shape for x in xs]
    assert all(((0 <= x) & (x <= 1)).all() for x in generated)
