"""The warm-started fixed point (``functional._warm_fixed_point``) and the solvers' thread scope.

Its answers (and the one-problem solver's) against the robust polar solver and an
independent residual, its use of matrix
products in place of eigendecompositions, which problems it hands to the robust solver, and
that a converged problem leaves the iteration.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import (
    assert_equal_up_to_rounding,
    fixed_point_problems,
    record_solver_calls,
    wasserstein_residual,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import barycentric._threads as threads
import barycentric.functional._one_problem as one
import barycentric.functional._two_by_two as two
import barycentric.functional._warm_fixed_point as warm
import barycentric.functional.gaussian_wasserstein as gw
from barycentric.functional import wasserstein_barycenter_full
from barycentric.linalg import sqrtm_psd

F32, F64 = torch.float32, torch.float64


# the batched warm solver, and the one-problem solver (``functional._one_problem``)
SOLVERS = [pytest.param(warm.solve_warm, 4, id="warm"), pytest.param(one.solve_one, 1, id="one")]


@pytest.mark.parametrize("solve, batch", SOLVERS)
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(3, 6),
    d=st.integers(2, 9),
    log_condition=st.floats(0.0, 3.0),
)
def test_agrees_with_the_robust_solver(
    solve, batch: int, seed: int, m: int, d: int, log_condition: float
) -> None:
    # tol = 1e-11 accepts roots of condition number up to 2800 (16 ε κ ≤ tol)
    cov, weights = fixed_point_problems(seed, batch, m, d, 10**log_condition)
    result = solve(cov, weights, max_iter=200, tol=1e-11)
    reference, info = gw._solve_robust(cov, weights, 200, 1e-11, differentiable=False)
    assert bool(result.accepted.all()) and bool(result.converged.all())
    assert bool(info.converged.all())
    error = torch.linalg.matrix_norm(result.solution - reference) / torch.linalg.matrix_norm(
        reference
    )
    # both residuals are below 1e-11; the error is at most the residual over (1 - ρ)
    assert float(error.max()) < 1e-8


@pytest.mark.parametrize("solve, batch", SOLVERS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tol=st.sampled_from([1e-6, 1e-9, 1e-12]))
def test_the_reported_residual_is_certified(solve, batch: int, seed: int, tol: float) -> None:
    # the warm solver's residual is computed from roots it refines only to a fraction of
    # the residual: the exact residual of what it returns must still be within tol
    cov, weights = fixed_point_problems(seed, batch, 4, 6, 1e2)
    result = solve(cov, weights, max_iter=100, tol=tol)
    assert bool(result.converged.all())
    exact = wasserstein_residual(result.solution, cov, weights)
    assert float(exact.max()) <= tol
    torch.testing.assert_close(result.residual, exact, rtol=0.1, atol=tol / 8)


def test_roots_are_refined_by_products_not_eigendecompositions(monkeypatch) -> None:
    cov, weights = fixed_point_problems(0, 64, 5, 8)
    decomposed: list[int] = []
    eigh_psd = warm.eigh_psd

    def counting(a):
        decomposed.append(a.shape[:-2].numel())
        return eigh_psd(a)

    monkeypatch.setattr(warm, "eigh_psd", counting)
    result = warm.solve_warm(cov, weights, max_iter=100, tol=1e-12)
    assert bool(result.converged.all()) and result.iterations >= 8
    roots_per_step = 64 * 5
    # the first step decomposes every root; the later ones only the roots whose Newton steps
    # (INNER_STEPS on all, EXTRA_STEPS more on those that fall short) do not converge: in all,
    # fewer than one more per root (912 with two steps and no extra ones; 209 with them)
    assert decomposed[0] == roots_per_step
    assert sum(decomposed[1:]) < roots_per_step
    # and the last steps none at all
    assert len(decomposed) < result.iterations


def _diagonal_start(rotated: torch.Tensor, basis_values: torch.Tensor):
    """Roots ``diag(√x)`` and kernels ``1 / (√x_i + √x_j)`` of a basis in which ``rotated``
    had the eigenvalues ``basis_values``."""
    roots = basis_values.sqrt()
    root = torch.diag_embed(roots).expand_as(rotated).clone()
    return root, warm._lyapunov_kernel(roots).expand_as(rotated).clone()


def _run_newton(rotated, root, kernel, tol, steps):
    norm = torch.linalg.matrix_norm(sqrtm_psd(rotated))
    scale = (norm, torch.full_like(norm, tol))
    return warm._newton(rotated, root, kernel, scale, steps, torch.empty_like(root))


def test_newton_steps_converge_to_the_root_in_a_fresh_basis() -> None:
    generator = torch.Generator().manual_seed(20)
    values = torch.tensor([0.5, 1.0, 3.0, 7.0], dtype=F64)
    drift = 1e-3 * torch.randn(3, 4, 4, generator=generator, dtype=F64)
    rotated = torch.diag(values) + drift + drift.mT
    root, kernel = _diagonal_start(rotated, values)
    outcome = _run_newton(rotated, root, kernel, 1e-13, 8)
    assert not bool(outcome.live.any()) and not bool(outcome.slow.any())
    torch.testing.assert_close(root, sqrtm_psd(rotated), rtol=0, atol=1e-13)


def test_newton_steps_flag_a_root_too_far_from_its_basis() -> None:
    # the basis of diag(1, 4) for a matrix whose eigenvectors are turned by 40°: the frozen
    # kernel contracts too slowly for the last correction to bound the error
    angle = torch.tensor(0.7, dtype=F64)
    turn = torch.stack([torch.stack([angle.cos(), -angle.sin()]), angle.sin().expand(2)])
    turn[1, 1] = angle.cos()
    rotated = (turn @ torch.diag(torch.tensor([1.0, 4.0], dtype=F64)) @ turn.mT)[None]
    root, kernel = _diagonal_start(rotated, torch.tensor([1.0, 4.0], dtype=F64))
    outcome = _run_newton(rotated, root, kernel, 1e-12, 6)
    assert outcome.slow.tolist() == [True] and outcome.live.tolist() == [False]


def test_newton_steps_of_a_root_do_not_depend_on_the_others() -> None:
    # a root that converges at its first step takes no more, whatever its neighbours need
    values = torch.tensor([1.0, 2.0, 5.0], dtype=F64)
    near = torch.diag(values) + 1e-9 * torch.ones(3, 3, dtype=F64)
    far = torch.diag(values) + 1e-2 * torch.ones(3, 3, dtype=F64)
    both = torch.stack([near, far])
    root, kernel = _diagonal_start(both, values)
    together = _run_newton(both, root, kernel, 1e-10, 4)
    alone_root, alone_kernel = _diagonal_start(near[None], values)
    alone = _run_newton(near[None], alone_root, alone_kernel, 1e-10, 4)
    # the near root converges at once, the far one is still going when the steps run out
    assert alone.live.tolist() == [False] and together.live.tolist() == [False, True]
    # a batch of one and a batch of two: the same arithmetic, perhaps other kernels
    assert_equal_up_to_rounding(root[0], alone_root[0])


def test_ill_conditioned_problems_go_to_the_robust_solver() -> None:
    easy, easy_weights = fixed_point_problems(1, 4, 3, 5, 1e2)
    hard, hard_weights = fixed_point_problems(2, 1, 3, 5, 1e10)
    cov, weights = torch.cat([easy, hard]), torch.cat([easy_weights, hard_weights])
    # 16 ε κ(H) ≤ tol fails for the hard problem at tol = 1e-12 (κ(H) ≈ 1e5)
    result = warm.solve_warm(cov, weights, max_iter=100, tol=1e-12)
    assert result.accepted.tolist() == [True] * 4 + [False]
    # the public function solves it all the same, with the robust solver's accuracy
    _, bary, info = wasserstein_barycenter_full(
        torch.zeros(5, 3, 5, dtype=F64), cov, weights, max_iter=500, return_info=True
    )
    assert bool(info.converged.all())
    torch.testing.assert_close(bary[:4], result.solution[:4], rtol=1e-10, atol=0)
    assert float(wasserstein_residual(bary[4:], cov[4:], weights[4:])) < 1e-9


def test_singular_and_non_finite_problems_go_to_the_robust_solver() -> None:
    cov, weights = fixed_point_problems(3, 3, 3, 4)
    cov[1] = 0.0  # every expert singular: the start has no Cholesky factor
    cov[2, 0, 0, 0] = torch.nan
    result = warm.solve_warm(cov, weights, max_iter=100, tol=1e-12)
    assert result.accepted.tolist() == [True, False, False]
    assert bool(result.converged[0])


@pytest.mark.parametrize("solve, batch", SOLVERS)
def test_float32_is_solved_in_float64_and_returned_in_float32(solve, batch: int) -> None:
    cov, weights = fixed_point_problems(4, batch, 4, 5)
    single = solve(cov.float(), weights.float(), max_iter=100, tol=1e-5)
    double = solve(cov.float().double(), weights.float().double(), 100, 1e-5)
    assert single.solution.dtype == F32 and single.residual.dtype == F32
    # the same float64 iterates, rounded once at the end
    assert torch.equal(single.solution, double.solution.float())


def test_a_converged_problem_leaves_the_iteration(monkeypatch) -> None:
    easy, easy_weights = fixed_point_problems(5, 6, 4, 5, 1e1)
    slow, slow_weights = fixed_point_problems(6, 1, 4, 5, 3e3)
    cov, weights = torch.cat([easy, slow]), torch.cat([easy_weights, slow_weights])
    sizes: list[int] = []
    mean = warm._Roots.mean

    def counting(self, w):
        sizes.append(w.shape[0])
        return mean(self, w)

    monkeypatch.setattr(warm._Roots, "mean", counting)
    together = warm.solve_warm(cov, weights, max_iter=200, tol=1e-10)
    monkeypatch.setattr(warm._Roots, "mean", mean)
    alone = warm.solve_warm(easy, easy_weights, max_iter=200, tol=1e-10)
    assert bool(together.converged.all()) and together.iterations > alone.iterations
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 7 and sizes[-1] == 1
    # leaving changes nothing in the others: each problem's arithmetic is its own (to
    # round-off: batches of other sizes may take other kernels)
    assert_equal_up_to_rounding(together.solution[:6], alone.solution)


def test_a_large_batch_is_solved_in_cache_sized_pieces_with_the_same_answers(
    monkeypatch,
) -> None:
    easy, easy_weights = fixed_point_problems(18, 11, 4, 5, 1e1)
    # roots too ill-conditioned to certify
    hard, hard_weights = fixed_point_problems(19, 1, 4, 5, 1e9)
    cov = torch.cat([easy[:6], hard, easy[6:]])
    weights = torch.cat([easy_weights[:6], hard_weights, easy_weights[6:]])
    whole = warm.solve_warm(cov, weights, max_iter=200, tol=1e-11)
    pieces: list[tuple[int, int]] = []
    piece = warm._solve_piece

    def recording(*args):
        result = piece(*args)
        pieces.append((args[0].shape[0], result.iterations))
        return result

    monkeypatch.setattr(warm, "_solve_piece", recording)
    # five problems' covariances per piece: 12 problems in three even pieces
    monkeypatch.setattr(warm, "CHUNK_BYTES", 5 * 4 * 5 * 5 * 8)
    chunked = warm.solve_warm(cov, weights, max_iter=200, tol=1e-11)
    assert [size for size, _ in pieces] == [4, 4, 4]
    assert chunked.iterations == max(steps for _, steps in pieces) == whole.iterations
    assert chunked.accepted.tolist() == whole.accepted.tolist() == [True] * 6 + [False] + [True] * 5
    accepted = whole.accepted
    # pieces of four and a batch of twelve: the same arithmetic, perhaps other kernels (75
    # of 275 entries differed by up to 1.3e-15 on an AMD EPYC); residuals are relative
    assert_equal_up_to_rounding(chunked.solution[accepted], whole.solution[accepted])
    assert_equal_up_to_rounding(chunked.residual[accepted], whole.residual[accepted], scale=1.0)
    assert chunked.converged[accepted].tolist() == whole.converged[accepted].tolist()
    assert bool(whole.converged[accepted].all())


def test_the_solve_runs_in_inference_mode_and_returns_ordinary_tensors(monkeypatch) -> None:
    cov, weights = fixed_point_problems(16, 3, 4, 3)
    modes: list[bool] = []
    solve = warm.solve_warm

    def recording(*args):
        modes.append(torch.is_inference_mode_enabled())
        return solve(*args)

    monkeypatch.setattr(gw, "solve_warm", recording)
    loc = torch.zeros(3, 4, 3, dtype=F64)
    _, bary, info = wasserstein_barycenter_full(loc, cov, weights, return_info=True)
    assert modes == [True]
    assert not any(t.is_inference() for t in (bary, info.residual, info.converged))
    bary.add_(1.0)  # an inference tensor would refuse this outside inference mode
    info.residual.zero_()
    # and gradients flow through the implicit backward as before
    leaf = cov.clone().requires_grad_()
    _, bary = wasserstein_barycenter_full(loc, leaf, weights)
    (gradient,) = torch.autograd.grad(bary.diagonal(dim1=-2, dim2=-1).sum(), leaf)
    assert modes == [True, True] and bool(torch.isfinite(gradient).all())


def test_small_solves_run_on_one_thread_and_restore_the_setting(monkeypatch) -> None:
    seen: list[int] = []
    solve = gw._solve

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return solve(*args, **kwargs)

    monkeypatch.setattr(gw, "_solve", recording)
    cov, weights = fixed_point_problems(7, 4, 3, 4)
    loc = torch.zeros(4, 3, 4, dtype=F64)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        wasserstein_barycenter_full(loc, cov, weights)
        monkeypatch.setattr(threads, "SMALL_WORK", 0)
        wasserstein_barycenter_full(loc, cov, weights)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]


# --- 2 × 2 problems: a few in Python floats, batches on tensors of entries ----------------


def test_two_by_two_serves_every_two_dimensional_problem(monkeypatch) -> None:
    calls = record_solver_calls(monkeypatch, two, ("_solve_floats", "_solve_batched"))
    monkeypatch.setattr(gw, "solve_warm", None)  # never reached in two dimensions
    for seed, batch in ((8, 1), (9, two.MAX_PROBLEMS + 1)):
        cov, weights = fixed_point_problems(seed, batch, 5, 2)
        _, bary, info = wasserstein_barycenter_full(
            torch.zeros(batch, 5, 2, dtype=F64), cov, weights, return_info=True
        )
        assert bool(info.converged.all())
        assert float(wasserstein_residual(bary, cov, weights).max()) <= 1e-12
    assert calls == [("_solve_floats", 1), ("_solve_batched", two.MAX_PROBLEMS + 1)]


@pytest.mark.parametrize("condition", [1e2, 1e5, 1e7, 1e10])
@pytest.mark.parametrize("seed, batch", [(286, two.MAX_PROBLEMS), (287, 16)])  # floats, batched
def test_two_by_two_certifies_what_it_accepts(condition: float, seed: int, batch: int) -> None:
    # its roots' round-off is ε κ(H): a problem it accepts has an exact residual within tol
    # (κ = 1e7 once slipped through: the check took the root of the roots' condition number)
    cov, weights = fixed_point_problems(seed, batch, 5, 2, condition)
    result = two.solve_two_by_two(cov, weights, max_iter=300, tol=1e-12)
    exact = wasserstein_residual(result.solution, cov, weights)
    converged = result.converged & result.accepted
    assert float(torch.where(converged, exact, 0.0).max()) <= 1.5e-12
    if condition == 1e2:  # κ(H) ≤ 1e2 < tol / (16 ε) ≈ 280: nothing to hand on
        assert bool(converged.all())


def test_a_tolerance_below_its_round_off_goes_straight_to_the_robust_solver(monkeypatch) -> None:
    cov, weights = fixed_point_problems(11, 3, 4, 3)
    monkeypatch.setattr(warm, "sqrtm_psd", None)  # any work at all would fail
    result = warm.solve_warm(cov, weights, max_iter=10, tol=0.0)
    assert not bool(result.accepted.any()) and result.iterations == 0


def test_two_by_two_hands_on_what_it_cannot_finish() -> None:
    # hypothesis found a float32 problem (κ = 1e5) that the unaccelerated iteration left at
    # residual 1.4e-5 > tol after 100 steps, reported as not converged
    cov, weights = fixed_point_problems(12, 1, 4, 2, 1e5)
    slow = two.solve_two_by_two(cov, weights, max_iter=3, tol=1e-12)
    assert not bool(slow.accepted.any()) and not bool(slow.converged.any())
    # the public function then solves it with the accelerated solvers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, bary, info = wasserstein_barycenter_full(
            torch.zeros(1, 4, 2), cov.float(), weights.float(), max_iter=100, return_info=True
        )
    assert bool(info.converged.all())
    assert float(wasserstein_residual(bary, cov.float(), weights.float())) <= 1e-5


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(3, 8),
    # Python floats (a few problems), tensors of entries (more)
    batch=st.one_of(st.integers(1, two.MAX_PROBLEMS), st.integers(two.MAX_PROBLEMS + 1, 40)),
    log_condition=st.floats(0.0, 3.0),
)
def test_two_by_two_agrees_with_the_warm_solver_and_problem_by_problem(
    seed: int, m: int, batch: int, log_condition: float
) -> None:
    cov, weights = fixed_point_problems(seed, batch, m, 2, 10**log_condition)
    batched = two.solve_two_by_two(cov, weights, max_iter=200, tol=1e-11)
    assert bool(batched.accepted.all()) and bool(batched.converged.all())
    exact = wasserstein_residual(batched.solution, cov, weights)
    assert float(exact.max()) <= 1e-11
    torch.testing.assert_close(batched.residual, exact, rtol=0.1, atol=1e-12)
    for other in (
        warm.solve_warm(cov, weights, max_iter=200, tol=1e-11).solution,
        torch.cat(
            [
                two.solve_two_by_two(c, w, 400, 1e-11).solution
                for c, w in zip(cov.split(1), weights.split(1), strict=True)
            ]
        ),
    ):
        difference = torch.linalg.matrix_norm(batched.solution - other)
        assert float((difference / torch.linalg.matrix_norm(other)).max()) < 1e-8


@pytest.mark.parametrize("seed, batch", [(10, two.MAX_PROBLEMS), (13, 8)])  # floats, tensors
def test_two_by_two_hands_hard_and_broken_problems_on_alone(seed: int, batch: int) -> None:
    cov, weights = fixed_point_problems(seed, batch, 3, 2)
    bad = cov.clone()
    bad[1] = torch.tensor([[1.0, 0.0], [0.0, 1e-12]], dtype=F64)  # κ(H) = 1e6 at tol 1e-12
    bad[2, 0] = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)  # indefinite
    bad[3, 1, 0, 0] = torch.nan
    result = two.solve_two_by_two(bad, weights, max_iter=100, tol=1e-12)
    expected = [i not in (1, 2, 3) for i in range(batch)]
    assert result.accepted.tolist() == expected and result.converged.tolist() == expected
    # the other problems are solved as they are without the bad ones
    rows = torch.tensor(expected)
    alone = two.solve_two_by_two(cov[rows], weights[rows], max_iter=100, tol=1e-12)
    torch.testing.assert_close(result.solution[rows], alone.solution, rtol=1e-13, atol=0)


def test_batched_two_by_two_solves_float32_in_float64() -> None:
    cov, weights = fixed_point_problems(14, 8, 4, 2)
    result = two.solve_two_by_two(cov.float(), weights.float(), max_iter=100, tol=1e-5)
    in_float64 = two.solve_two_by_two(
        cov.float().double(), weights.float().double(), max_iter=100, tol=1e-5
    )
    assert result.solution.dtype == F32 and result.residual.dtype == F32
    assert torch.equal(result.solution, in_float64.solution.float())


def test_batched_two_by_two_below_its_round_off_hands_everything_on(monkeypatch) -> None:
    cov, weights = fixed_point_problems(15, 6, 4, 2)
    monkeypatch.setattr(two, "_root", None)  # any work at all would fail
    result = two.solve_two_by_two(cov, weights, max_iter=10, tol=0.0)
    assert not bool(result.accepted.any()) and result.iterations == 0


def test_batched_two_by_two_drops_converged_problems(monkeypatch) -> None:
    cov, weights = fixed_point_problems(16, 6, 4, 2)
    cov[2] = torch.diag_embed(torch.rand(4, 2, dtype=F64) + 0.5)  # commuting: the start is exact
    rows: list[int] = []

    class Recording(two.Anderson):
        def __call__(self, point, image, keep=None):
            rows.append(point.shape[0])
            return super().__call__(point, image, keep)

    monkeypatch.setattr(two, "Anderson", Recording)
    result = two.solve_two_by_two(cov, weights, max_iter=100, tol=1e-12)
    assert bool(result.converged.all())
    assert rows[0] == 5 and rows == sorted(rows, reverse=True)
    assert float(result.residual[2]) <= 1e-15


# --- McCann's geodesic for 2 × 2 problems: Python floats (a few), tensors of entries ------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.one_of(st.integers(1, two.MAX_PROBLEMS), st.integers(two.MAX_PROBLEMS + 1, 40)),
    log_condition=st.floats(0.0, 8.0),
)
def test_two_by_two_mccann_agrees_with_the_batched_geodesic(
    seed: int, batch: int, log_condition: float
) -> None:
    cov, weights = fixed_point_problems(seed, batch, 2, 2, 10**log_condition)
    small = two.mccann_two_by_two(cov, weights)
    batched = gw._mccann(cov, weights, needs_grad=True)  # the autograd path: tensors
    # both are backward stable: they differ by about ε κ, and both are fixed points
    difference = torch.linalg.matrix_norm(small - batched) / torch.linalg.matrix_norm(batched)
    assert float(difference.max()) <= 1e-14 * 10**log_condition + 1e-14
    assert float(wasserstein_residual(small, cov, weights).max()) <= 1e-13


def test_two_by_two_mccann_is_exact_for_commuting_covariances() -> None:
    angle = torch.tensor(0.7, dtype=F64)
    q = torch.stack(
        [torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]
    )
    first, second = torch.tensor([4.0, 0.25], dtype=F64), torch.tensor([1.0, 9.0], dtype=F64)
    cov = torch.stack([q @ torch.diag(first) @ q.T, q @ torch.diag(second) @ q.T])[None]
    weights = torch.tensor([[0.3, 0.7]], dtype=F64)
    # walked from the heavier expert: t = 0.3 from the second
    expected = q @ torch.diag((0.3 * first.sqrt() + 0.7 * second.sqrt()).square()) @ q.T
    torch.testing.assert_close(two.mccann_two_by_two(cov, weights)[0], expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("repeats", [1, two.MAX_PROBLEMS])  # floats, tensors
def test_two_by_two_mccann_returns_a_lone_expert_exactly(repeats: int, dtype) -> None:
    cov, _ = fixed_point_problems(13, 2 * repeats, 2, 2)
    cov = cov.to(dtype)
    weights = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=dtype).repeat(repeats, 1)
    result = two.mccann_two_by_two(cov, weights)
    assert result.dtype == dtype
    assert torch.equal(result[0::2], cov[0::2, 1]) and torch.equal(result[1::2], cov[1::2, 0])


@pytest.mark.usefixtures("validation_disabled")
@pytest.mark.parametrize("batch", [1, two.MAX_PROBLEMS + 1])  # floats, tensors
def test_two_by_two_mccann_of_singular_experts_with_orthogonal_ranges(batch: int) -> None:
    # Σ1 = diag(1, 0), Σ2 = diag(0, 1): S2 S1 = 0, any rotation is optimal and the
    # geodesic is diag((1 - t)², t²), here walked t = 0.3 from the heavier first expert
    pair = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]], dtype=F64)
    weights = torch.tensor([[0.7, 0.3]], dtype=F64).expand(batch, 2)
    result = two.mccann_two_by_two(pair.expand(batch, 2, 2, 2), weights)
    expected = torch.diag(torch.tensor([0.49, 0.09], dtype=F64)).expand(batch, 2, 2)
    torch.testing.assert_close(result, expected, rtol=1e-14, atol=1e-15)


def test_two_by_two_mccann_on_tensors_agrees_with_python_floats() -> None:
    cov, weights = fixed_point_problems(16, 3 * two.MAX_PROBLEMS, 2, 2, 1e4)
    batched = two.mccann_two_by_two(cov, weights)
    one_by_one = torch.cat(
        [two.mccann_two_by_two(c[None], w[None]) for c, w in zip(cov, weights, strict=True)]
    )
    torch.testing.assert_close(batched, one_by_one, rtol=1e-13, atol=0)
    # float32 is computed in float64 and rounded once
    single = two.mccann_two_by_two(cov.float(), weights.float())
    double = two.mccann_two_by_two(cov.float().double(), weights.float().double())
    assert torch.equal(single, double.float())


def test_two_by_two_mccann_serves_every_batch_outside_autograd(monkeypatch) -> None:
    cov, weights = fixed_point_problems(14, 1, 2, 2)
    calls: list[int] = []
    mccann = two.mccann_two_by_two

    def counting(*args):
        calls.append(args[0].shape[0])
        return mccann(*args)

    monkeypatch.setattr(gw, "mccann_two_by_two", counting)
    loc = torch.zeros(1, 2, 2, dtype=F64)
    _, bary = wasserstein_barycenter_full(loc.float(), cov.float(), weights.float())
    assert calls == [1] and bary.dtype == F32
    assert float(wasserstein_residual(bary, cov, weights).max()) <= 1e-6
    # through autograd, the polar geodesic
    wasserstein_barycenter_full(loc, cov.clone().requires_grad_(), weights)
    assert calls == [1]
    big, big_weights = fixed_point_problems(15, two.MAX_PROBLEMS + 1, 2, 2)
    _, bary = wasserstein_barycenter_full(torch.zeros(big.shape[:-1], dtype=F64), big, big_weights)
    assert calls == [1, two.MAX_PROBLEMS + 1]
    assert float(wasserstein_residual(bary, big, big_weights).max()) <= 1e-13
