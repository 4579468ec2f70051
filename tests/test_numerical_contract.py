"""The numerical contract of the Bures–Wasserstein kernels (DESIGN.md), in float32 first.

Finite positive semi-definite barycenters for every SPD input the dtype holds (condition
numbers up to 1e6 in float32, 1e12 in float64), accuracy against a float64 reference
that degrades with the condition number as documented, scale equivariance from 1e-30 to
1e30 on every path, a stopping rule float32 reaches, and batch isolation: a problem that
cannot be solved is flagged in its own row and changes nothing in the others.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from helpers import assert_equal_up_to_rounding
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import random_spd, random_weights
from torch.distributions import MultivariateNormal

import barycentric as bc
import barycentric.functional.gaussian_wasserstein as gw
from barycentric.functional import (
    wasserstein_barycenter_diag,
    wasserstein_barycenter_full,
    wasserstein_distance_diag,
    wasserstein_distance_full,
)
from barycentric.linalg import polar, sqrtm_psd

F32, F64 = torch.float32, torch.float64
SEEDS = st.integers(0, 2**32 - 1)


def _relative_error(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(x.double() - reference) / torch.linalg.matrix_norm(reference)


def _float32_bound(condition: float) -> float:
    """Allowed float32 error at condition number κ: the module docstring's measured table
    (4e-5 at κ ≤ 1e2 up to 7e-4 at κ = 1e6) with a margin of about 5."""
    return 1e-4 * max(1.0, condition**0.25)


def _problem(seed: int, m: int, d: int, condition: float, batch: tuple[int, ...] = ()):
    generator = torch.Generator().manual_seed(seed)
    cov = random_spd(generator, d, (*batch, m), condition)
    return torch.zeros(*batch, m, d, dtype=F64), cov, random_weights(generator, m, batch)


def _solve_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return wasserstein_barycenter_full(*args, return_info=True, **kwargs)


@settings(max_examples=30)
@given(
    seed=SEEDS,
    m=st.integers(1, 4),
    d=st.integers(1, 6),
    log_condition=st.floats(0, 6),
    log_scale=st.integers(-30, 30),
)
def test_float32_is_finite_psd_and_close_to_float64(seed, m, d, log_condition, log_scale) -> None:
    condition, scale = 10.0**log_condition, 10.0**log_scale
    loc, cov, weights = _problem(seed, m, d, condition)
    _, reference = wasserstein_barycenter_full(loc, cov, weights, tol=1e-13, max_iter=1000)
    _, bary, info = _solve_quietly(loc.float(), (scale * cov).float(), weights.float())
    assert bary.dtype == F32 and bool(info.converged.all())
    assert torch.isfinite(bary).all()
    assert torch.linalg.eigvalsh(bary.double()).min() >= 0
    assert _relative_error(bary / scale, reference) <= _float32_bound(condition)


@settings(max_examples=10)
@given(seed=SEEDS, m=st.integers(2, 4), log_condition=st.floats(6, 12))
def test_float64_up_to_condition_1e12_is_finite_psd_and_flagged(seed, m, log_condition) -> None:
    loc, cov, weights = _problem(seed, m, 4, 10.0**log_condition, batch=(3,))
    with warnings.catch_warnings():
        # a problem this hard may need more than max_iter steps; it must then say so
        warnings.simplefilter("ignore", RuntimeWarning)
        _, bary, info = wasserstein_barycenter_full(loc, cov, weights, return_info=True)
    assert torch.isfinite(bary).all()
    assert (torch.linalg.eigvalsh(bary) >= 0).all()
    assert torch.equal(info.converged, info.residual <= gw.default_tolerance(F64))
    # (Σ^½ Σ_m Σ^½)^½ from the singular values of Σ_m^½ Σ^½: squaring would lose it
    inner = polar(sqrtm_psd(cov) @ sqrtm_psd(bary).unsqueeze(-3))[1]
    image = (weights / weights.sum(-1, keepdim=True))[..., None, None] * inner
    residual = _relative_error(image.sum(-3), bary)
    if m == 2:
        assert (residual <= 1e-10).all()
    else:
        # the reported residual is the residual of the returned covariance
        torch.testing.assert_close(
            residual[info.converged], info.residual[info.converged], rtol=0, atol=1e-12
        )


@pytest.mark.parametrize("dtype", [F32, F64])
def test_one_expert_returns_that_expert_exactly(dtype: torch.dtype) -> None:
    _, cov, _ = _problem(0, 3, 5, 1e6 if dtype == F32 else 1e12, batch=(2,))
    cov = (1e30 * cov).to(dtype)
    loc = torch.zeros(2, 3, 5, dtype=dtype)
    _, alone = wasserstein_barycenter_full(loc[:, :1], cov[:, :1])
    assert torch.equal(alone, cov[:, 0])
    # one present expert among several, on the McCann path and the fixed-point path
    for m in (2, 3):
        weights = torch.zeros(2, m, dtype=dtype)
        weights[:, 1] = 1.0
        _, masked = wasserstein_barycenter_full(loc[:, :m], cov[:, :m], weights)
        assert torch.equal(masked, cov[:, 1])


def test_issue_reproducer_ill_conditioned_float32() -> None:
    c, s = math.cos(0.3), math.sin(0.3)
    rotation = torch.tensor([[c, -s], [s, c]])
    cov = rotation @ torch.diag(torch.tensor([1e5, 1.0])) @ rotation.T
    cov = (cov + cov.T) / 2
    _, bary = wasserstein_barycenter_full(torch.zeros(1, 2), cov[None])
    assert torch.equal(bary, cov)
    q = bc.wasserstein_barycenter(MultivariateNormal(torch.zeros(1, 2), cov[None]))
    assert torch.equal(q.covariance_matrix, cov)


def _paths(scale: float, dtype: torch.dtype = F32) -> dict[str, torch.Tensor]:
    """Every Bures–Wasserstein kernel on a fixed problem whose covariances are multiplied by
    ``scale``, divided back by ``scale``."""
    _, cov, weights = _problem(3, 3, 4, 1e3)
    cov, weights = (scale * cov).to(dtype), weights.to(dtype)
    loc = torch.zeros(3, 4, dtype=dtype)
    diagonal = torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    std = torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()
    return {
        "one expert": wasserstein_barycenter_full(loc[:1], cov[:1])[1] / scale,
        "diagonal closed form": wasserstein_barycenter_full(loc, diagonal, weights)[1] / scale,
        "diagonal kernel": wasserstein_barycenter_diag(loc, std, weights)[1] ** 2 / scale,
        "McCann": wasserstein_barycenter_full(loc[:2], cov[:2], weights[:2])[1] / scale,
        "fixed point": _solve_quietly(loc, cov, weights)[1] / scale,
        "distance full": wasserstein_distance_full(loc[0], cov[0], loc[1], cov[1]) / scale,
        "distance diagonal": wasserstein_distance_diag(loc[0], std[0], loc[1], std[1]) / scale,
    }


@pytest.mark.parametrize("exponent", [-100, -66, -34, 34, 66, 98])
def test_scale_equivariance_is_exact_for_powers_of_two(exponent: int) -> None:
    # every kernel normalises by a power of two, so scaling by one changes no digit (even
    # exponents, so that the standard deviations scale by a power of two too)
    unit, scaled = _paths(1.0), _paths(2.0**exponent)
    for path, expected in unit.items():
        assert torch.equal(scaled[path], expected), path


@pytest.mark.parametrize("scale", [1e-30, 1e-24, 1e-12, 1e12, 1e24, 1e30])
def test_scale_equivariance_from_1e_minus_30_to_1e30(scale: float) -> None:
    # powers of ten round the inputs differently, so agreement is to float32 round-off
    unit, scaled = _paths(1.0), _paths(scale)
    reference = _paths(1.0, F64)
    for path, expected in unit.items():
        assert torch.isfinite(scaled[path]).all(), path
        error = (scaled[path].double() - expected.double()).norm() / reference[path].norm()
        assert error <= 1e-5, path


def test_float32_stopping_rule_is_reached_without_warning() -> None:
    loc, cov, weights = _problem(0, 3, 8, 1e3, batch=(50,))
    _, reference = wasserstein_barycenter_full(loc, cov, weights, tol=1e-13, max_iter=1000)
    _, bary, info = _solve_quietly(loc.float(), cov.float(), weights.float())
    assert bool(info.converged.all()) and info.iterations <= 20
    assert (info.residual <= gw.default_tolerance(F32)).all()
    assert _relative_error(bary, reference).max() <= _float32_bound(1e3)


@settings(max_examples=20)
@given(
    seed=SEEDS,
    size=st.integers(2, 6),
    broken=st.integers(0, 5),
    dtype=st.sampled_from([F32, F64]),
    how=st.sampled_from(["nan", "inf"]),
    d=st.sampled_from([2, 3]),
)
@example(seed=0, size=5, broken=0, dtype=F64, how="nan", d=2)  # four left: Python floats
@example(seed=0, size=2, broken=0, dtype=F64, how="inf", d=3)  # one left: one problem alone
@pytest.mark.usefixtures("validation_disabled")
def test_a_problem_that_cannot_be_solved_stays_in_its_row(seed, size, broken, dtype, how, d):
    # the same answers, although the solver depends on the batch's size (one problem alone,
    # a few 2 × 2 problems in Python floats): the broken problem takes no part in choosing
    # it. To round-off, not bitwise: other batch sizes may take other kernels
    broken %= size
    loc, cov, weights = _problem(seed, 3, d, 1e3, batch=(size,))
    loc, cov, weights = loc.to(dtype), cov.to(dtype), weights.to(dtype)
    cov[broken, 1, 0, 0] = torch.nan if how == "nan" else torch.inf
    with pytest.warns(RuntimeWarning, match=f"did not converge for 1 of {size} problems") as caught:
        _, bary, info = wasserstein_barycenter_full(loc, cov, weights, return_info=True)
    assert len(caught) == 1
    assert not info.converged[broken] and info.residual[broken] == torch.inf
    others = [row for row in range(size) if row != broken]
    assert info.converged[others].all()
    _, alone, _ = _solve_quietly(loc[others], cov[others], weights[others])
    assert_equal_up_to_rounding(bary[others], alone)


@pytest.mark.usefixtures("validation_disabled")
def test_a_lone_expert_that_is_not_finite_is_reported_as_unsolved() -> None:
    # a weight of exactly 1 returns that expert as it is, unless it is not finite: then its
    # row is NaN with residual inf (it used to say converged, with residual 0)
    loc, cov, weights = _problem(2, 3, 3, 1e2, batch=(2,))
    weights = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=F64)
    cov[1, 0, 0, 0] = torch.nan
    with pytest.warns(RuntimeWarning, match="did not converge for 1 of 2 problems"):
        _, bary, info = wasserstein_barycenter_full(loc, cov, weights, return_info=True)
    assert info.converged.tolist() == [True, False]
    assert info.residual[0] == 0 and info.residual[1] == torch.inf
    assert torch.equal(bary[0], cov[0, 0]) and bool(bary[1].isnan().all())


def test_a_hard_problem_does_not_make_the_others_iterate(monkeypatch) -> None:
    loc, cov, weights = _problem(1, 3, 4, 1e2, batch=(8,))
    hard_loc, hard_cov, hard_weights = _problem(2, 3, 4, 1e12)
    loc, cov, weights = (
        torch.cat([a, b[None]])
        for a, b in ((loc, hard_loc), (cov, hard_cov), (weights, hard_weights))
    )
    easy = wasserstein_barycenter_full(loc[:8], cov[:8], weights[:8], return_info=True)
    sizes: list[int] = []
    step = gw._factor_step

    def counting_step(factor, cov_roots, w):
        sizes.append(factor.shape[0])
        return step(factor, cov_roots, w)

    monkeypatch.setattr(gw, "_factor_step", counting_step)
    _, bary, info = wasserstein_barycenter_full(loc, cov, weights, max_iter=500, return_info=True)
    assert bool(info.converged.all()) and info.iterations > easy[2].iterations
    # the easy problems leave once converged: the hard one iterates alone after that
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
    assert sum(sizes) <= 8 * easy[2].iterations + info.iterations
    assert_equal_up_to_rounding(bary[:8], easy[1])


_MARKED = torch.diag(torch.tensor([7.0, 1.0, 1.0], dtype=F64))


def _failing_on_marked(decomposition):
    """``decomposition`` that fails, as LAPACK can, on any batch holding a matrix with
    ``a[0, 0] = 7 a[1, 1] != 0`` (the batched call then fails as a whole). The mark is a
    ratio, so it survives the solver's normalisation by a power of two."""

    def decompose(a, *args, **kwargs):
        diagonal = torch.diagonal(a, dim1=-2, dim2=-1)
        if bool(((diagonal[..., 0] == 7 * diagonal[..., 1]) & (diagonal[..., 1] != 0)).any()):
            raise torch.linalg.LinAlgError("failed to converge (simulated)")
        return decomposition(a, *args, **kwargs)

    return decompose


def test_a_decomposition_failure_leaves_the_other_matrices_exact(monkeypatch) -> None:
    generator = torch.Generator().manual_seed(0)
    a = random_spd(generator, 3, (4,), 1e3)
    x = torch.randn(4, 3, 3, dtype=F64, generator=generator)
    expected_root, expected_polar = sqrtm_psd(a), polar(x)
    a[2] = x[2] = _MARKED
    monkeypatch.setattr(torch.linalg, "eigh", _failing_on_marked(torch.linalg.eigh))
    monkeypatch.setattr(torch.linalg, "svd", _failing_on_marked(torch.linalg.svd))
    root, (q, h) = sqrtm_psd(a), polar(x)
    keep = [0, 1, 3]
    assert torch.isnan(root[2]).all() and torch.isnan(q[2]).all() and torch.isnan(h[2]).all()
    # the failed batch is decomposed again in smaller batches: the same answers to round-off
    assert_equal_up_to_rounding(root[keep], expected_root[keep])
    assert_equal_up_to_rounding(q[keep], expected_polar[0][keep])
    assert_equal_up_to_rounding(h[keep], expected_polar[1][keep])


def test_a_decomposition_failure_inside_the_solver_is_flagged(monkeypatch) -> None:
    loc, cov, weights = _problem(4, 3, 3, 1e2, batch=(3,))
    _, expected = wasserstein_barycenter_full(loc, cov, weights)
    cov[1, 2] = _MARKED
    monkeypatch.setattr(torch.linalg, "eigh", _failing_on_marked(torch.linalg.eigh))
    with pytest.warns(RuntimeWarning, match="1 of 3 problems"):
        _, bary, info = wasserstein_barycenter_full(loc, cov, weights, return_info=True)
    assert info.converged.tolist() == [True, False, True]
    assert_equal_up_to_rounding(bary[[0, 2]], expected[[0, 2]])


def test_issue_reproducer_identity_rows_beside_an_ill_conditioned_row() -> None:
    # d = 8: three rows of identity experts and one row of condition-1e5 float32 experts
    _, cov, weights = _problem(6, 3, 8, 1e5)
    covs = torch.eye(8, dtype=F64).expand(4, 3, 8, 8).clone()
    covs[3] = cov
    loc = torch.zeros(4, 3, 8)
    _, bary, info = _solve_quietly(loc, covs.float(), weights.float())
    assert bool(info.converged.all())
    # the barycenter of identities is the identity, up to the rounding of the weights' sum
    torch.testing.assert_close(bary[:3], torch.eye(8).expand(3, 8, 8), rtol=0, atol=1e-6)
    _, reference = wasserstein_barycenter_full(loc[3].double(), cov, weights, tol=1e-13)
    assert _relative_error(bary[3], reference) <= _float32_bound(1e5)
