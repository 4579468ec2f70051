"""Mixtures of barycenters over subsets (MoE, MoPoE, MWB) and stratified sampling."""

from __future__ import annotations

import math

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
from strategies import random_weights
from torch.distributions import Independent, Normal

import barycentric as bc
from barycentric import mixtures as mixtures_module
from barycentric.functional import subset_masks
from barycentric.functional import subsets as subsets_module

M, D, B = 3, 2, 2
DIVERGENCES = ["wasserstein", "reverse_kl", "forward_kl"]


def _barycenter(experts, divergence, **options):
    return bc.barycenter(
        experts,
        divergence=divergence,
        **({"project": True} if divergence == "forward_kl" else {}),
        **options,
    )


def _select(experts, index):
    """The experts ``index`` (list) along the last batch dimension."""
    loc, spread = params(experts)
    axis = -2 if spread.ndim == loc.ndim else -3
    return rebuild(experts, loc[..., index, :], spread.index_select(axis, torch.tensor(index)))


@pytest.mark.parametrize(
    ("subsets", "count"),
    [("all", 2**M - 1), ("singletons", M), (1, M), (2, math.comb(M, 2)), (M, 1)],
)
def test_component_count(subsets, count, generator) -> None:
    mixture = bc.mixture_of_barycenters(random_experts(generator, "diag", D, (B, M)), subsets)
    assert mixture.mixture_distribution.probs.shape == (B, count)
    assert mixture.component_distribution.batch_shape == (B, count)
    assert mixture.event_shape == (D,)
    torch.testing.assert_close(
        mixture.mixture_distribution.probs, torch.full((B, count), 1 / count, dtype=torch.float64)
    )


def test_component_count_for_a_subset_tensor(generator) -> None:
    members = torch.tensor([[True, False, True], [False, True, False]])
    mixture = bc.mixture_of_barycenters(random_experts(generator, "diag", D, (B, M)), members)
    assert mixture.component_distribution.batch_shape == (B, 2)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_each_component_is_the_barycenter_of_its_subset(divergence, family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    w = random_weights(generator, M)
    mixture = bc.mixture_of_barycenters(experts, "all", divergence=divergence, weights=w)
    components = mixture.component_distribution
    for s, members in enumerate(subset_masks("all", M)):
        index = members.nonzero().squeeze(-1).tolist()
        alone = _barycenter(_select(experts, index), divergence, weights=w[index])
        torch.testing.assert_close(components.mean[:, s], alone.mean)
        torch.testing.assert_close(params(components)[1][:, s], params(alone)[1])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_masked_rows_drop_empty_subsets_and_renormalise(divergence, family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    mask = torch.tensor([[True, False, True], [False, False, True]])
    mixture = bc.mixture_of_barycenters(experts, "all", divergence=divergence, mask=mask)
    members = subset_masks("all", M)
    probs = mixture.mixture_distribution.probs
    components = mixture.component_distribution
    for row in range(B):
        alive = (members & mask[row]).any(-1)
        torch.testing.assert_close(probs[row], alive.double() / alive.sum())
        for s in alive.nonzero().squeeze(-1).tolist():
            index = (members[s] & mask[row]).nonzero().squeeze(-1).tolist()
            alone = _barycenter(_select(experts, index), divergence)
            torch.testing.assert_close(components.mean[row, s], alone.mean[row])
            torch.testing.assert_close(params(components)[1][row, s], params(alone)[1][row])
    assert bool(torch.isfinite(components.mean).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_is_a_logsumexp_over_subsets(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    mask = torch.tensor([[True, True, True], [True, False, True]])
    mixture = bc.mixture_of_barycenters(experts, "all", divergence="reverse_kl", mask=mask)
    x = torch.randn(5, B, D, generator=generator, dtype=torch.float64)
    members = subset_masks("all", M)
    expected = []
    for row in range(B):
        terms = []
        for s in range(len(members)):
            index = (members[s] & mask[row]).nonzero().squeeze(-1).tolist()
            if index:
                component = bc.kl_barycenter(_select(experts, index))
                terms.append(component.log_prob(x)[:, row])
        expected.append(torch.logsumexp(torch.stack(terms, -1), -1) - math.log(len(terms)))
    torch.testing.assert_close(mixture.log_prob(x), torch.stack(expected, -1))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_subsets_without_a_present_expert_hold_the_standard_normal(
    divergence, family, generator
) -> None:
    experts = random_experts(generator, family, D, (B, M))
    loc, spread = params(experts)
    mask = torch.tensor([[True, False, False], [False, True, True]])
    garbage = rebuild(experts, torch.where(mask[..., None], loc, torch.nan), spread, False)
    mixture = bc.mixture_of_barycenters(garbage, "all", divergence=divergence, mask=mask)
    absent = ~(subset_masks("all", M) & mask.unsqueeze(-2)).any(-1)
    assert absent.sum() == 3 + 1  # {1}, {2}, {1, 2} in row 0; {0} in row 1
    assert bool((mixture.mixture_distribution.probs[absent] == 0).all())
    loc_absent, spread_absent = (t[absent] for t in params(mixture.component_distribution))
    torch.testing.assert_close(loc_absent, torch.zeros_like(loc_absent))
    unit = torch.eye(D, dtype=loc.dtype) if family == "full" else torch.ones(D, dtype=loc.dtype)
    torch.testing.assert_close(spread_absent, unit.expand_as(spread_absent))


def test_empty_subset_does_not_leak_into_log_prob() -> None:
    experts = diagonal(
        torch.tensor([[100.0], [0.0]], dtype=torch.float64),
        torch.tensor([[0.1], [1.0]], dtype=torch.float64),
    )
    mixture = bc.mixture_of_barycenters(experts, "singletons", mask=torch.tensor([True, False]))
    x = torch.zeros(1, dtype=torch.float64)
    alone = diagonal(experts.mean[0], experts.stddev[0])
    torch.testing.assert_close(mixture.log_prob(x), alone.log_prob(x))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_vectorised_equals_loop_over_subsets(divergence, family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    w = random_weights(generator, M, B)
    members = subset_masks(2, M)
    mixture = bc.mixture_of_barycenters(experts, members, divergence=divergence, weights=w)
    for s, subset in enumerate(members):
        alone = _barycenter(experts, divergence, weights=w, mask=subset.expand(B, M))
        torch.testing.assert_close(mixture.component_distribution.mean[:, s], alone.mean)
        torch.testing.assert_close(
            params(mixture.component_distribution)[1][:, s], params(alone)[1]
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_experts_along_dim_0(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    loc, spread = params(experts)
    front = rebuild(experts, loc.movedim(-2, 0), spread.movedim(-2 if family == "diag" else -3, 0))
    mask = torch.tensor([[True, False, True], [True, True, True]])
    last = bc.mixture_of_barycenters(experts, mask=mask)
    first = bc.mixture_of_barycenters(front, dim=0, mask=mask.T)
    torch.testing.assert_close(first.mixture_distribution.probs, last.mixture_distribution.probs)
    torch.testing.assert_close(first.component_distribution.mean, last.component_distribution.mean)
    torch.testing.assert_close(
        params(first.component_distribution)[1], params(last.component_distribution)[1]
    )


def test_ten_experts_give_1023_components(generator) -> None:
    experts = random_experts(generator, "diag", D, (B, 10))
    mixture = bc.mixture_of_barycenters(experts, "all", divergence="reverse_kl")
    assert mixture.component_distribution.batch_shape == (B, 1023)
    torch.testing.assert_close(
        mixture.component_distribution.mean[:, -1], bc.kl_barycenter(experts).mean
    )
    torch.testing.assert_close(mixture.component_distribution.mean[:, :10], experts.mean)


@pytest.mark.parametrize("family", FAMILIES)
def test_stratified_rsample_shape_and_moments(family, generator) -> None:
    torch.manual_seed(0)
    experts = random_experts(generator, family, D, (B, M))
    mixture = bc.mixture_of_barycenters(experts, "all", divergence="wasserstein")
    n = 4000
    samples = bc.stratified_rsample(mixture, n)
    assert samples.shape == (n, B, 2**M - 1, D)
    components = mixture.component_distribution
    cov = (
        torch.diag_embed(components.variance) if family == "diag" else components.covariance_matrix
    )
    variance = torch.diagonal(cov, dim1=-2, dim2=-1)
    # Five standard errors: of the mean, sqrt(Σ_ii / n); of a covariance entry,
    # sqrt((Σ_ii Σ_jj + Σ_ij²) / n).
    assert bool(((samples.mean(0) - components.mean).abs() <= 5 * (variance / n).sqrt()).all())
    centred = samples - samples.mean(0)
    sample_cov = torch.einsum("n...i,n...j->...ij", centred, centred) / (n - 1)
    cov_error = ((variance.unsqueeze(-1) * variance.unsqueeze(-2) + cov.square()) / n).sqrt()
    assert bool(((sample_cov - cov).abs() <= 5 * cov_error).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_flow_through_stratified_rsample(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    loc = experts.mean.clone().requires_grad_()
    spread = params(experts)[1].clone().requires_grad_()
    rebuilt = rebuild(experts, loc, spread)
    mixture = bc.mixture_of_barycenters(rebuilt, "all", divergence="wasserstein")
    samples = bc.stratified_rsample(mixture, 3)
    weighted = (samples.square().sum(-1).mean(0) * mixture.mixture_distribution.probs).sum()
    grad_loc, grad_spread = torch.autograd.grad(weighted, (loc, spread))
    assert bool(torch.isfinite(grad_loc).all()) and bool((grad_loc != 0).all())
    assert bool(torch.isfinite(grad_spread).all()) and bool((grad_spread.abs().sum((-1)) > 0).all())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradcheck_component_parameters(divergence, family, generator) -> None:
    experts = random_experts(generator, family, D, (M))
    loc = experts.mean.clone().requires_grad_()
    if family == "diag":
        spread = experts.stddev.clone().requires_grad_()
    else:
        spread = torch.linalg.cholesky(experts.covariance_matrix).requires_grad_()
    mask = torch.tensor([True, True, False])

    def components(loc, spread):
        rebuilt = diagonal(loc, spread) if family == "diag" else full(loc, spread @ spread.mT)
        mixture = bc.mixture_of_barycenters(rebuilt, 2, divergence=divergence, mask=mask)
        return mixture.component_distribution.mean, params(mixture.component_distribution)[1]

    assert torch.autograd.gradcheck(components, (loc, spread))


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize("subsets", ["all", "singletons", 2])
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("family", FAMILIES)
def test_empty_batch_gives_an_empty_mixture(family, divergence, subsets, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    mask = torch.tensor([[True, False, True], [True, True, True]])
    whole = bc.mixture_of_barycenters(experts, subsets, divergence=divergence, mask=mask)
    empty = bc.mixture_of_barycenters(
        rows(experts, slice(0, 0)), subsets, divergence=divergence, mask=mask[:0]
    )
    assert_empty_concatenates(empty, whole)
    count = whole.mixture_distribution.probs.shape[-1]
    assert empty.component_distribution.batch_shape == (0, count)
    assert bc.stratified_rsample(empty, 3).shape == (3, 0, count, D)


def test_all_subsets_of_many_experts_are_refused_before_any_work(monkeypatch) -> None:
    # M = 40 ran a 24 GB machine out of memory, M = 64 spent 43 s enumerating: both the
    # enumeration and the experts' preparation are replaced by failures, so the error must
    # come first (and this test cannot allocate on any code)
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the subsets were checked")

    monkeypatch.setattr(subsets_module, "_combinations", forbidden)
    monkeypatch.setattr(mixtures_module, "prepare_experts", forbidden)
    for m in (17, 40, 64):
        experts = Independent(Normal(torch.zeros(m, 1), torch.ones(m, 1)), 1)
        for mixture in (bc.mixture_of_barycenters, bc.mixture_of_products):
            with pytest.raises(ValueError, match=f"asks for {2**m - 1} subsets of {m} experts"):
                mixture(experts, "all")
