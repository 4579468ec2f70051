"""W2 barycenters and distances of Gaussians: closed forms, POT oracle, invariances, gradients."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import random_full_gaussian, random_weights, spd_matrices

import barycentric as bc
import barycentric.functional.gaussian_wasserstein as gw
from barycentric.functional import (
    wasserstein_barycenter_diag,
    wasserstein_barycenter_full,
    wasserstein_distance_diag,
    wasserstein_distance_full,
)
from barycentric.linalg import sqrtm_psd, symmetrise

F64 = torch.float64


def _problem(batch: tuple[int, ...], m: int, d: int, seed: int = 0, cond: float = 1e2):
    generator = torch.Generator().manual_seed(seed)
    loc, cov = random_full_gaussian(generator, d, (*batch, m), cond)
    weights = random_weights(generator, m, batch)
    return loc, cov, weights / weights.sum(-1, keepdim=True)


def _fixed_point_residual(cov: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor):
    root = sqrtm_psd(cov).unsqueeze(-3)
    image = (weights[..., None, None] * sqrtm_psd(root @ covs @ root)).sum(-3)
    return torch.linalg.matrix_norm(image - cov) / torch.linalg.matrix_norm(cov)


def _objective(loc, cov, locs, covs, weights):
    distance = wasserstein_distance_full(loc.unsqueeze(-2), cov.unsqueeze(-3), locs, covs)
    return (weights * distance).sum(-1)


def test_one_dimensional_closed_form() -> None:
    loc, bary = wasserstein_barycenter_full(
        torch.tensor([[0.0], [1.0], [5.0]], dtype=F64),
        torch.tensor([[[1.0]], [[4.0]], [[16.0]]], dtype=F64),
        torch.tensor([0.5, 0.25, 0.25], dtype=F64),
    )
    assert torch.allclose(loc, torch.tensor([1.5], dtype=F64))
    assert torch.allclose(bary, torch.tensor([[(0.5 + 0.5 + 1.0) ** 2]], dtype=F64))


def test_diagonal_closed_form_equals_full_solver() -> None:
    generator = torch.Generator().manual_seed(3)
    loc = torch.randn(4, 3, 5, dtype=F64, generator=generator)
    scale = torch.rand(4, 3, 5, dtype=F64, generator=generator) + 0.2
    weights = torch.rand(4, 3, dtype=F64, generator=generator)
    mean, std = wasserstein_barycenter_diag(loc, scale, weights)
    w = weights / weights.sum(-1, keepdim=True)
    assert torch.allclose(std, (w.unsqueeze(-1) * scale).sum(-2))
    cov = torch.diag_embed(scale.square())
    # without autograd the diagonal fast path runs; with it, the fixed point (whose
    # gradient also covers off-diagonal directions)
    for covs in (cov, cov.clone().requires_grad_()):
        full_mean, full_cov = wasserstein_barycenter_full(loc, covs, weights)
        assert torch.allclose(full_mean, mean)
        assert torch.allclose(full_cov, torch.diag_embed(std.square()), atol=1e-10)


def test_commuting_covariances_are_exact_in_one_step() -> None:
    loc, _, weights = _problem((6,), 4, 5)
    basis, _ = torch.linalg.qr(torch.randn(5, 5, dtype=F64, generator=torch.Generator()))
    spectrum = torch.rand(6, 4, 5, dtype=F64) + 0.1
    commuting = symmetrise((basis * spectrum.unsqueeze(-2)) @ basis.mT)
    _, bary, info = wasserstein_barycenter_full(loc, commuting, weights, return_info=True)
    root_mean = (weights.unsqueeze(-1) * spectrum.sqrt()).sum(-2)
    expected = (basis * root_mean.square().unsqueeze(-2)) @ basis.mT
    assert info.iterations == 1
    assert torch.allclose(bary, expected, atol=1e-12)


@pytest.mark.parametrize("m", [3, 5])
def test_agrees_with_pot(m: int) -> None:
    loc, cov, weights = _problem((8,), m, 4, seed=m, cond=1e3)
    mean, bary = wasserstein_barycenter_full(loc, cov, weights, tol=1e-12, max_iter=500)
    for b in range(8):
        pot_mean, pot_cov = ot.gaussian.bures_wasserstein_barycenter(
            loc[b].numpy(), cov[b].numpy(), weights[b].numpy(), num_iter=2000, eps=1e-13
        )
        np.testing.assert_allclose(mean[b].numpy(), pot_mean, atol=1e-12)
        np.testing.assert_allclose(bary[b].numpy(), pot_cov, rtol=1e-7, atol=1e-9)


def test_two_experts_follow_the_mccann_geodesic() -> None:
    loc, cov, weights = _problem((5,), 2, 4, seed=7, cond=1e3)
    _, geodesic, info = wasserstein_barycenter_full(loc, cov, weights, return_info=True)
    assert info.iterations == 0
    # the same problem through the fixed point: a third expert with zero weight
    cov3 = torch.cat([cov, cov[:, :1]], 1)
    loc3 = torch.cat([loc, loc[:, :1]], 1)
    weights3 = torch.cat([weights, torch.zeros(5, 1, dtype=F64)], 1)
    _, solved = wasserstein_barycenter_full(loc3, cov3, weights3, tol=1e-13, max_iter=500)
    assert torch.allclose(geodesic, solved, rtol=1e-8, atol=1e-9)
    assert (_fixed_point_residual(geodesic, cov, weights) < 1e-10).all()


@settings(max_examples=15)
@given(
    covs=spd_matrices(d=3, batch=(4,), max_condition=1e6),
    raw=st.lists(st.floats(0.05, 1.0), min_size=4, max_size=4),
)
def test_fixed_point_residual_at_solution_for_ill_conditioned_inputs(covs, raw) -> None:
    weights = torch.tensor(raw, dtype=F64)
    weights = weights / weights.sum()
    loc = torch.zeros(4, 3, dtype=F64)
    _, bary, info = wasserstein_barycenter_full(loc, covs, weights, max_iter=1000, return_info=True)
    assert bool(info.converged)
    assert info.residual <= 1e-10
    assert _fixed_point_residual(bary, covs, weights) < 1e-8
    assert (torch.linalg.eigvalsh(bary) > 0).all()


@pytest.mark.parametrize("cond", [1e2, 1e6])
def test_accelerated_solve_matches_the_plain_iteration_in_fewer_steps(cond: float) -> None:
    loc, cov, weights = _problem((16,), 5, 4, seed=3, cond=cond)
    _, fast, fast_info = wasserstein_barycenter_full(
        loc, cov, weights, max_iter=1000, return_info=True
    )
    # backward="unroll" runs the plain Álvarez-Esteban iteration (differentiable steps)
    _, plain, plain_info = wasserstein_barycenter_full(
        loc,
        cov.clone().requires_grad_(),
        weights,
        backward="unroll",
        max_iter=1000,
        return_info=True,
    )
    assert bool(fast_info.converged.all()) and bool(plain_info.converged.all())
    assert fast_info.iterations < plain_info.iterations
    assert torch.allclose(fast, plain.detach(), rtol=1e-8, atol=1e-8)
    assert (_fixed_point_residual(fast, cov, weights) < 1e-9).all()


def test_permutation_translation_scaling_and_rotation() -> None:
    loc, cov, weights = _problem((3,), 4, 3, seed=11)
    mean, bary = wasserstein_barycenter_full(loc, cov, weights)
    perm = torch.tensor([2, 0, 3, 1])
    pm, pc = wasserstein_barycenter_full(loc[:, perm], cov[:, perm], weights[:, perm])
    assert torch.allclose(pm, mean) and torch.allclose(pc, bary, atol=1e-10)
    shift = torch.tensor([1.0, -2.0, 3.0], dtype=F64)
    tm, tc = wasserstein_barycenter_full(loc + shift, cov, weights)
    assert torch.allclose(tm, mean + shift) and torch.allclose(tc, bary, atol=1e-12)
    _, sc = wasserstein_barycenter_full(loc, 7.0 * cov, weights)
    assert torch.allclose(sc, 7.0 * bary, rtol=1e-9, atol=1e-9)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, dtype=F64))
    _, rc = wasserstein_barycenter_full(loc, rotation @ cov @ rotation.mT, weights)
    assert torch.allclose(rc, rotation @ bary @ rotation.mT, atol=1e-9)


def test_barycenter_minimises_the_weighted_objective() -> None:
    loc, cov, weights = _problem((), 4, 3, seed=5)
    mean, bary = wasserstein_barycenter_full(loc, cov, weights)
    best = _objective(mean, bary, loc, cov, weights)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        direction = symmetrise(torch.randn(3, 3, dtype=F64, generator=generator))
        shift = torch.randn(3, dtype=F64, generator=generator)
        for eps in (1e-2, 1e-3):
            worse = _objective(mean + eps * shift, bary + eps * direction, loc, cov, weights)
            assert worse > best


def test_masked_expert_equals_dropped_expert_even_with_nan() -> None:
    loc, cov, weights = _problem((4,), 5, 3, seed=2)
    weights = weights.clone()
    weights[1, 2] = 0.0
    cov = cov.clone()
    cov[1, 2] = torch.nan
    loc = loc.clone().requires_grad_()
    cov.requires_grad_()
    mean, bary = wasserstein_barycenter_full(loc, cov, weights)
    keep = torch.tensor([0, 1, 3, 4])
    dm, dc = wasserstein_barycenter_full(loc[1, keep], cov[1, keep], weights[1, keep])
    assert torch.allclose(mean[1], dm) and torch.allclose(bary[1], dc, atol=1e-10)
    grad_loc, grad_cov = torch.autograd.grad(mean.sum() + bary.sum(), (loc, cov))
    assert torch.isfinite(grad_cov).all()
    assert (grad_cov[1, 2] == 0).all() and (grad_loc[1, 2] == 0).all()


def test_batched_equals_one_by_one_and_leading_dims_broadcast() -> None:
    loc, cov, weights = _problem((2, 3), 3, 4, seed=9)
    mean, bary = wasserstein_barycenter_full(loc, cov, weights)
    for i in range(2):
        for j in range(3):
            m, c = wasserstein_barycenter_full(loc[i, j], cov[i, j], weights[i, j])
            assert torch.allclose(mean[i, j], m) and torch.allclose(bary[i, j], c, atol=1e-10)
    _, shared = wasserstein_barycenter_full(loc, cov[0, 0], weights)
    assert shared.shape == (2, 3, 4, 4)


def test_float32_matches_float64() -> None:
    loc, cov, weights = _problem((4,), 5, 6, seed=4)
    _, bary64 = wasserstein_barycenter_full(loc, cov, weights)
    _, bary32, info = wasserstein_barycenter_full(
        loc.float(), cov.float(), weights.float(), return_info=True
    )
    assert bary32.dtype == torch.float32 and bool(info.converged.all())
    assert torch.allclose(bary32.double(), bary64, rtol=1e-4, atol=1e-4)


def test_unconverged_solve_warns_and_reports() -> None:
    loc, cov, weights = _problem((2,), 4, 5, seed=1, cond=1e4)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        _, _, info = wasserstein_barycenter_full(
            loc, cov, weights, max_iter=2, tol=0.0, return_info=True
        )
    assert info.iterations == 2
    assert not info.converged.any()
    assert (info.residual > 0).all()


@pytest.mark.parametrize("m", [2, 4])
def test_gradcheck_implicit(m: int) -> None:
    loc, cov, weights = _problem((2,), m, 3, seed=m)
    cov.requires_grad_()
    weights.requires_grad_()

    # gradcheck perturbs one entry at a time: symmetrise so the input stays a covariance
    def barycenter(c, w):
        return wasserstein_barycenter_full(loc, symmetrise(c), w, tol=1e-13, max_iter=500)[1]

    assert torch.autograd.gradcheck(barycenter, (cov, weights), atol=1e-6)


def test_gradcheck_unroll_and_diagonal() -> None:
    loc, cov, weights = _problem((), 3, 2, seed=8)
    cov.requires_grad_()

    def unrolled(c):
        c = symmetrise(c)
        return wasserstein_barycenter_full(loc, c, weights, backward="unroll", tol=1e-13)[1]

    assert torch.autograd.gradcheck(unrolled, (cov,), atol=1e-6)
    scale = torch.rand(3, 4, dtype=F64, requires_grad=True)
    locs = torch.randn(3, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(wasserstein_barycenter_diag, (locs, scale, weights))


def test_implicit_gradient_equals_unrolled_gradient() -> None:
    loc, cov, weights = _problem((3,), 5, 4, seed=6, cond=1e3)
    probe = torch.randn(3, 4, 4, dtype=F64)
    grads = []
    for backward in ("implicit", "unroll"):
        c = cov.clone().requires_grad_()
        w = weights.clone().requires_grad_()
        _, bary = wasserstein_barycenter_full(loc, c, w, backward=backward, tol=1e-13)
        grads.append(torch.autograd.grad((bary * probe).sum(), (c, w)))
    for implicit, unrolled in zip(*grads, strict=True):
        assert torch.allclose(implicit, unrolled, rtol=1e-6, atol=1e-8)


def test_the_adjoint_iteration_is_accelerated_with_and_without_a_graph(monkeypatch) -> None:
    loc, cov, weights = _problem((6,), 5, 6, seed=21, cond=1e2)
    probe = torch.randn(6, 6, 6, dtype=F64, generator=torch.Generator().manual_seed(22))
    solve = gw.solve_adjoint
    steps: dict[bool, list[bool]] = {False: [], True: []}  # accelerated, per create_graph

    def counting(pull, grad, max_iter, tol, accelerate):
        def counted(adjoint):
            steps[create_graph].append(accelerate)
            return pull(adjoint)

        return solve(counted, grad, max_iter, tol, accelerate)

    monkeypatch.setattr(gw, "solve_adjoint", counting)
    found = {}
    # the same accelerated iteration, to the same tolerance: a graph used to record the
    # plain one and stop at max_iter, and its gradient differed from the other's
    for create_graph in (False, True):
        c = cov.clone().requires_grad_()
        _, bary = wasserstein_barycenter_full(loc, c, weights, tol=1e-12)
        (found[create_graph],) = torch.autograd.grad(
            (bary * probe).sum(), c, create_graph=create_graph
        )
    assert steps[False] and all(steps[False]) and steps[True] == steps[False]
    torch.testing.assert_close(found[False], found[True].detach(), rtol=1e-9, atol=1e-12)


def test_the_implicit_backward_in_pieces_gives_the_same_derivatives(monkeypatch) -> None:
    loc, cov, weights = _problem((7,), 4, 5, seed=23, cond=1e2)
    probe = torch.randn(7, 5, 5, dtype=F64, generator=torch.Generator().manual_seed(24))
    direction = torch.randn(cov.shape, dtype=F64, generator=torch.Generator().manual_seed(25))

    def derivatives():
        c, w = cov.clone().requires_grad_(), weights.clone().requires_grad_()
        _, bary = wasserstein_barycenter_full(loc, c, w, tol=1e-13)
        grad_c, grad_w = torch.autograd.grad((bary * probe).sum(), (c, w), create_graph=True)
        (hvp,) = torch.autograd.grad((grad_c * direction).sum(), c)
        return grad_c.detach(), grad_w.detach(), hvp

    whole = derivatives()
    sizes: list[int] = []
    vjp = gw._implicit_vjp

    def recording(solution, *args):
        sizes.append(solution.shape[0])
        return vjp(solution, *args)

    monkeypatch.setattr(gw, "_implicit_vjp", recording)
    # three problems' covariances per piece: 7 problems in pieces of 3, 3 and 1
    monkeypatch.setattr(gw, "_ADJOINT_PIECE_BYTES", 3 * 4 * 5 * 5 * 8)
    pieces = derivatives()
    assert sizes == [3, 3, 1] * 2  # the gradient, then the Hessian-vector product
    # each piece's adjoint stops on its own at tol = 1e-13: they agree to about that, in norm
    # (20 directions: gradients 2e-14, Hessian-vector products 3e-13 at most)
    for together, apart in zip(whole, pieces, strict=True):
        difference = torch.linalg.vector_norm(apart - together)
        assert float(difference) <= 1e-11 * float(torch.linalg.vector_norm(together))


def test_distances_agree_with_pot_and_closed_forms() -> None:
    loc, cov, _ = _problem((6,), 2, 4, seed=12)
    ours = wasserstein_distance_full(loc[:, 0], cov[:, 0], loc[:, 1], cov[:, 1])
    for b in range(6):
        pot = ot.gaussian.bures_wasserstein_distance(
            loc[b, 0].numpy(), loc[b, 1].numpy(), cov[b, 0].numpy(), cov[b, 1].numpy()
        )
        np.testing.assert_allclose(ours[b].sqrt().item(), pot, rtol=1e-10)
    scale = torch.rand(2, 4, dtype=F64) + 0.1
    diag = wasserstein_distance_diag(loc[0, 0], scale[0], loc[0, 1], scale[1])
    full = wasserstein_distance_full(
        loc[0, 0], torch.diag(scale[0] ** 2), loc[0, 1], torch.diag(scale[1] ** 2)
    )
    assert torch.allclose(diag, full)
    same = wasserstein_distance_full(loc[:, 0], cov[:, 0], loc[:, 0], cov[:, 0])
    assert torch.allclose(same, torch.zeros(6, dtype=F64), atol=1e-10)


def test_gradcheck_distance() -> None:
    loc, cov, _ = _problem((2,), 2, 3, seed=13)
    args = (loc[:, 0], cov[:, 0], loc[:, 1], cov[:, 1])
    args = tuple(a.clone().requires_grad_() for a in args)
    assert torch.autograd.gradcheck(wasserstein_distance_full, args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backward": "adjoint"}, "backward"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_bad_solver_arguments(kwargs, match) -> None:
    loc, cov, weights = _problem((), 3, 2)
    with pytest.raises(ValueError, match=match):
        wasserstein_barycenter_full(loc, cov, weights, **kwargs)


def test_cov_not_matching_loc() -> None:
    loc, cov, weights = _problem((), 3, 2)
    with pytest.raises(ValueError, match="cov"):
        wasserstein_barycenter_full(loc, cov[:2], weights)
    with pytest.raises(ValueError, match="cov"):
        wasserstein_barycenter_full(loc[:, :1], cov, weights)


def test_distribution_adapter_reports_info() -> None:
    loc, cov, weights = _problem((4,), 3, 3)
    experts = torch.distributions.MultivariateNormal(loc, covariance_matrix=cov)
    q, info = bc.wasserstein_barycenter(experts, weights, return_info=True)
    assert q.batch_shape == (4,) and bool(info.converged.all()) and info.iterations > 0
    diag = torch.distributions.Independent(torch.distributions.Normal(loc, loc.exp()), 1)
    _, exact = bc.wasserstein_barycenter(diag, return_info=True)
    assert exact.iterations == 0 and bool(exact.converged.all())


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
def test_empty_batch_has_empty_gradients(backward: str) -> None:
    loc, cov, weights = _problem((2,), 3, 2)
    loc, cov = loc[:0].clone().requires_grad_(), cov[:0].clone().requires_grad_()
    mean, bary, info = wasserstein_barycenter_full(
        loc, cov, weights[:0], backward=backward, return_info=True
    )
    assert bary.shape == (0, 2, 2) and info.converged.shape == (0,)
    (mean.sum() + bary.sum()).backward()
    assert loc.grad.shape == loc.shape and cov.grad.shape == cov.shape


def test_mccann_in_float32_matches_float64_at_high_condition() -> None:
    # the geodesic is formed without inverses (polar factor), so float32 keeps its digits
    loc, cov, weights = _problem((16,), 2, 6, seed=3, cond=1e6)
    _, reference = wasserstein_barycenter_full(loc, cov, weights)
    _, bary = wasserstein_barycenter_full(loc.float(), cov.float(), weights.float())
    error = torch.linalg.matrix_norm(bary.double() - reference) / torch.linalg.matrix_norm(
        reference
    )
    assert error.max() <= 5e-5
    assert (_fixed_point_residual(reference, cov, weights) < 1e-9).all()
