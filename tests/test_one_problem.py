"""The fixed point of a single small problem with exact roots (``functional._one_problem``).

The problems it serves, which it hands to the robust solver (the condition rule at its
edge, singular, non-finite, failed decompositions), its stopping rule and its fallback to
the plain step. Its answers against the robust polar solver and an independent residual,
and its float32, are tested beside the warm solver's, in ``test_warm_fixed_point``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import fixed_point_problems, record_solver_calls, wasserstein_residual

import barycentric.functional._one_problem as one
import barycentric.functional.gaussian_wasserstein as gw
from barycentric.functional import wasserstein_barycenter_full

F64 = torch.float64


@pytest.mark.parametrize(
    "shape, served",
    [
        ((1, 5, 16), True),
        ((1, 8, 32), True),  # M d³ = 2¹⁸, the limit
        ((1, 9, 32), False),
        ((2, 5, 16), False),
        ((1, 5, 64), False),
    ],
)
def test_serves_one_small_problem_on_the_cpu(shape, served: bool) -> None:
    assert one.serves_one(torch.empty(*shape, shape[-1], dtype=F64)) is served
    assert not one.serves_one(torch.empty(*shape, shape[-1], dtype=F64, device="meta"))


def test_the_public_function_solves_one_problem_here_and_batches_warm(monkeypatch) -> None:
    calls = record_solver_calls(monkeypatch, gw, ("solve_one", "solve_warm"))
    for batch, m, d in ((1, 5, 8), (3, 5, 8), (1, 9, 32)):
        cov, weights = fixed_point_problems(batch, batch, m, d)
        _, bary, info = wasserstein_barycenter_full(
            torch.zeros(batch, m, d, dtype=F64), cov, weights, tol=1e-11, return_info=True
        )
        assert bool(info.converged.all())
        assert float(wasserstein_residual(bary, cov, weights).max()) <= 1e-11
    assert calls == [("solve_one", 1), ("solve_warm", 3), ("solve_warm", 1)]


def _commuting(condition: float):
    """Diagonal experts, their barycenter, and the largest condition number of the roots of
    the first step, in closed form: the start (Σ_m w_m Σ_m^½)² = diag(r²),
    r = Σ_m w_m σ_m^½, is the answer, its factor L = diag(r), and H_m = diag(r σ_m^½)."""
    variances = torch.tensor(
        [[1.0, condition, 3.0], [2.0, 1.0, condition / 2], [condition / 4, 5.0, 1.0]], dtype=F64
    )
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    r = (weights[:, None] * variances.sqrt()).sum(0)
    roots = r * variances.sqrt()
    kappa = float((roots.amax(-1) / roots.amin(-1)).max())
    return torch.diag_embed(variances)[None], weights[None], torch.diag(r.square())[None], kappa


@pytest.mark.parametrize("margin, accepted", [(1 + 1e-6, True), (1 - 1e-6, False)])
def test_the_condition_rule_at_its_edge(margin: float, accepted: bool) -> None:
    cov, weights, answer, kappa = _commuting(1e3)
    # the tolerance whose limit tol / (16 ε) is the roots' largest condition number × margin
    tol = margin * kappa * 16 * torch.finfo(F64).eps
    result = one.solve_one(cov, weights, max_iter=10, tol=tol)
    assert bool(result.accepted) is accepted
    if accepted:  # the start is the answer: the first residual certifies it
        assert result.iterations == 1 and bool(result.converged)
        torch.testing.assert_close(result.solution, answer, rtol=1e-14, atol=0)


@pytest.mark.parametrize("how", ["singular", "nan", "indefinite"])
def test_problems_it_cannot_certify_go_to_the_robust_solver(how: str) -> None:
    cov, weights = fixed_point_problems(3, 1, 3, 4)
    if how == "singular":
        cov[0, 1] = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64))
    elif how == "nan":
        cov[0, 2, 1, 1] = torch.nan
    else:
        cov[0, 0] = -cov[0, 0]
    result = one.solve_one(cov, weights, max_iter=100, tol=1e-10)
    assert not bool(result.accepted)
    assert not bool(result.converged)


def test_a_failed_decomposition_hands_the_problem_on(monkeypatch) -> None:
    cov, weights = fixed_point_problems(4, 1, 3, 4)
    eigh = torch.linalg.eigh
    calls = []

    def failing_second(a):
        calls.append(a.shape)
        if len(calls) == 2:
            raise torch.linalg.LinAlgError("did not converge")
        return eigh(a)

    monkeypatch.setattr(torch.linalg, "eigh", failing_second)
    result = one.solve_one(cov, weights, max_iter=100, tol=1e-10)
    assert not bool(result.accepted) and result.iterations == 1


def test_a_tolerance_below_its_round_off_goes_straight_to_the_robust_solver(monkeypatch) -> None:
    cov, weights = fixed_point_problems(5, 1, 3, 4)
    monkeypatch.setattr(one, "_mean_root", None)  # any work at all would fail
    result = one.solve_one(cov, weights, max_iter=10, tol=0.0)
    assert not bool(result.accepted) and result.iterations == 0


def test_max_iter_stops_with_the_residual_of_what_it_returns() -> None:
    cov, weights = fixed_point_problems(6, 1, 5, 6, 1e3)
    result = one.solve_one(cov, weights, max_iter=2, tol=1e-12)
    assert result.iterations == 2 and bool(result.accepted) and not bool(result.converged)
    exact = wasserstein_residual(result.solution, cov, weights)
    assert float(exact) > 1e-12
    torch.testing.assert_close(result.residual, exact, rtol=1e-6, atol=0)
    with pytest.warns(RuntimeWarning, match="did not converge for 1 of 1 problems in 2"):
        wasserstein_barycenter_full(torch.zeros(1, 5, 6, dtype=F64), cov, weights, max_iter=2)


class _Indefinite:
    """An accelerator whose every proposal has no Cholesky factor."""

    def __call__(self, point: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return -image


def test_a_mixture_without_a_cholesky_factor_gives_way_to_the_plain_step(monkeypatch) -> None:
    cov, weights = fixed_point_problems(8, 1, 4, 6, 1e2)
    accelerated = one.solve_one(cov, weights, max_iter=200, tol=1e-11)
    monkeypatch.setattr(one, "Anderson", _Indefinite)
    plain = one.solve_one(cov, weights, max_iter=200, tol=1e-11)
    assert bool(plain.accepted) and bool(plain.converged)
    # the unaccelerated iteration, to the same answer in more steps
    assert plain.iterations > accelerated.iterations
    torch.testing.assert_close(plain.solution, accelerated.solution, rtol=1e-9, atol=0)


def test_one_problem_alone_and_in_a_batch_agree_to_the_tolerance() -> None:
    cov, weights = fixed_point_problems(9, 2, 5, 16, 1e2)
    loc = torch.zeros(2, 5, 16, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, together = wasserstein_barycenter_full(loc, cov, weights, tol=1e-11)
        _, alone = wasserstein_barycenter_full(loc[:1], cov[:1], weights[:1], tol=1e-11)
    # two solutions each certified to 1e-11: apart by at most about their residuals / (1 - ρ)
    error = torch.linalg.matrix_norm(alone - together[:1]) / torch.linalg.matrix_norm(alone)
    assert 0 < float(error) < 1e-9
