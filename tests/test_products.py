"""MoPoE: mixtures over subsets of products of experts, and the split estimator
(:func:`barycentric.mixture_of_products`, :func:`barycentric.split_rsample`)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from helpers import (
    FAMILIES,
    assert_empty_concatenates,
    diagonal,
    full,
    params,
    random_experts,
    rebuild,
    rows,
    validation,  # noqa: F401 (a fixture)
)
from torch.distributions import Categorical, Independent, Laplace, MixtureSameFamily, Normal

import barycentric as bc
from barycentric.functional import subset_masks

M, D, B = 3, 2, 2
MASK = torch.tensor([[True, False, True], [False, False, True]])


def _covariances(experts) -> torch.Tensor:
    loc, spread = params(experts)
    return spread if spread.ndim > loc.ndim else torch.diag_embed(spread.square())


def _prior(family: str, generator: torch.Generator):
    """A non-standard prior of batch ``(B,)``, so that its mean and precision both count."""
    return random_experts(generator, family, D, (B,))


def _oracle(experts, members, mask, prior):
    """Means ``(B, S, d)``, covariances ``(B, S, d, d)`` and mixing weights ``(B, S)`` by
    explicit inverses, one row and one subset at a time."""
    loc, cov = experts.mean, _covariances(experts)
    if prior is not None:
        prior_loc, prior_cov = prior.mean, _covariances(prior)
    means, covs, weights = [], [], []
    for row in range(loc.shape[0]):
        for subset in members:
            chosen = (subset & mask[row]).nonzero().squeeze(-1).tolist()
            precision = torch.zeros(D, D, dtype=loc.dtype)
            information = torch.zeros(D, dtype=loc.dtype)
            for m in chosen:
                inverse = torch.linalg.inv(cov[row, m])
                precision += inverse
                information += inverse @ loc[row, m]
            if prior is not None:
                inverse = torch.linalg.inv(prior_cov[row])
                precision += inverse
                information += inverse @ prior_loc[row]
            if chosen or prior is not None:
                product_cov = torch.linalg.inv(precision)
                means.append(product_cov @ information)
                covs.append(product_cov)
            else:
                means.append(torch.zeros(D, dtype=loc.dtype))
                covs.append(torch.eye(D, dtype=loc.dtype))
            weights.append(float(bool(chosen)))
    shape = (loc.shape[0], len(members))
    weights = torch.tensor(weights, dtype=loc.dtype).reshape(shape)
    return (
        torch.stack(means).reshape(*shape, D),
        torch.stack(covs).reshape(*shape, D, D),
        weights / weights.sum(-1, keepdim=True),
    )


def test_closed_form_by_hand() -> None:
    # N(0, 1), N(2, 4), N(-1, 1/2); prior N(1, 2): precisions 1, 1/4, 2 and 1/2
    experts = diagonal(
        torch.tensor([[0.0], [2.0], [-1.0]], dtype=torch.float64),
        torch.tensor([[1.0], [2.0], [0.5**0.5]], dtype=torch.float64),
    )
    prior = diagonal(torch.ones(1, dtype=torch.float64), torch.full((1,), 2.0**0.5))
    # subsets {0}, {1}, {2}, {0,1}, {0,2}, {1,2}, {0,1,2}
    precision = torch.tensor([1, 1 / 4, 2, 5 / 4, 3, 9 / 4, 13 / 4], dtype=torch.float64)
    information = torch.tensor([0, 1 / 2, -2, 1 / 2, -2, -3 / 2, -3 / 2], dtype=torch.float64)
    plain = bc.mixture_of_products(experts).component_distribution
    torch.testing.assert_close(plain.variance[:, 0], 1 / precision)
    torch.testing.assert_close(plain.mean[:, 0], information / precision)
    with_prior = bc.mixture_of_products(experts, prior=prior).component_distribution
    torch.testing.assert_close(with_prior.variance[:, 0], 1 / (precision + 1 / 2))
    torch.testing.assert_close(with_prior.mean[:, 0], (information + 1 / 2) / (precision + 1 / 2))
    # without expert 1: {1} is empty (weight 0, the prior alone), {0,1} is {0}, ...
    masked = bc.mixture_of_products(experts, mask=torch.tensor([True, False, True]), prior=prior)
    kept = torch.tensor([1, 0, 2, 1, 3, 2, 3 + 0.0], dtype=torch.float64)
    kept_information = torch.tensor([0, 0, -2, 0, -2, -2, -2], dtype=torch.float64)
    torch.testing.assert_close(masked.component_distribution.variance[:, 0], 1 / (kept + 1 / 2))
    torch.testing.assert_close(
        masked.component_distribution.mean[:, 0], (kept_information + 1 / 2) / (kept + 1 / 2)
    )
    torch.testing.assert_close(
        masked.mixture_distribution.probs,
        torch.tensor([1, 0, 1, 1, 1, 1, 1], dtype=torch.float64) / 6,
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_prior", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_every_subset_is_the_closed_form_product(family, with_prior, masked, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    prior = _prior(family, generator) if with_prior else None
    mask = MASK if masked else torch.ones(B, M, dtype=torch.bool)
    mixture = bc.mixture_of_products(experts, mask=mask if masked else None, prior=prior)
    loc, cov, weights = _oracle(experts, subset_masks("all", M), mask, prior)
    components = mixture.component_distribution
    torch.testing.assert_close(components.mean, loc)
    torch.testing.assert_close(_covariances(components), cov)
    torch.testing.assert_close(mixture.mixture_distribution.probs, weights)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_prior", [False, True])
def test_each_component_is_product_of_experts_of_its_subset(family, with_prior, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    prior = _prior(family, generator) if with_prior else None
    members = subset_masks("all", M)
    mixture = bc.mixture_of_products(experts, mask=MASK, prior=prior)
    components = mixture.component_distribution
    for s, subset in enumerate(members):
        present = (subset & MASK).any(-1)
        if not with_prior:  # product_of_experts refuses a row without experts
            present_rows = present.nonzero().squeeze(-1)
            alone = bc.product_of_experts(rows(experts, present_rows), mask=subset & MASK[present])
        else:
            present_rows = torch.arange(B)
            alone = bc.product_of_experts(experts, mask=subset & MASK, prior=prior)
        torch.testing.assert_close(components.mean[present_rows, s], alone.mean)
        torch.testing.assert_close(params(components)[1][present_rows, s], params(alone)[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_permuting_experts_and_subset_columns_changes_nothing(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    prior = _prior(family, generator)
    permutation = torch.tensor([2, 0, 1])
    loc, spread = params(experts)
    axis = -2 if family == "diag" else -3
    permuted = rebuild(experts, loc[:, permutation], spread.index_select(axis, permutation))
    members = subset_masks("all", M)
    before = bc.mixture_of_products(experts, members, mask=MASK, prior=prior)
    after = bc.mixture_of_products(
        permuted, members[:, permutation], mask=MASK[:, permutation], prior=prior
    )
    torch.testing.assert_close(after.mixture_distribution.probs, before.mixture_distribution.probs)
    for a, b in zip(
        params(after.component_distribution), params(before.component_distribution), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_products_sharpen_where_the_reverse_kl_barycenter_does_not(generator) -> None:
    # M identical experts: the product of k of them has variance σ²/k, their barycenter σ²
    loc = torch.randn(1, 1, D, dtype=torch.float64, generator=generator).expand(1, M, D)
    experts = diagonal(loc, torch.full((1, M, D), 3.0, dtype=torch.float64))
    sizes = subset_masks("all", M).sum(-1).double()
    products = bc.mixture_of_products(experts).component_distribution
    torch.testing.assert_close(products.variance, 9.0 / sizes[None, :, None].expand(1, -1, D))
    barycenters = bc.mixture_of_barycenters(experts, divergence="reverse_kl")
    torch.testing.assert_close(
        barycenters.component_distribution.variance, torch.full((1, 7, D), 9.0, dtype=torch.float64)
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_absent_subsets_hold_the_prior_or_the_standard_normal(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    loc, spread = params(experts)
    garbage = rebuild(experts, torch.where(MASK[..., None], loc, torch.nan), spread, False)
    absent = ~(subset_masks("all", M) & MASK.unsqueeze(-2)).any(-1)
    assert absent.sum() == 1 + 3  # {1} in row 0; {0}, {1}, {0, 1} in row 1
    plain = bc.mixture_of_products(garbage, mask=MASK)
    assert bool((plain.mixture_distribution.probs[absent] == 0).all())
    absent_loc, absent_spread = (t[absent] for t in params(plain.component_distribution))
    torch.testing.assert_close(absent_loc, torch.zeros_like(absent_loc))
    unit = torch.eye(D, dtype=loc.dtype) if family == "full" else torch.ones(D, dtype=loc.dtype)
    torch.testing.assert_close(absent_spread, unit.expand_as(absent_spread))
    prior = _prior(family, generator)
    with_prior = bc.mixture_of_products(garbage, mask=MASK, prior=prior)
    prior_rows = absent.nonzero()[:, 0]
    torch.testing.assert_close(
        with_prior.component_distribution.mean[absent], prior.mean[prior_rows]
    )
    torch.testing.assert_close(
        params(with_prior.component_distribution)[1][absent], params(prior)[1][prior_rows]
    )
    for mixture in (plain, with_prior):
        assert all(bool(torch.isfinite(t).all()) for t in params(mixture.component_distribution))


@pytest.mark.parametrize("size", [1e-25, 1e25])
def test_extreme_scales_with_absent_subsets(size, generator) -> None:
    # float32 squares of 1e±25 leave its range: the products are taken relative to a power
    # of two, and the absent subsets still hold the standard normal
    experts = random_experts(generator, "diag", D, (B, M))
    scale = experts.stddev * size
    single = bc.mixture_of_products(diagonal(experts.mean.float(), scale.float()), mask=MASK)
    double = bc.mixture_of_products(diagonal(experts.mean, scale), mask=MASK)
    present = (subset_masks("all", M) & MASK.unsqueeze(-2)).any(-1)
    for a, b in zip(
        params(single.component_distribution), params(double.component_distribution), strict=True
    ):
        torch.testing.assert_close(a[present], b[present].float(), rtol=1e-5, atol=0.0)
    absent_loc, absent_scale = (t[~present] for t in params(single.component_distribution))
    assert bool((absent_loc == 0).all()) and bool((absent_scale == 1).all())


@pytest.mark.parametrize(
    "subsets",
    [
        [[True, False, True], [False, True, True]],
        np.array([[True, False, True], [False, True, True]]),
        torch.tensor([[True, False, True], [False, True, True]]),
    ],
    ids=["list", "numpy", "tensor"],
)
def test_subsets_as_nested_list_array_or_tensor(subsets, generator) -> None:
    experts = random_experts(generator, "diag", D, (B, M))
    mixture = bc.mixture_of_products(experts, subsets)
    expected = [
        bc.product_of_experts(experts, mask=torch.tensor(row)) for row in np.asarray(subsets)
    ]
    torch.testing.assert_close(
        mixture.component_distribution.mean, torch.stack([e.mean for e in expected], -2)
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_experts_along_dim_0_and_as_a_sequence(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    loc, spread = params(experts)
    axis = -2 if family == "diag" else -3
    front = rebuild(experts, loc.movedim(-2, 0), spread.movedim(axis, 0))
    sequence = [rebuild(experts, loc[:, m], spread.select(axis, m)) for m in range(M)]
    last = bc.mixture_of_products(experts, mask=MASK)
    for other in (
        bc.mixture_of_products(front, dim=0, mask=MASK.T),
        bc.mixture_of_products(sequence, mask=MASK),
    ):
        torch.testing.assert_close(
            other.mixture_distribution.probs, last.mixture_distribution.probs
        )
        for a, b in zip(
            params(other.component_distribution), params(last.component_distribution), strict=True
        ):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_agrees_with_float64(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    prior = _prior(family, generator)
    single = bc.mixture_of_products(
        rebuild(experts, *(t.float() for t in params(experts))),
        mask=MASK,
        prior=rebuild(prior, *(t.float() for t in params(prior))),
    )
    double = bc.mixture_of_products(experts, mask=MASK, prior=prior)
    for a, b in zip(
        params(single.component_distribution), params(double.component_distribution), strict=True
    ):
        assert a.dtype == torch.float32
        # the covariances' condition number, 1e3, times float32's rounding, 6e-8, with room
        torch.testing.assert_close(a, b.float(), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck_mixture_of_products(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    prior = _prior(family, generator)

    def factor(dist):
        spread = params(dist)[1]
        return spread if family == "diag" else torch.linalg.cholesky(spread)

    def build(loc, factor):
        return diagonal(loc, factor) if family == "diag" else full(loc, factor @ factor.mT)

    def products(loc, spread, prior_loc, prior_spread):
        mixture = bc.mixture_of_products(
            build(loc, spread), mask=MASK, prior=build(prior_loc, prior_spread)
        )
        return mixture.component_distribution.mean, params(mixture.component_distribution)[1]

    inputs = tuple(
        t.detach().clone().requires_grad_()
        for t in (experts.mean, factor(experts), prior.mean, factor(prior))
    )
    assert torch.autograd.gradcheck(products, inputs)


def test_no_gradient_reaches_an_absent_expert(generator) -> None:
    experts = random_experts(generator, "diag", D, (B, M))
    loc = experts.mean.clone().requires_grad_()
    mixture = bc.mixture_of_products(diagonal(loc, experts.stddev), mask=MASK)
    mixture.component_distribution.mean.sum().backward()
    assert bool((loc.grad[~MASK] == 0).all()) and bool((loc.grad[MASK] != 0).all())


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize("family", FAMILIES)
def test_empty_batch_gives_an_empty_mixture(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    prior = _prior(family, generator)
    whole = bc.mixture_of_products(experts, mask=MASK, prior=prior)
    empty = bc.mixture_of_products(
        rows(experts, slice(0, 0)), mask=MASK[:0], prior=rows(prior, slice(0, 0))
    )
    assert_empty_concatenates(empty, whole)
    z, component = bc.split_rsample(empty)
    assert z.shape == (0, D) and component.shape == (0,)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"prior": diagonal(torch.zeros(D + 1), torch.ones(D + 1))}, "prior.*event size"),
        ({"prior": full(torch.zeros(D), torch.eye(D))}, "prior"),
        ({"prior": diagonal(torch.zeros(5, D), torch.ones(5, D))}, "prior.*broadcast"),
        ({"prior": diagonal(torch.zeros(D), -torch.ones(D), False)}, "prior"),
        ({"subsets": torch.ones(2, M + 1, dtype=torch.bool)}, "subsets"),
        ({"subsets": [[True, False], [True, True]]}, "subsets"),
        ({"subsets": [[True, False, True], [True]]}, "subsets"),
        ({"subsets": [[1, 0, 1]]}, "subsets"),
        ({"subsets": "pairs"}, "subsets"),
        ({"mask": torch.tensor([[True, True, True], [False, False, False]])}, "mask"),
        ({"subsets": [[True, False, False]], "mask": torch.tensor([False, True, True])}, "mask"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(options, match) -> None:
    experts = diagonal(torch.zeros(B, M, D), torch.ones(B, M, D))
    with pytest.raises(ValueError, match=match):
        bc.mixture_of_products(experts, **options)


# split_rsample


def _shared_mixture(probs, loc, spread, n: int, family: str):
    """``n`` rows of one mixture: ``probs (S,)``, components ``loc (S, d)`` and ``spread``."""
    components = rebuild(
        diagonal(loc, spread) if family == "diag" else full(loc, spread),
        loc.expand(n, *loc.shape),
        spread.expand(n, *spread.shape),
    )
    return MixtureSameFamily(Categorical(probs=probs.expand(n, -1)), components)


def _expected_counts(probs, n: int) -> list[int]:
    """``⌈n C_k − ½⌉ − ⌈n C_{k−1} − ½⌉`` in exact rational arithmetic."""
    cumulative, bounds = Fraction(0), [0]
    total = sum(Fraction(p) for p in probs.tolist())
    for p in probs.tolist():
        cumulative += Fraction(p) / total
        bounds.append(math.ceil(n * cumulative - Fraction(1, 2)))
    return [b - a for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("n", [7, 20, 100, 257])
def test_split_counts_follow_the_weights_in_contiguous_blocks(n) -> None:
    probs = torch.tensor([0.1, 0.25, 0.0, 0.65], dtype=torch.float64)
    mixture = _shared_mixture(probs, torch.zeros(4, D), torch.ones(4, D), n, "diag")
    _, component = bc.split_rsample(mixture)
    counts = torch.bincount(component, minlength=4)
    assert counts.tolist() == _expected_counts(probs, n)
    assert bool(((counts - n * probs).abs() < 1).all())
    assert counts[2] == 0
    assert bool((component[1:] >= component[:-1]).all())  # blocks in component order


def test_split_agrees_with_mopoe_when_the_shares_are_whole() -> None:
    # MoPoE gives ⌊n π_k⌋ rows to every component but the last, which takes the rest
    probs = torch.full((31,), 1 / 31, dtype=torch.float64)
    n = 31 * 8
    mixture = _shared_mixture(probs, torch.zeros(31, D), torch.ones(31, D), n, "diag")
    _, component = bc.split_rsample(mixture)
    assert torch.equal(component, torch.arange(31).repeat_interleave(8))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_row_draws_from_its_component_only(family, generator) -> None:
    experts = random_experts(generator, family, D, (5, M))
    mask = torch.rand(5, M, generator=generator) < 0.6
    mask[:, 0] = True
    mixture = bc.mixture_of_products(experts, mask=mask)
    z, component = bc.split_rsample(mixture, generator=torch.Generator().manual_seed(3))
    probs = mixture.mixture_distribution.probs
    assert bool((probs.gather(-1, component[:, None]) > 0).all())
    noise = torch.randn(5, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    components = mixture.component_distribution
    index = torch.arange(5)
    factor = (
        components.stddev[index, component].unsqueeze(-1).mul(torch.eye(D))
        if family == "diag"
        else torch.linalg.cholesky(components.covariance_matrix[index, component])
    )
    expected = components.mean[index, component] + (factor @ noise.unsqueeze(-1))[..., 0]
    torch.testing.assert_close(z, expected)


def test_rows_with_their_own_weights_read_their_own_cumulative_weights() -> None:
    # four rows, two components; row i's midpoint is (i + 1/2)/4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.0, 1.0]], dtype=torch.float64)
    mixture = MixtureSameFamily(
        Categorical(probs=probs), diagonal(torch.zeros(4, 2, D), torch.ones(4, 2, D))
    )
    _, component = bc.split_rsample(mixture)
    assert component.tolist() == [0, 0, 1, 1]


def test_rows_are_the_batch_in_row_major_order() -> None:
    probs = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    flat = _shared_mixture(probs, torch.zeros(3, D), torch.ones(3, D), 12, "diag")
    grid = MixtureSameFamily(
        Categorical(probs=probs.expand(3, 4, 3)),
        diagonal(torch.zeros(3, 4, 3, D), torch.ones(3, 4, 3, D)),
    )
    z, component = bc.split_rsample(grid)
    assert z.shape == (3, 4, D)
    assert torch.equal(component.reshape(-1), bc.split_rsample(flat)[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_split_draws_have_their_components_moments(family, generator) -> None:
    probs = torch.tensor([0.3, 0.7], dtype=torch.float64)
    loc, cov = params(random_experts(generator, "full", D, (2,)))
    spread = cov if family == "full" else torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()
    n = 20000
    mixture = _shared_mixture(probs, loc, spread, n, family)
    z, component = bc.split_rsample(mixture, generator=generator)
    cov = _covariances(mixture.component_distribution)[0]
    for k in range(2):
        draws = z[component == k]
        count = len(draws)
        assert count == round(n * probs[k].item())
        variance = torch.diagonal(cov[k])
        # five standard errors of the mean, sqrt(Σ_ii / n), and of a covariance entry,
        # sqrt((Σ_ii Σ_jj + Σ_ij²) / n)
        assert bool(((draws.mean(0) - loc[k]).abs() <= 5 * (variance / count).sqrt()).all())
        sample_cov = torch.cov(draws.T)
        error = ((variance[:, None] * variance[None, :] + cov[k].square()) / count).sqrt()
        assert bool(((sample_cov - cov[k]).abs() <= 5 * error).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_split_rsample_is_reproducible_with_a_generator(family, generator) -> None:
    mixture = bc.mixture_of_products(random_experts(generator, family, D, (6, M)))
    first = bc.split_rsample(mixture, generator=torch.Generator().manual_seed(7))
    again = bc.split_rsample(mixture, generator=torch.Generator().manual_seed(7))
    other = bc.split_rsample(mixture, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.equal(first[1], other[1]) and not torch.equal(first[0], other[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck_split_rsample(family, generator) -> None:
    experts = random_experts(generator, family, D, (4, M))
    mask = torch.tensor([[True, True, True], [True, False, True], [False, True, True], [True] * 3])

    def build(loc, factor):
        return diagonal(loc, factor) if family == "diag" else full(loc, factor @ factor.mT)

    def draws(loc, factor):
        mixture = bc.mixture_of_products(build(loc, factor), mask=mask)
        return bc.split_rsample(mixture, generator=torch.Generator().manual_seed(0))[0]

    spread = params(experts)[1]
    factor = spread if family == "diag" else torch.linalg.cholesky(spread)
    inputs = (experts.mean.clone().requires_grad_(), factor.clone().requires_grad_())
    assert torch.autograd.gradcheck(draws, inputs)


@pytest.mark.parametrize(
    "mixture",
    [
        diagonal(torch.zeros(3, D), torch.ones(3, D)),
        MixtureSameFamily(
            Categorical(probs=torch.ones(3)), Independent(Laplace(torch.zeros(3, D), 1.0), 1)
        ),
    ],
    ids=["gaussian", "laplace-components"],
)
def test_split_rsample_refuses_what_is_not_a_mixture_of_gaussians(mixture) -> None:
    with pytest.raises(ValueError, match="mixture"):
        bc.split_rsample(mixture)


def test_split_rsample_of_univariate_components_draws_scalars() -> None:
    # univariate experts are accepted everywhere (a Normal in, a Normal out)
    mixture = MixtureSameFamily(
        Categorical(probs=torch.tensor([0.25, 0.75])),
        Normal(torch.tensor([-5.0, 5.0]), torch.tensor([1e-3, 2e-3])),
    )
    z, component = bc.split_rsample(mixture.expand((4,)))
    assert z.shape == (4,) and component.tolist() == [0, 1, 1, 1]
    torch.testing.assert_close(z, torch.tensor([-5.0, 5.0, 5.0, 5.0]), rtol=0, atol=1e-2)
