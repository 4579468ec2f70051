"""Tests of the MW2 barycenter of Gaussian mixtures: closed forms, POT oracles, invariances."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import ot
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from torch.distributions import (
    Categorical,
    Independent,
    Laplace,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

import barycentric as bc
from barycentric import gmm

F64 = torch.float64


def _full_gmm(seed: int, size: int, dim: int, spread: float = 3.0) -> MixtureSameFamily:
    """A random full-covariance GMM in float64 with ``size`` components."""
    generator = torch.Generator().manual_seed(seed)
    loc = spread * torch.randn(size, dim, generator=generator, dtype=F64)
    factor = torch.randn(size, dim, dim, generator=generator, dtype=F64)
    cov = factor @ factor.mT + 0.5 * torch.eye(dim, dtype=F64)
    probs = torch.rand(size, generator=generator, dtype=F64) + 0.2
    return MixtureSameFamily(Categorical(probs / probs.sum()), MultivariateNormal(loc, cov))


def _diag_gmm(seed: int, size: int, dim: int) -> MixtureSameFamily:
    generator = torch.Generator().manual_seed(seed)
    loc = 3 * torch.randn(size, dim, generator=generator, dtype=F64)
    scale = torch.rand(size, dim, generator=generator, dtype=F64) + 0.3
    probs = torch.rand(size, generator=generator, dtype=F64) + 0.2
    return MixtureSameFamily(Categorical(probs / probs.sum()), Independent(Normal(loc, scale), 1))


def _as_full(mixture: MixtureSameFamily) -> MixtureSameFamily:
    components = mixture.component_distribution
    return MixtureSameFamily(
        mixture.mixture_distribution,
        MultivariateNormal(components.mean, torch.diag_embed(components.variance)),
    )


def _covariances(components: Independent | MultivariateNormal) -> torch.Tensor:
    if isinstance(components, MultivariateNormal):
        return components.covariance_matrix
    return torch.diag_embed(components.variance)


def _pot_params(mixture: MixtureSameFamily) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means, covariances and weights, as POT's ``ot.gmm`` takes them."""
    components = mixture.component_distribution
    return (
        components.mean.detach().numpy(),
        _covariances(components).detach().numpy(),
        mixture.mixture_distribution.probs.detach().numpy(),
    )


def _canonical(mixture: MixtureSameFamily) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Means, covariances and weights sorted by mean: compares mixtures as sets."""
    components = mixture.component_distribution
    loc = components.mean
    order = torch.as_tensor(np.lexsort(loc.detach().numpy().T[::-1]).copy())
    return loc[order], _covariances(components)[order], mixture.mixture_distribution.probs[order]


def _assert_same_mixture(p: MixtureSameFamily, q: MixtureSameFamily, **tolerance: float) -> None:
    for a, b in zip(_canonical(p), _canonical(q), strict=True):
        torch.testing.assert_close(a, b, **tolerance)


def _mw2_objective(barycenter: MixtureSameFamily, mixtures, weights) -> float:
    """``Σ_k λ_k MW2²(barycenter, ν_k)``, each MW2² by POT's ``gmm_ot_loss``."""
    m, cov, w = _pot_params(barycenter)
    total = 0.0
    for lam, mixture in zip(weights, mixtures, strict=True):
        m_k, cov_k, w_k = _pot_params(mixture)
        total += float(lam) * float(ot.gmm.gmm_ot_loss(m, m_k, cov, cov_k, w, w_k))
    return total


def test_docstring_example_runs() -> None:
    assert doctest.testmod(gmm, raise_on_error=True).attempted > 0


def test_importing_the_package_imports_neither_pot_nor_scipy() -> None:
    # POT (which imports scikit-learn) and SciPy, imported eagerly by gmm and empirical,
    # made `import barycentric` take longer than `import torch`: they load on first use
    source = str(Path(bc.__file__).parents[1])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([source, *sys.path])}
    code = "import sys, barycentric; print(' '.join({m.split('.')[0] for m in sys.modules}))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment
    )
    loaded = set(result.stdout.split())
    assert "barycentric" in loaded
    assert not loaded & {"ot", "scipy", "sklearn"}


# --- closed forms -------------------------------------------------------------------


@pytest.mark.parametrize("make", [_full_gmm, _diag_gmm])
def test_single_components_reduce_to_the_gaussian_barycenter(make) -> None:
    mixtures = [make(seed, 1, 3) for seed in range(4)]
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    mu, plan, objective = bc.gmm_barycenter(mixtures, weights, return_plan=True)
    experts = [m.component_distribution for m in mixtures]
    expected = bc.wasserstein_barycenter(experts, weights)
    assert type(mu.component_distribution) is type(expected)
    torch.testing.assert_close(mu.component_distribution.mean, expected.mean)
    torch.testing.assert_close(
        _covariances(mu.component_distribution), _covariances(expected), rtol=1e-9, atol=1e-9
    )
    assert plan.shape == (1, 1, 1, 1) and plan.item() == 1.0
    distances = torch.stack([bc.wasserstein_distance(e, expected, squared=True) for e in experts])
    torch.testing.assert_close(objective, (weights * distances.squeeze(-1)).sum())


@pytest.mark.parametrize("count", [1, 2, 3])
def test_identical_mixtures_return_themselves(count: int) -> None:
    nu = _full_gmm(0, 3, 2)
    mu, _, objective = bc.gmm_barycenter([nu] * count, return_plan=True)
    _assert_same_mixture(mu, nu, rtol=1e-8, atol=1e-8)
    assert abs(objective.item()) < 1e-10


def test_zero_weight_mixture_is_ignored() -> None:
    nu0, nu1 = _full_gmm(0, 3, 2), _full_gmm(1, 2, 2)
    mu, _, objective = bc.gmm_barycenter([nu0, nu1], [1.0, 0.0], return_plan=True)
    # Every plan is optimal (zero cost), so ν0's components may be split; the density is ν0's.
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(mu.log_prob(x), nu0.log_prob(x))
    assert abs(objective.item()) < 1e-12


# --- POT oracles ----------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "lam"), [(0, 0.5), (1, 0.3), (2, 0.9)])
def test_two_mixtures_objective_and_plan_match_pot(seed: int, lam: float) -> None:
    # For Gaussians N1, N2 the barycenter with weights (1-t, t) is McCann's point t, at
    # distance t·W and (1-t)·W from N1 and N2 (W = W2(N1, N2)); so each tuple's cost is
    # (1-t) t² W² + t (1-t)² W² = t(1-t) W², and the two-marginal problem is POT's GMM-OT
    # (Delon & Desolneux) with its costs scaled by t(1-t): same plan, objective scaled.
    nu0, nu1 = _full_gmm(seed, 4, 3), _full_gmm(seed + 10, 5, 3)
    weights = torch.tensor([1 - lam, lam], dtype=F64)
    _, plan, objective = bc.gmm_barycenter([nu0, nu1], weights, return_plan=True)
    (m0, c0, w0), (m1, c1, w1) = _pot_params(nu0), _pot_params(nu1)
    loss = ot.gmm.gmm_ot_loss(m0, m1, c0, c1, w0, w1)
    np.testing.assert_allclose(objective.item(), lam * (1 - lam) * loss, rtol=1e-10)
    # Random costs: the optimal plan is unique, so the plans agree, not only their values.
    np.testing.assert_allclose(plan.numpy(), ot.gmm.gmm_ot_plan(m0, m1, c0, c1, w0, w1), atol=1e-12)


def test_objective_is_the_mw2_barycenter_functional() -> None:
    # The multi-marginal value equals Σ λ_k MW2²(μ, ν_k) evaluated by POT's GMM-OT: the
    # plan's projections are optimal couplings between the barycenter and each input.
    mixtures = [_full_gmm(0, 3, 2), _full_gmm(1, 4, 2), _full_gmm(2, 2, 2)]
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    mu, _, objective = bc.gmm_barycenter(mixtures, weights, return_plan=True)
    np.testing.assert_allclose(objective.item(), _mw2_objective(mu, mixtures, weights), rtol=1e-9)


def test_is_a_fixed_point_of_pot_and_beats_its_local_solutions() -> None:
    # POT's gmm_barycenter_fixed_point (Tanguy, Delon & Gozlan 2024) solves another problem:
    # a fixed number n of barycenter components with fixed weights, by a local fixed-point
    # iteration. It does not compute our answer from a generic start, but (i) started at
    # our barycenter with its weights, with Bures barycentric projections, it stays there
    # (our couplings are deterministic and optimal), and (ii) the MW2 functional of any of
    # its outputs is at least our global minimum.
    mixtures = [_full_gmm(0, 3, 2), _full_gmm(1, 4, 2), _full_gmm(2, 2, 2)]
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    mu, _, objective = bc.gmm_barycenter(mixtures, weights, return_plan=True)
    means, covs, probs = _pot_params(mu)
    params = [_pot_params(m) for m in mixtures]
    lists = [[p[i] for p in params] for i in range(3)]
    fixed_means, fixed_covs = ot.gmm.gmm_barycenter_fixed_point(
        *lists,
        means.copy(),
        covs.copy(),
        weights.numpy(),
        w_bar=probs,
        iterations=3,
        barycentric_proj_method="bures",
    )
    np.testing.assert_allclose(fixed_means, means, atol=1e-10)
    np.testing.assert_allclose(fixed_covs, covs, atol=1e-5)  # POT's Bures solver: eps=1e-7
    for n, seed in [(3, 5), (7, 6)]:
        start = _full_gmm(seed, n, 2)
        m0, c0, _ = _pot_params(start)
        local_means, local_covs = ot.gmm.gmm_barycenter_fixed_point(
            *lists, m0.copy(), c0.copy(), weights.numpy(), iterations=20
        )
        local = MixtureSameFamily(
            Categorical(torch.full((n,), 1 / n, dtype=F64)),
            MultivariateNormal(torch.as_tensor(local_means), torch.as_tensor(local_covs)),
        )
        assert _mw2_objective(local, mixtures, weights) >= objective.item() - 1e-9


# --- structure and invariances --------------------------------------------------------


def _diagonal_mixtures():
    """One to three random diagonal GMMs of one to three components in dimension 1 or 2."""
    return st.tuples(
        st.lists(st.integers(1, 3), min_size=1, max_size=3),
        st.integers(1, 2),
        st.integers(0, 10_000),
    ).map(lambda t: [_diag_gmm(t[2] + k, size, t[1]) for k, size in enumerate(t[0])])


@settings(max_examples=25, deadline=None)
@given(mixtures=_diagonal_mixtures(), raw=st.lists(st.floats(0.05, 1.0), min_size=3))
def test_plan_marginals_are_the_mixing_weights(mixtures, raw) -> None:
    weights = torch.tensor(raw[: len(mixtures)], dtype=F64)
    mu, plan, _ = bc.gmm_barycenter(mixtures, weights, return_plan=True)
    probs = mu.mixture_distribution.probs
    assert bool((probs > 0).all())
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(probs, plan[plan > 0])
    for k, mixture in enumerate(mixtures):
        others = [i for i in range(plan.ndim) if i != k]
        marginal = plan.sum(others) if others else plan
        torch.testing.assert_close(
            marginal, mixture.mixture_distribution.probs, rtol=1e-8, atol=1e-8
        )
    # A vertex of the transport polytope: at most Σ J_k - K + 1 tuples carry mass.
    assert len(probs) <= sum(plan.shape) - plan.ndim + 1


@pytest.mark.parametrize("order", [(1, 2, 0), (2, 0, 1), (1, 0, 2)])
def test_permuting_the_inputs_permutes_the_plan_only(order: tuple[int, ...]) -> None:
    mixtures = [_full_gmm(0, 3, 2), _full_gmm(1, 2, 2), _full_gmm(2, 2, 2)]
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    mu, plan, objective = bc.gmm_barycenter(mixtures, weights, return_plan=True)
    mu_p, plan_p, objective_p = bc.gmm_barycenter(
        [mixtures[i] for i in order], weights[list(order)], return_plan=True
    )
    _assert_same_mixture(mu_p, mu, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(plan_p, plan.permute(order), atol=1e-10, rtol=0)
    torch.testing.assert_close(objective_p, objective)


def _scaled(mixture: MixtureSameFamily, factor: float) -> MixtureSameFamily:
    """``mixture`` pushed forward by ``x -> factor x``."""
    components = mixture.component_distribution
    return MixtureSameFamily(
        mixture.mixture_distribution,
        MultivariateNormal(factor * components.loc, factor**2 * components.covariance_matrix),
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("factor", [1e-5, 1e-3, 1e5, 2.0**-20])
def test_scale_equivariance_of_the_plan(seed: int, factor: float) -> None:
    # HiGHS' absolute tolerances took costs of 1e-8 for ties and returned another vertex
    mixtures = [_full_gmm(3 * seed + k, 3, 2) for k in range(3)]
    _, plan, objective = bc.gmm_barycenter(mixtures, return_plan=True)
    scaled = [_scaled(mixture, factor) for mixture in mixtures]
    _, plan_s, objective_s = bc.gmm_barycenter(scaled, return_plan=True)
    torch.testing.assert_close(plan_s, plan, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(objective_s / factor**2, objective, rtol=1e-9, atol=0)


def _pushed(mixture: MixtureSameFamily, factor: float, dtype: torch.dtype) -> MixtureSameFamily:
    """``mixture`` (float64) pushed forward by ``x -> factor x`` in float64, then cast."""
    components = mixture.component_distribution
    if isinstance(components, MultivariateNormal):
        loc, cov = factor * components.loc, factor**2 * components.covariance_matrix
        pushed = MultivariateNormal(loc.to(dtype), cov.to(dtype))
    else:
        loc, scale = factor * components.mean, factor * components.stddev
        pushed = Independent(Normal(loc.to(dtype), scale.to(dtype)), 1)
    return MixtureSameFamily(Categorical(mixture.mixture_distribution.probs.to(dtype)), pushed)


def _equivariance_mixtures(kind: str, count: int, seed: int) -> list[MixtureSameFamily]:
    make = {"full": [_full_gmm], "diag": [_diag_gmm], "mixed": [_diag_gmm, _full_gmm]}[kind]
    return [make[k % len(make)](3 * seed + k, 2 + k % 2, 2) for k in range(count)]


def _spread_first(mixture: MixtureSameFamily) -> tuple[torch.Tensor, ...]:
    """Means, standard deviations (diagonal) or Cholesky factors (full) and weights sorted by
    mean: quantities that scale like the mixture."""
    components = mixture.component_distribution
    order = torch.as_tensor(np.lexsort(components.mean.detach().numpy().T[::-1]).copy())
    if isinstance(components, MultivariateNormal):
        spread = components.scale_tril
    else:  # `stddev` is `variance.sqrt()`, which underflows in float32 at 1e-25
        spread = components.base_dist.scale
    probs = mixture.mixture_distribution.probs
    return components.mean[order], spread[order], probs[order]


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["diag", "full", "mixed"]),
    count=st.sampled_from([2, 3]),
    seed=st.integers(0, 3),
    dtype=st.sampled_from([torch.float32, F64]),
    exponent=st.floats(-30.0, 30.0),
)
@example(kind="diag", count=2, seed=0, dtype=torch.float32, exponent=-25.0)
@example(kind="mixed", count=3, seed=1, dtype=torch.float32, exponent=-16.0)
@example(kind="full", count=2, seed=2, dtype=torch.float32, exponent=17.0)
def test_scale_equivariance_in_every_dtype(
    kind: str, count: int, seed: int, dtype: torch.dtype, exponent: float
) -> None:
    # float32 costs at scale 1e-25 underflowed to 0 and took the other plan; at 1e19 they
    # overflowed. The oracle is the float64 problem at unit scale: the plan must be its
    # plan, the components its components pushed forward, the objective its times factor².
    if dtype is torch.float32 and kind != "diag":
        assume(abs(exponent) <= 17)  # covariances ∝ factor² within float32's normal range
    factor = 10.0**exponent
    mixtures = _equivariance_mixtures(kind, count, seed)
    mu, plan, objective = bc.gmm_barycenter(mixtures, return_plan=True)
    scaled = [_pushed(mixture, factor, dtype) for mixture in mixtures]
    expected = objective.item() * factor**2
    info = torch.finfo(dtype)
    representable = info.tiny <= expected <= info.max
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mu_s, plan_s, objective_s = bc.gmm_barycenter(scaled, return_plan=True)
    messages = [str(w.message) for w in caught if "objective" in str(w.message)]
    assert len(messages) == (0 if representable else 1), messages
    assert mu_s.mixture_distribution.probs.dtype == plan_s.dtype == objective_s.dtype == dtype
    rtol = 1e-4 if dtype is torch.float32 else 1e-9
    torch.testing.assert_close(plan_s.double(), plan, rtol=0, atol=rtol)
    for actual, oracle, power in zip(
        _spread_first(mu_s), _spread_first(mu), (1, 1, 0), strict=True
    ):
        scaled_back = actual.double() / factor**power
        torch.testing.assert_close(scaled_back, oracle, rtol=rtol, atol=rtol * oracle.abs().max())
    if representable:
        torch.testing.assert_close(objective_s.double() / factor**2, objective, rtol=rtol, atol=0)
    else:
        assert f"{objective.item() * factor**2:.4e}"[:6] in messages[0]


def test_translation_equivariance() -> None:
    mixtures = [_full_gmm(0, 3, 2), _full_gmm(1, 2, 2), _full_gmm(2, 3, 2)]
    shift = torch.tensor([5.0, -2.0], dtype=F64)
    moved = [
        MixtureSameFamily(
            m.mixture_distribution,
            MultivariateNormal(
                m.component_distribution.loc + shift, m.component_distribution.covariance_matrix
            ),
        )
        for m in mixtures
    ]
    mu, plan, objective = bc.gmm_barycenter(mixtures, return_plan=True)
    mu_t, plan_t, objective_t = bc.gmm_barycenter(moved, return_plan=True)
    torch.testing.assert_close(plan_t, plan)
    torch.testing.assert_close(objective_t, objective)
    torch.testing.assert_close(
        mu_t.component_distribution.loc, mu.component_distribution.loc + shift
    )
    torch.testing.assert_close(
        mu_t.component_distribution.covariance_matrix, mu.component_distribution.covariance_matrix
    )


@pytest.mark.parametrize("count", [2, 3])
def test_diagonal_input_gives_the_full_answer_in_diagonal_form(count: int) -> None:
    mixtures = [_diag_gmm(seed, 3, 2) for seed in range(count)]
    mu, plan, objective = bc.gmm_barycenter(mixtures, return_plan=True)
    assert isinstance(mu.component_distribution, Independent)
    mu_full, plan_full, objective_full = bc.gmm_barycenter(
        [_as_full(m) for m in mixtures], return_plan=True
    )
    assert isinstance(mu_full.component_distribution, MultivariateNormal)
    torch.testing.assert_close(plan, plan_full)
    torch.testing.assert_close(objective, objective_full)
    _assert_same_mixture(mu, mu_full)


def test_mixed_families_give_a_full_barycenter() -> None:
    diagonal, full = _diag_gmm(0, 2, 2), _full_gmm(1, 3, 2)
    mu, plan, _ = bc.gmm_barycenter([diagonal, full], return_plan=True)
    assert isinstance(mu.component_distribution, MultivariateNormal)
    _, expected, _ = bc.gmm_barycenter([_as_full(diagonal), full], return_plan=True)
    torch.testing.assert_close(plan, expected)


def test_float32_in_float32_out() -> None:
    mixtures = [_full_gmm(seed, 2, 2) for seed in range(3)]
    single = [
        MixtureSameFamily(
            Categorical(m.mixture_distribution.probs.float()),
            MultivariateNormal(
                m.component_distribution.loc.float(),
                m.component_distribution.covariance_matrix.float(),
            ),
        )
        for m in mixtures
    ]
    mu, plan, objective = bc.gmm_barycenter(single, return_plan=True)
    assert mu.component_distribution.loc.dtype == torch.float32
    assert mu.mixture_distribution.probs.dtype == plan.dtype == objective.dtype == torch.float32
    _, plan64, objective64 = bc.gmm_barycenter(mixtures, return_plan=True)
    torch.testing.assert_close(plan.double(), plan64, atol=1e-6, rtol=0)
    torch.testing.assert_close(objective.double(), objective64, rtol=1e-5, atol=1e-5)


# --- gradients --------------------------------------------------------------------------


def _separated_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three 2-component, 2-d GMMs with well separated components: no tie in the plan."""
    generator = torch.Generator().manual_seed(3)
    loc = torch.tensor([[[0.0, 0.0], [8.0, 0.0]]], dtype=F64).repeat(3, 1, 1)
    loc = loc + 0.5 * torch.randn(3, 2, 2, generator=generator, dtype=F64)
    factor = torch.eye(2, dtype=F64) + 0.3 * torch.randn(3, 2, 2, 2, generator=generator, dtype=F64)
    probs = torch.tensor([[0.4, 0.6], [0.5, 0.5], [0.3, 0.7]], dtype=F64)
    return loc, factor, probs


def _barycenter_outputs(
    loc: torch.Tensor, factor: torch.Tensor, probs: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    mixtures = [
        MixtureSameFamily(
            Categorical(probs[k]), MultivariateNormal(loc[k], factor[k] @ factor[k].mT)
        )
        for k in range(len(probs))
    ]
    mu, _, objective = bc.gmm_barycenter(mixtures, weights, return_plan=True)
    components = mu.component_distribution
    return components.loc, components.covariance_matrix, objective


@pytest.mark.parametrize("count", [2, 3])
def test_gradcheck_components_and_objective(count: int) -> None:
    # Two mixtures use McCann's geodesic, three the implicit fixed-point gradient.
    loc, factor, probs = _separated_case()
    loc, factor = loc[:count].requires_grad_(), factor[:count].requires_grad_()
    weights = torch.tensor([0.2, 0.5, 0.3][:count], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m, f, w: _barycenter_outputs(m, f, probs[:count], w),
        (loc, factor, weights),
        atol=1e-6,
        fast_mode=True,
    )


def test_gradcheck_diagonal() -> None:
    loc, factor, probs = _separated_case()
    scale = factor.diagonal(dim1=-2, dim2=-1).abs().detach().requires_grad_()
    loc = loc.requires_grad_()

    def outputs(m: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mixtures = [
            MixtureSameFamily(Categorical(probs[k]), Independent(Normal(m[k], s[k]), 1))
            for k in range(3)
        ]
        mu, _, objective = bc.gmm_barycenter(mixtures, return_plan=True)
        return mu.component_distribution.mean, mu.component_distribution.stddev, objective

    assert torch.autograd.gradcheck(outputs, (loc, scale), fast_mode=True)


def test_objective_gradient_is_the_plan_weighted_cost_gradient() -> None:
    # Danskin: with a unique optimal plan, d(objective)/d(mean) is Σ_t w_t dC_t/d(mean);
    # for K = 2 with λ = (½, ½), C = ¼ W2² and d/dm0_j of ¼‖m0_j - m1_i‖² sums the plan.
    nu0, nu1 = _full_gmm(0, 3, 2), _full_gmm(1, 3, 2)
    loc0 = nu0.component_distribution.loc.clone().requires_grad_()
    moved = MixtureSameFamily(
        nu0.mixture_distribution,
        MultivariateNormal(loc0, nu0.component_distribution.covariance_matrix),
    )
    _, plan, objective = bc.gmm_barycenter([moved, nu1], return_plan=True)
    (grad,) = torch.autograd.grad(objective, loc0)
    difference = loc0.detach().unsqueeze(1) - nu1.component_distribution.loc.unsqueeze(0)
    torch.testing.assert_close(grad, 0.5 * (plan.unsqueeze(-1) * difference).sum(1))


# --- bad input --------------------------------------------------------------------------


def _bad_cases() -> list[tuple[object, dict, str]]:
    nu = _full_gmm(0, 2, 2)
    laplace = MixtureSameFamily(
        Categorical(torch.ones(2)), Independent(Laplace(torch.zeros(2, 2), torch.ones(2, 2)), 1)
    )
    batched = MixtureSameFamily(
        Categorical(torch.ones(4, 2)), MultivariateNormal(torch.zeros(4, 2, 2), torch.eye(2))
    )
    # torch's own checks refuse a mixture without components; ours must too when they are off
    empty = MixtureSameFamily(
        Categorical(torch.ones(0), validate_args=False),
        Independent(Normal(torch.zeros(0, 2), torch.ones(0, 2)), 1),
        validate_args=False,
    )
    flat = MixtureSameFamily(
        Categorical(torch.ones(2)), Independent(Normal(torch.zeros(2, 0), torch.ones(2, 0)), 1)
    )
    big = MixtureSameFamily(
        Categorical(torch.ones(101)),
        Independent(Normal(torch.zeros(101, 1), torch.ones(101, 1)), 1),
    )
    # an infinite mean passes torch's checks (`real_vector` refuses only NaN)
    far = MixtureSameFamily(
        Categorical(torch.ones(2)),
        MultivariateNormal(torch.tensor([[-torch.inf, 0.0], [2.0, 0.0]]), torch.eye(2)),
    )
    return [
        ([], {}, "`mixtures` is an empty"),
        (nu, {}, "`mixtures` must be a sequence"),
        ([nu, nu.component_distribution], {}, r"`mixtures\[1\]` must be a MixtureSameFamily"),
        ([nu, laplace], {}, r"`mixtures\[1\].component_distribution` must be"),
        ([nu, batched], {}, r"`mixtures\[1\]` has batch shape \(4,\)"),
        ([nu, _full_gmm(1, 2, 3)], {}, "`mixtures` have different event sizes"),
        ([nu, empty], {}, r"`mixtures\[1\]` has no components"),
        ([flat, flat], {}, r"`mixtures\[0\].component_distribution` must have an event size"),
        ([nu, nu], {"weights": [0.5, -0.5]}, "`weights` must be non-negative"),
        ([nu, nu], {"weights": [0.5, float("nan")]}, "`weights` contains NaN"),
        ([nu, nu], {"weights": [0.0, 0.0]}, "`weights`"),
        ([nu, nu], {"weights": [0.2, 0.3, 0.5]}, r"`weights` must have shape \(2,\)"),
        ([nu, nu], {"weights": [1.0]}, r"`weights` must have shape \(2,\)"),
        ([nu, nu], {"weights": [1.0, 1j]}, "`weights` must be real"),
        ([nu, nu], {"weights": torch.tensor([1 + 0j, 1 + 3j])}, "`weights` must be real"),
        ([nu, far], {}, r"`mixtures\[1\].component_distribution` contains NaN or infinite"),
        ([big, big, big], {}, "`mixtures` have 101 x 101 x 101 = 1030301 component tuples"),
    ]


@pytest.mark.parametrize(("mixtures", "options", "message"), _bad_cases())
def test_bad_input_raises_value_error_naming_the_argument(mixtures, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        bc.gmm_barycenter(mixtures, **options)
