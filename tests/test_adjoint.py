"""The fixed-point map's adjoint in closed form (``functional._adjoint``).

Its products against autograd's derivative of the map (an independent oracle: the polar
form, differentiated through its SVDs), at and away from the fixed point; which problems it
certifies; that the implicit backward takes it where it certifies and autograd elsewhere,
with the same derivatives; float32; and its decompositions' routing on an accelerator.
"""

from __future__ import annotations

import pytest
import torch
from helpers import fixed_point_problems
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import random_spd, spd_matrices

import barycentric._host as _host
import barycentric.functional._adjoint as adjoint_module
import barycentric.functional.gaussian_wasserstein as gw
import barycentric.linalg as linalg
from barycentric.functional import wasserstein_barycenter_full
from barycentric.functional._adjoint import ClosedFormAdjoint, _condition_bound
from barycentric.functional._warm_fixed_point import condition_limit
from barycentric.linalg import sqrtm_psd, symmetrise

F32, F64 = torch.float32, torch.float64


def _autograd_products(solution, cov, weights, u):
    """``(Jᵀu, (∂F/∂Σ)ᵀu, (∂F/∂w)ᵀu)`` by autograd through the map's polar form."""
    s, c, w = (t.clone().requires_grad_() for t in (solution, cov, weights))
    image = gw._fixed_point_map(s, sqrtm_psd(c), w)
    return torch.autograd.grad(image, (s, c, w), u)


def _relative(found: torch.Tensor, expected: torch.Tensor, floor: float = 0.0) -> float:
    """The error relative to ``expected``'s norm, or to ``floor`` where that is larger (Jᵀu
    vanishes where the covariances commute)."""
    scale = max(float(torch.linalg.vector_norm(expected)), floor)
    return float(torch.linalg.vector_norm(found - expected)) / scale


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(2, 5),  # one expert, or d = 1: F does not depend on S, and Jᵀu = 0
    d=st.integers(2, 7),
    log_condition=st.floats(0.0, 2.5),
    offset=st.sampled_from([0.0, 1e-2]),
)
def test_agrees_with_autograd_at_and_away_from_the_fixed_point(
    seed: int, m: int, d: int, log_condition: float, offset: float
) -> None:
    cov, weights = fixed_point_problems(seed, 3, m, d, 10**log_condition)
    generator = torch.Generator().manual_seed(seed)
    solution, _ = gw._solve(cov, weights, 200, 1e-13, False)
    # a point off the fixed point, where the map's own derivative is all there is
    solution = solution + offset * random_spd(generator, d, (3,), 1e1)
    u = symmetrise(torch.randn(3, d, d, dtype=F64, generator=generator))
    closed, certified = ClosedFormAdjoint.where_certified(solution, cov, weights, tol=1e-10)
    assert closed is not None and bool(certified.all())
    pulled, grad_cov, grad_weights = _autograd_products(solution, cov, weights, u)
    size = float(torch.linalg.vector_norm(u))
    assert _relative(closed.pull(u), symmetrise(pulled), size) < 1e-12
    found_cov, found_weights = closed.inputs(u)
    assert _relative(found_cov, symmetrise(grad_cov), size) < 1e-12
    assert _relative(found_weights, grad_weights, size) < 1e-12


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(2, 5),
    d=st.integers(2, 6),
    log_condition=st.floats(0.0, 2.5),
)
def test_push_is_the_transpose_of_pull_and_agrees_with_central_differences(
    seed: int, m: int, d: int, log_condition: float
) -> None:
    # J v, which the derivative of the adjoint needs: ⟨y, Jᵀu⟩ = ⟨J y, u⟩, and J v is the
    # directional derivative of the map, here by central differences of its polar form
    cov, weights = fixed_point_problems(seed, 2, m, d, 10**log_condition)
    generator = torch.Generator().manual_seed(seed)
    solution, _ = gw._solve(cov, weights, 200, 1e-13, False)
    u, v = symmetrise(torch.randn(2, 2, d, d, dtype=F64, generator=generator))
    closed, certified = ClosedFormAdjoint.where_certified(solution, cov, weights, tol=1e-10)
    assert closed is not None and bool(certified.all())
    pushed = closed.push(v)
    size = float(torch.linalg.vector_norm(u)) * float(torch.linalg.vector_norm(v))
    transposed = (closed.pull(u) * v).sum((-2, -1)) - (pushed * u).sum((-2, -1))
    assert float(transposed.abs().max()) <= 1e-12 * size
    step = 1e-6
    roots = sqrtm_psd(cov)
    difference = symmetrise(
        gw._fixed_point_map(solution + step * v, roots, weights)
        - gw._fixed_point_map(solution - step * v, roots, weights)
    ) / (2 * step)
    assert _relative(pushed, difference, float(torch.linalg.vector_norm(v))) < 1e-7


def test_decomposes_the_square_where_its_round_off_allows_and_a_factor_elsewhere(
    monkeypatch,
) -> None:
    # at tol = 1e-10 the rule admits κ ≤ tol / (16 ε) ≈ 28,000: five of the six squares have
    # κ(P) of 170 to 2,900 (eigendecompositions of P); the third expert of the second problem
    # has κ(P) ≈ 2.3e5 but κ(H) ≈ 480 (singular value decomposition of a factor)
    cov, weights = fixed_point_problems(13, 2, 3, 5, 1e2)
    cov[1, 2] = fixed_point_problems(14, 1, 3, 5, 1e4)[0][0, 2]
    solution, _ = gw._solve(cov, weights, 500, 1e-13, False)
    calls: list[tuple[object, tuple[int, ...]]] = []
    decompose = adjoint_module._decompose

    def recording(function, matrices):
        calls.append((function, tuple(matrices.shape)))
        return decompose(function, matrices)

    monkeypatch.setattr(adjoint_module, "_decompose", recording)
    closed, certified = ClosedFormAdjoint.where_certified(solution, cov, weights, tol=1e-10)
    assert certified.tolist() == [True, True]
    assert calls == [(torch.linalg.eigh, (5, 5, 5)), (torch.linalg.svd, (1, 5, 5))]
    u = symmetrise(torch.randn(2, 5, 5, dtype=F64, generator=torch.Generator().manual_seed(15)))
    pulled, grad_cov, grad_weights = _autograd_products(solution, cov, weights, u)
    found_cov, found_weights = closed.inputs(u)
    size = float(torch.linalg.vector_norm(u))
    for found, expected in (
        (closed.pull(u), symmetrise(pulled)),
        (found_cov, symmetrise(grad_cov)),
        (found_weights, grad_weights),
    ):
        for row in range(2):
            assert _relative(found[row], expected[row], size) < 1e-12


@pytest.mark.parametrize("smallest", ["not positive", "too small"])
def test_an_eigendecomposition_that_round_off_spoils_goes_to_the_factor(
    monkeypatch, smallest: str
) -> None:
    # round-off can leave the square's smallest eigenvalue at or below zero although its
    # Cholesky factor exists (seen from κ ≈ 1e16), or its κ(P) above the limit although the
    # bound was below it; simulated here on a well-conditioned problem. κ(H) = √κ(P) would
    # still pass in the second case: the rule for a square is on κ(P)
    limit = condition_limit(1e-10)
    cov, weights = fixed_point_problems(16, 2, 3, 4)
    solution, _ = gw._solve(cov, weights, 200, 1e-13, False)
    u = symmetrise(torch.randn(2, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(17)))
    expected, certified = ClosedFormAdjoint.where_certified(solution, cov, weights, tol=1e-10)
    assert bool(certified.all())
    calls: list[tuple[object, int]] = []
    decompose = adjoint_module._decompose

    def rounded_off(function, matrices):
        calls.append((function, matrices.shape[0]))
        found = decompose(function, matrices)
        if function is torch.linalg.eigh:
            values, vectors = found
            values = values.clone()
            # the smallest eigenvalue of the second problem's second expert
            values[4, 0] = -1e-20 if smallest == "not positive" else values[4, -1] / (2 * limit)
            return values, vectors
        return found

    monkeypatch.setattr(adjoint_module, "_decompose", rounded_off)
    closed, certified = ClosedFormAdjoint.where_certified(solution, cov, weights, tol=1e-10)
    # that expert is taken from a factor instead, and gives the same adjoint
    assert certified.tolist() == [True, True]
    assert calls == [(torch.linalg.eigh, 6), (torch.linalg.svd, 1)]
    for found, wanted in zip(
        (closed.pull(u), *closed.inputs(u)), (expected.pull(u), *expected.inputs(u)), strict=True
    ):
        torch.testing.assert_close(found, wanted, rtol=1e-12, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.data(), st.integers(1, 8))
def test_the_condition_bound_bounds_the_condition_number(data, d: int) -> None:
    matrices = data.draw(spd_matrices(d, (3,), max_condition=1e8), label="matrices")
    condition = torch.linalg.cond(matrices)
    bound = _condition_bound(matrices)
    # an upper bound (up to the round-off of both), at most d^{3/2} times too large
    assert bool((bound >= condition * (1 - 1e-6)).all())
    assert bool((bound <= d**1.5 * condition * (1 + 1e-6)).all())


def test_the_condition_bound_of_a_matrix_without_a_cholesky_factor_is_infinite() -> None:
    diagonals = [[1.0, -1e-3, 2.0], [1.0, 0.0, 2.0], [1.0, 1.0, torch.nan], [1.0, 1.0, 1.0]]
    bound = _condition_bound(torch.diag_embed(torch.tensor(diagonals, dtype=F64)))
    assert bound[:2].tolist() == [torch.inf, torch.inf]  # indefinite, singular
    assert not bool(bound[2] <= 1e300)  # not finite: no limit admits it
    assert float(bound[3]) == pytest.approx(3**1.5)  # ‖I‖_F ‖I‖_F² for d = 3


def test_at_the_fixed_point_the_mean_map_is_the_identity() -> None:
    # T̄(S*) = I: the first term of Jᵀu is u itself
    cov, weights = fixed_point_problems(1, 4, 3, 5)
    solution, _ = gw._solve(cov, weights, 200, 1e-14, False)
    closed, _ = ClosedFormAdjoint.where_certified(solution, cov, weights, tol=1e-10)
    eye = torch.eye(5, dtype=F64).expand(4, 5, 5)
    torch.testing.assert_close(closed.map, eye, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "case",
    [
        "ill-conditioned",
        "singular expert",
        "singular expert, tol = inf",
        "expert not finite",
        "solution not finite",
    ],
)
def test_certifies_only_what_its_round_off_allows(case: str) -> None:
    cov, weights = fixed_point_problems(2, 3, 3, 4)
    solution, _ = gw._solve(cov, weights, 200, 1e-13, False)
    if case == "ill-conditioned":  # κ(H) ≈ 1e5 > tol / (16 ε) ≈ 2800 at tol = 1e-11
        cov[1], tol = fixed_point_problems(3, 1, 3, 4, 1e10)[0][0], 1e-11
    elif case.startswith("singular expert"):  # no Cholesky factor, and κ = inf
        tol = torch.inf if case.endswith("inf") else 1e-10
        cov[1, 2] = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64))
    elif case == "expert not finite":  # no factor: the solver's stand-in must not be used
        cov[1, 0, 1, 1], tol = torch.nan, 1e-10
    else:
        solution[1, 0, 0], tol = torch.nan, 1e-10
    closed, certified = ClosedFormAdjoint.where_certified(solution, cov, weights, tol)
    assert certified.tolist() == [True, False, True]
    assert closed is not None and closed.roots.shape[0] == 2


def test_a_tolerance_below_its_round_off_decomposes_nothing(monkeypatch) -> None:
    cov, weights = fixed_point_problems(10, 2, 3, 4)
    solution, _ = gw._solve(cov, weights, 200, 1e-12, False)
    monkeypatch.setattr(adjoint_module, "cholesky_flagged", None)  # any work at all would fail
    closed, certified = ClosedFormAdjoint.where_certified(solution, cov, weights, tol=0.0)
    assert closed is None and certified.tolist() == [False, False]


def test_the_backward_takes_it_where_it_certifies_and_autograd_elsewhere(monkeypatch) -> None:
    easy, easy_weights = fixed_point_problems(4, 3, 3, 4)
    # κ(H) ≈ 1e3 > tol / (16 ε) ≈ 280 at tol = 1e-12
    hard, hard_weights = fixed_point_problems(5, 1, 3, 4, 1e6)
    cov = torch.cat([easy[:1], hard, easy[1:]])
    weights = torch.cat([easy_weights[:1], hard_weights, easy_weights[1:]])
    loc = torch.zeros(4, 3, 4, dtype=F64)
    probe = torch.randn(4, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(6))
    recorded: list[int] = []
    record = gw._recorded_vjp

    def counting(solution, *args):
        recorded.append(solution.shape[0])
        return record(solution, *args)

    def gradients(backward: str):
        c, w = cov.clone().requires_grad_(), weights.clone().requires_grad_()
        _, bary = wasserstein_barycenter_full(loc, c, w, tol=1e-12, max_iter=500, backward=backward)
        return torch.autograd.grad((bary * probe).sum(), (c, w))

    monkeypatch.setattr(gw, "_recorded_vjp", counting)
    implicit = gradients("implicit")
    assert recorded == [1]  # the hard problem alone
    for found, expected in zip(implicit, gradients("unroll"), strict=True):
        torch.testing.assert_close(found, expected, rtol=1e-6, atol=1e-8)


def test_float32_gradients_are_computed_in_float64_and_returned_in_float32(monkeypatch) -> None:
    monkeypatch.setattr(gw, "_recorded_vjp", None)  # the closed form serves every problem
    cov, weights = fixed_point_problems(7, 2, 4, 5)
    loc = torch.zeros(2, 4, 5, dtype=F64)
    probe = torch.randn(2, 5, 5, dtype=F64, generator=torch.Generator().manual_seed(8))
    found = {}
    for dtype in (F32, F64):
        c = cov.to(dtype).requires_grad_()
        _, bary = wasserstein_barycenter_full(loc.to(dtype), c, weights.to(dtype))
        (found[dtype],) = torch.autograd.grad((bary * probe.to(dtype)).sum(), c)
    assert found[F32].dtype == F32
    # the float32 solution differs from the float64 one by float32's tolerance, 1e-5
    assert _relative(found[F32].double(), found[F64]) < 1e-4


def test_mid_sized_decompositions_run_on_the_host_of_an_accelerator(monkeypatch) -> None:
    problems = []
    for d in (8, 40):
        cov, weights = fixed_point_problems(9, 2, 3, d)
        problems.append((gw._solve(cov, weights, 200, 1e-12, False)[0], cov, weights))
    monkeypatch.setattr(_host, "_ACCELERATORS", frozenset({"cpu"}))
    routed: list[tuple[int, ...]] = []

    def counting(function, device, *args):
        routed.append(tuple(args[1].shape))
        return _host.run_on_host(function, device, *args)

    monkeypatch.setattr(linalg, "run_on_host", counting)
    for solution, cov, weights in problems:
        d = cov.shape[-1]
        u = symmetrise(torch.randn(2, d, d, dtype=F64, generator=torch.Generator()))
        closed, certified = ClosedFormAdjoint.where_certified(solution, cov, weights, 1e-10)
        assert bool(certified.all())
        monkeypatch.setattr(_host, "_ACCELERATORS", frozenset())  # the oracle on the CPU
        pulled = _autograd_products(solution, cov, weights, u)[0]
        monkeypatch.setattr(_host, "_ACCELERATORS", frozenset({"cpu"}))
        assert _relative(closed.pull(u), symmetrise(pulled)) < 1e-12
    assert routed == [(6, 40, 40)]


def test_only_the_wanted_derivatives_are_computed() -> None:
    cov, weights = fixed_point_problems(11, 2, 3, 4)
    solution, _ = gw._solve(cov, weights, 200, 1e-12, False)
    closed, _ = ClosedFormAdjoint.where_certified(solution, cov, weights, tol=1e-10)
    u = symmetrise(torch.randn(2, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(12)))
    both = closed.inputs(u)
    assert closed.inputs(u, (False, True))[0] is None
    assert closed.inputs(u, (True, False))[1] is None
    torch.testing.assert_close(closed.inputs(u, (False, True))[1], both[1], rtol=0, atol=0)
