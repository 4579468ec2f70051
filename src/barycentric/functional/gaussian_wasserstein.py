"""2-Wasserstein barycenters and distances of Gaussians (the Bures–Wasserstein geometry).

The barycenter :math:`\\arg\\min_q \\sum_m \\lambda_m W_2^2(q, q_m)` of Gaussians
:math:`q_m = \\mathcal N(\\mu_m, \\Sigma_m)` is the Gaussian (Agueh & Carlier, 2011) with mean
:math:`\\mu = \\sum_m \\lambda_m \\mu_m` and covariance :math:`\\Sigma`, the unique positive
definite solution of

.. math::

    \\Sigma = \\sum_m \\lambda_m \\left(\\Sigma^{1/2} \\Sigma_m \\Sigma^{1/2}\\right)^{1/2}.

It is computed by the fixed-point iteration of Álvarez-Esteban et al. (2016),
:math:`\\Sigma_{k+1} = \\bar T_k \\Sigma_k \\bar T_k` with
:math:`\\bar T_k = \\sum_m \\lambda_m T_m` the mean of the optimal maps
:math:`T_m = \\Sigma_k^{-1/2} (\\Sigma_k^{1/2} \\Sigma_m \\Sigma_k^{1/2})^{1/2}
\\Sigma_k^{-1/2}` from :math:`\\Sigma_k` to the experts, started from
:math:`\\Sigma_0 = (\\sum_m \\lambda_m \\Sigma_m^{1/2})^2`, the exact answer when the
covariances commute (diagonal ones included), which the first residual then confirms, and
accelerated by Anderson mixing of the covariances (Walker & Ni, 2011; memory 4); through
autograd (``backward="unroll"``) the start is tilted off that answer
(``_unrolled_tilt``). Three solvers share that iteration, its residual
:math:`\\|\\sum_m \\lambda_m (\\Sigma_k^{1/2} \\Sigma_m \\Sigma_k^{1/2})^{1/2} -
\\Sigma_k\\|_F / \\|\\Sigma_k\\|_F` and its stopping rule, and differ in how they take the
roots:

* the **warm-started** solver (``functional._warm_fixed_point``), for every
  problem it can certify: it works in float64 on the Cholesky factor :math:`\\Sigma_k =
  L_k L_k^\\top`, keeps each root :math:`(L_k^\\top \\Sigma_m L_k)^{1/2}` in the eigenbasis of
  an earlier step and refines it there by Newton steps, one matrix product each, so that
  most steps decompose no matrix at all; a single small problem on the CPU
  (``functional._one_problem``) instead takes its roots from an eigendecomposition at every
  step, which costs fewer operations than the warm solver's bookkeeping;
* **2 × 2** problems (``functional._two_by_two``): the same iteration with the
  closed-form root of a 2 × 2 matrix, on tensors of entries (batched and accelerated, in
  float64), or on Python floats without acceleration for a few problems on the CPU;
* the **robust** solver, for the problems those two do not accept (roots whose condition
  number :math:`\\kappa` exceeds :math:`\\mathrm{tol} / (16 \\varepsilon)`, singular or
  indefinite covariances, steps that are not finite) and for ``backward="unroll"``: it
  iterates on a factor :math:`\\Sigma_k = F_k F_k^\\top` so that no inverse and no product
  of two roots is ever formed: with the polar decomposition
  :math:`\\Sigma_m^{1/2} F_k = Q_m H_m`,

  .. math::

      T_m F_k = \\Sigma_m^{1/2} Q_m, \\qquad
      F_{k+1} = \\sum_m \\lambda_m \\Sigma_m^{1/2} Q_m, \\qquad
      H_m = (F_k^\\top \\Sigma_m F_k)^{1/2}.

  :math:`H_m` comes from the singular values of :math:`\\Sigma_m^{1/2} F_k`, so its round-off
  is that of :math:`\\Sigma_m^{1/2} F_k`, not of its square, and every iterate
  :math:`F_k F_k^\\top` is positive semi-definite in floating point; the mixed covariance's
  Cholesky factor (or the plain step's factor, where the mixture is not positive definite)
  is the next :math:`F`.

The residual bounds the error of :math:`\\Sigma_k` by about itself divided by
:math:`1 - \\rho`, :math:`\\rho` the contraction rate. Two experts need no iteration: the
barycenter is the point :math:`t = \\lambda_2` of McCann's geodesic, :math:`\\Sigma_t = G
G^\\top` with :math:`G = (1-t) \\Sigma_1^{1/2} + t \\Sigma_2^{1/2} Q` and :math:`Q` the polar
factor of :math:`\\Sigma_2^{1/2} \\Sigma_1^{1/2}`; outside autograd, 2 × 2 problems take
it in closed form where its roots are certified by the same rule
(``functional._two_by_two``), and the others, where the round-off of :math:`(L^\\top
\\Sigma_2 L)^{1/2}` (:math:`\\Sigma_1 = L L^\\top`) is certified as above, with :math:`G =
(1-t) L + t L^{-\\top} (L^\\top \\Sigma_2 L)^{1/2}` in float64, one eigendecomposition
instead of two and a singular value decomposition (``functional._geodesic``); the polar
form takes the rest. On the CPU, solves whose batched products
are small (``barycentric._threads``) run on one intra-op thread, which keeps them fast
when other processes share the cores. On a CUDA device, a barycenter whose experts hold at
most 32,768 numbers (``batch · M · d²``) is solved on the host, where each of its hundreds
of small operations costs a fraction of a kernel launch, and its results (and derivatives)
come back to the device (``barycentric._host``).

Numerics. Every problem is normalised by a power of two near its weighted mean variance
before anything is computed and scaled back after, so the results are scale-equivariant,
:math:`\\mathrm{bary}(c \\Sigma) = c\\, \\mathrm{bary}(\\Sigma)`, from the smallest to the
largest variances the dtype holds. Only the problems still iterating are computed; one that
converges leaves, and one whose step is not finite leaves with ``converged=False``, so a
hard or broken problem neither slows nor breaks the others (and a decomposition that fails
on one matrix fails only its own problem, see :mod:`barycentric.linalg`). Measured
accuracy (worst relative Frobenius error over random problems with condition number
:math:`\\kappa`, against float64 at ``tol=1e-13``, ``d`` from 2 to 32, default ``tol``; measured
on the robust solver, and the bounds the tests hold every solver to):

======================  ========  ========  ========  ========
float32                 κ ≤ 1e2   κ = 1e4   κ = 1e5   κ = 1e6
======================  ========  ========  ========  ========
fixed point (M ≥ 3)     4e-5      1e-4      3e-4      7e-4
two experts (McCann)    2e-6      5e-6      5e-6      1e-5
======================  ========  ========  ========  ========

In float64 the fixed point agrees with the reference to 1e-10 up to :math:`\\kappa = 10^{12}`,
where some problems need more than the default 100 steps (and say so).

Gradients of the fixed point are implicit: with :math:`F` the map above and
:math:`\\Sigma^\\star = F(\\Sigma^\\star, \\theta)`, the adjoint :math:`u = \\bar\\Sigma +
(\\partial_\\Sigma F)^\\top u` is solved by the same kind of iteration, with the same
Anderson mixing (about half the steps of the plain iteration), and
:math:`\\bar\\theta = (\\partial_\\theta F)^\\top u`, so memory does not grow with the number of
iterations. The products with :math:`(\\partial_\\Sigma F)^\\top` and
:math:`(\\partial_\\theta F)^\\top` are taken in closed form, from one Lyapunov equation per
expert that is diagonal in a basis computed once (``functional._adjoint``), for every problem
whose roots the forward's condition rule certifies, and by autograd through the map's polar
form for the others; on the CPU a large batch's adjoint is solved in pieces of about 1 MiB of
covariances, which fit a core's cache (``functional._pieces``). This backward is itself
differentiable: under ``create_graph=True`` the adjoint is solved by the same accelerated
iteration, to the same ``tol``, and is itself differentiated implicitly (its derivative
solves the transposed equation, with :math:`\\partial_\\Sigma F` in place of its transpose,
in closed form where certified), and the fixed point it starts from carries its own implicit
derivative, so Hessian-vector products, gradient penalties and higher derivatives are exact
(to ``tol``). An adjoint iteration that stops at ``max_iter`` short of ``tol`` warns.
``backward="unroll"`` differentiates through the iterations instead (the reference the
implicit gradient is tested against). Every root has a closed-form, twice (and more)
differentiable backward (:mod:`barycentric.linalg`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch

from barycentric._entry import entry_point, readable, untracked, warn_at_caller
from barycentric._host import run_on_host, solve_on_host
from barycentric._threads import solver_threads
from barycentric._validation import all_finite, check_int, check_real, promote_floating
from barycentric.functional._adjoint import ClosedFormAdjoint, solve_adjoint
from barycentric.functional._anderson import Anderson
from barycentric.functional._experts import (
    prepare_experts,
    weighted_matrix_sum,
    weighted_sum,
)
from barycentric.functional._geodesic import mccann_cholesky
from barycentric.functional._one_problem import serves_one, solve_one
from barycentric.functional._pieces import piece_size
from barycentric.functional._two_by_two import mccann_two_by_two, solve_two_by_two
from barycentric.functional._warm_fixed_point import WarmSolution, solve_warm
from barycentric.linalg import polar, power_of_two_scale, sqrtm_psd, symmetrise

__all__ = [
    "FixedPointInfo",
    "average_diag",
    "default_tolerance",
    "warn_unconverged",
    "wasserstein_barycenter_diag",
    "wasserstein_barycenter_full",
    "wasserstein_distance_diag",
    "wasserstein_distance_full",
]

_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
#: Bytes of experts' covariances whose adjoint is solved at once on the CPU (``_pieces``):
#: each step makes several passes over stacks of that size (with the closed-form adjoint,
#: 1,024 × (M = 5, d = 16): backward 418–428 ms in pieces, 707–758 ms at once; 64 × (5, 64)
#: 444–462 against 581–673 ms; neutral at d = 4; 2 MiB pieces within noise of these).
_ADJOINT_PIECE_BYTES = 2**20


class FixedPointInfo(NamedTuple):
    """What the fixed-point solver did.

    Attributes
    ----------
    iterations : int
        Fixed-point steps taken (0 for the closed forms).
    residual : Tensor, shape (...)
        Fixed-point residual :math:`\\|\\sum_m \\lambda_m (\\Sigma^{1/2} \\Sigma_m
        \\Sigma^{1/2})^{1/2} - \\Sigma\\|_F / \\|\\Sigma\\|_F` of the returned covariance of
        each problem in the batch; ``inf`` for a problem whose inputs or step were not
        finite.
    converged : Tensor, shape (...), bool
        ``residual <= tol`` for each problem.
    """

    iterations: int
    residual: torch.Tensor
    converged: torch.Tensor

    @classmethod
    def exact(cls, result: torch.Tensor, event_dims: int) -> FixedPointInfo:
        """The report of a closed form's ``result`` (batch dimensions, then ``event_dims``
        more): no iteration; residual 0 and converged where the result is finite, residual
        ``inf`` and not converged where it is not (inputs that were not finite, which
        validation lets through when it is off)."""
        finite = all_finite(result.detach(), tuple(range(-event_dims, 0)))
        residual = result.new_zeros(finite.shape).masked_fill_(~finite, torch.inf)
        return cls(0, residual, finite)


def default_tolerance(dtype: torch.dtype) -> float:
    """Default ``tol`` of the fixed point: 1e-12 in float64, 1e-5 in float32, 1e-3 below.

    The round-off floor of the fixed-point residual is a few tens of machine epsilons
    whatever the conditioning (measured up to condition number 1e6 in float32 and 1e12 in
    float64: no root of a product and no inverse is formed), so both are reached; they
    are about 80 float32 and 5000 float64 epsilons.
    """
    return _TOLERANCE.get(dtype, 1e-3)


def check_solver_options(
    max_iter: object, tol: object, backward: object
) -> tuple[int, float | None]:
    """``max_iter`` and ``tol`` as numbers; ``ValueError`` naming the option that is not a
    positive integer, a non-negative real (or ``None``), or ``"implicit"``/``"unroll"``.

    Every kernel that takes the fixed point's options checks them, closed forms included,
    so that a mistaken option fails the same way whatever the experts' family.
    """
    if backward not in ("implicit", "unroll"):
        raise ValueError(f"`backward` must be 'implicit' or 'unroll', got {backward!r}")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    return max_iter, None if tol is None else check_real(tol, "tol", minimum=0.0)


@entry_point
def wasserstein_barycenter_diag(
    loc: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """2-Wasserstein barycenter of diagonal Gaussians, in closed form.

    Diagonal covariances commute, so the barycenter's standard deviations are the weighted
    mean of the experts' standard deviations.

    Parameters
    ----------
    loc, scale : Tensor, shape (..., M, d)
        Means and standard deviations of ``M`` experts.
    weights : Tensor, optional
        Non-negative, broadcastable to ``(..., M)``, normalised to sum to 1. ``None``:
        uniform.

    Returns
    -------
    loc, scale : Tensor, shape (..., d)
        :math:`\\mu = \\sum_m \\lambda_m \\mu_m`, :math:`\\sigma = \\sum_m \\lambda_m \\sigma_m`.

    Examples
    --------
    >>> import torch
    >>> from barycentric.functional import wasserstein_barycenter_diag
    >>> loc, scale = wasserstein_barycenter_diag(
    ...     torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [3.0]]))
    >>> loc, scale
    (tensor([1.]), tensor([2.]))
    """
    loc, scale, weights = prepare_experts(loc, scale, weights, full=False)
    return average_diag(loc, scale, weights)


def average_diag(
    loc: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The arithmetic of :func:`wasserstein_barycenter_diag` on prepared inputs, unchecked.

    ``weights (..., S, M)`` against ``loc, scale (..., 1, M, d)`` gives the barycenters of
    ``S`` subsets in one contraction.
    """
    return weighted_sum(weights, loc), weighted_sum(weights, scale)


def _mean_variance(cov: torch.Tensor) -> torch.Tensor:
    """Mean of the diagonal of ``cov (..., d, d)``: the average variance, never overflowing."""
    return torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1)


def _factor_step(
    factor: torch.Tensor, cov_roots: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed-point step on a factor ``F`` of ``S = F Fᵀ``: ``(residual, next factor)``.

    With :math:`\\Sigma_m^{1/2} F = Q_m H_m` (polar decomposition),
    :math:`H_m = (F^\\top \\Sigma_m F)^{1/2}` and the next factor is
    :math:`\\sum_m \\lambda_m \\Sigma_m^{1/2} Q_m`. The residual is
    :math:`\\|\\sum_m \\lambda_m H_m - F^\\top F\\|_F / \\|F^\\top F\\|_F`, the fixed-point
    residual of :math:`S` (rotating ``F`` rotates both terms alike). Both norms are taken
    of the matrices divided by a power of two near the largest entry of :math:`F^\\top F`: a
    huge expert of tiny weight sets the normalisation of the problem far above the scale of
    the answer, where squares of entries underflow (in float32 a residual of 0 at a residual
    of 1e-3).
    """
    q, h = polar(cov_roots @ factor.unsqueeze(-3))
    gram = factor.mT @ factor
    unit = power_of_two_scale(gram.detach().abs().amax((-2, -1)))[..., None, None]
    residual = torch.linalg.matrix_norm((weighted_matrix_sum(weights, h) - gram) / unit)
    residual = residual / torch.linalg.matrix_norm(gram / unit)
    return residual, weighted_matrix_sum(weights, cov_roots @ q)


def _fixed_point_map(
    cov: torch.Tensor, cov_roots: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """:math:`F(S) = \\bar T S \\bar T`, differentiable: the map the implicit gradient inverts.

    The factor iteration is the same map on :math:`S` (a factor rotated by :math:`W` gives
    the next factor rotated by :math:`W`), but as a map of factors it leaves rotations
    unchanged, so the implicit function theorem is applied to covariances.
    """
    factor = _factor_step(sqrtm_psd(cov), cov_roots, weights)[1]
    return symmetrise(factor @ factor.mT)


def _solve(
    covs: torch.Tensor,
    weights: torch.Tensor,
    max_iter: int,
    tol: float,
    differentiable: bool,
) -> tuple[torch.Tensor, FixedPointInfo]:
    """The fixed point of each problem of ``covs (B, M, d, d)``, ``weights (B, M)``.

    A problem with one present expert (one weight not zero) is that expert; one with an
    entry that is not finite cannot be solved (NaN, residual ``inf``). The others: outside
    autograd, by the solver :func:`_warm_solver` picks for them, as if the problems answered
    here were absent, and by :func:`_solve_robust` for the problems it does not accept
    (ill-conditioned, singular, or with steps that are not finite); through autograd
    (``backward="unroll"``), by :func:`_solve_robust`.
    """
    if differentiable:
        return _solve_robust(covs, weights, max_iter, tol, differentiable)
    # one expert present: the answer is that expert, exactly (the weights of the others are
    # zero; a weight of 1 is not enough: one below ε/2 of it still moves a huge expert's root)
    finite = all_finite(covs, (-3, -2, -1)) & all_finite(weights, -1)
    solution = torch.where(finite[:, None, None], weighted_matrix_sum(weights, covs), torch.nan)
    residual = torch.where(finite, 0.0, torch.inf).to(covs.dtype)
    converged = finite
    rest = torch.nonzero(finite & ((weights > 0).sum(-1) > 1)).squeeze(-1)
    if rest.numel() == 0:
        return solution, FixedPointInfo(0, residual, converged)
    covs, weights = covs[rest], weights[rest]
    warm = _warm_solver(covs)(covs, weights, max_iter, tol)
    found, iterations = warm.solution, warm.iterations
    found_residual, found_converged = warm.residual, warm.converged
    hard = torch.nonzero(~warm.accepted).squeeze(-1)
    if hard.numel() > 0:
        robust, info = _solve_robust(covs[hard], weights[hard], max_iter, tol, differentiable)
        found = found.index_copy(0, hard, robust)
        found_residual = found_residual.index_copy(0, hard, info.residual)
        found_converged = found_converged.index_copy(0, hard, info.converged)
        iterations = max(iterations, info.iterations)
    return solution.index_copy(0, rest, found), FixedPointInfo(
        iterations,
        residual.index_copy(0, rest, found_residual),
        converged.index_copy(0, rest, found_converged),
    )


def _warm_solver(covs: torch.Tensor) -> Callable[..., WarmSolution]:
    """The solver of ``covs (B, M, d, d)`` outside autograd: closed-form roots for 2 × 2
    problems, exact roots for one small problem on the CPU, else warm-started roots."""
    if covs.shape[-1] == 2:
        return solve_two_by_two
    return solve_one if serves_one(covs) else solve_warm


def _solve_robust(
    covs: torch.Tensor,
    weights: torch.Tensor,
    max_iter: int,
    tol: float,
    differentiable: bool,
) -> tuple[torch.Tensor, FixedPointInfo]:
    """The fixed point of each problem of ``covs (B, M, d, d)``, ``weights (B, M)``.

    Iterates on factors (:func:`_factor_step`), from :math:`(\\sum_m \\lambda_m
    \\Sigma_m^{1/2})^2`, or, through autograd (``differentiable``), from the tilted start
    of :func:`_unrolled_tilt`. Only the active problems are computed: a problem leaves when
    its residual reaches ``tol`` (it returns the covariance that residual certifies), when
    a step is not finite (it returns its last finite iterate, ``converged=False``, residual
    ``inf``), or at ``max_iter``.
    """
    batch = covs.shape[0]
    cov_roots = sqrtm_psd(covs)
    factor = weighted_matrix_sum(weights, cov_roots)
    if differentiable:
        factor = factor @ _unrolled_tilt(covs.shape[-1], covs.dtype, covs.device)
    solution = symmetrise(factor @ factor)
    residual = covs.new_full((batch,), torch.inf)
    converged = torch.zeros(batch, dtype=torch.bool, device=covs.device)
    active = torch.nonzero(all_finite(factor, (-2, -1))).squeeze(-1)
    factor = factor[active]
    accelerate = None if differentiable else Anderson()
    iterations = 0
    while active.numel() > 0 and iterations < max_iter:
        iterations += 1
        step_residual, new = _factor_step(factor, cov_roots[active], weights[active])
        step_residual = step_residual.detach()
        done = step_residual <= tol
        broken = ~done & ~(torch.isfinite(step_residual) & all_finite(new, (-2, -1)))
        leaving = done | broken | (iterations == max_iter)
        residual = residual.index_put(
            (active,), torch.where(torch.isfinite(step_residual), step_residual, torch.inf)
        )
        converged = converged.index_put((active,), done)
        left = factor[leaving]
        solution = solution.index_copy(0, active[leaving], symmetrise(left @ left.mT))
        keep = ~leaving
        active = active[keep]
        if accelerate is None:
            factor = new[keep]
        elif active.numel() > 0:
            point, image = factor[keep], new[keep]
            mixed = accelerate(point @ point.mT, image @ image.mT, keep)
            chol, failed = torch.linalg.cholesky_ex(mixed)
            factor = torch.where((failed == 0)[..., None, None], chol, image)
    return solution, FixedPointInfo(iterations, residual, converged)


def _unrolled_tilt(dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The factor :math:`C = I + K` of the start :math:`\\bar R\\, C C^\\top \\bar R`
    (:math:`\\bar R = \\sum_m \\lambda_m \\Sigma_m^{1/2}`) of the unrolled iteration, ``(d, d)``.

    The unrolled derivative is the derivative of the last iterate; its error, that of the
    start's derivative carried through the steps, shrinks at the rate of the map's
    derivative in every direction, but the stopping rule sees only the error of the start
    itself. Where the covariances commute (diagonal ones included), :math:`\\bar R^2` is
    the answer, with the derivative of the commuting closed form, which is wrong in the
    directions that do not commute: the first residual would stop the iteration there with
    that derivative (1.4 % off on a diagonal problem of three 3 × 3 experts). :math:`K` is
    strictly lower triangular, of Frobenius norm 1/2 (so :math:`C` is invertible and the
    start positive definite), with entries of the Weyl sequence :math:`\\{n \\varphi\\} -
    1/2`: but for inputs in a set of measure zero, the start's error then has a part in
    every direction, and the stopping rule holds the derivative to about the tolerance too
    (measured: within 1e-11 of the implicit derivative at commuting, near-commuting and
    generic inputs, at ``tol=1e-13``). It is scale-equivariant, as :math:`\\bar R` is.
    """
    rows, columns = torch.tril_indices(dim, dim, -1)
    golden = (1 + math.sqrt(5)) / 2
    entries = torch.frac(golden * torch.arange(1, rows.numel() + 1, dtype=torch.float64)) - 0.5
    tilt = torch.eye(dim, dtype=torch.float64)
    if entries.numel() > 0:
        tilt[rows, columns] = 0.5 * entries / torch.linalg.vector_norm(entries)
    return tilt.to(device, dtype)


def _implicit_vjp(
    solution: torch.Tensor,
    covs: torch.Tensor,
    weights: torch.Tensor,
    grad: torch.Tensor,
    needs: tuple[bool, bool],
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(∂F/∂covs)ᵀ u, (∂F/∂weights)ᵀ u`` with ``u = grad + (∂F/∂S)ᵀ u`` at ``S = solution``.

    Called with grad mode on (the backward of a ``create_graph=True`` call), it builds a
    graph (:func:`_differentiable_vjp`); otherwise the adjoint is taken in closed form
    (``functional._adjoint``) for the problems that certifies, and through autograd for the
    others.
    """
    # torch.func.vjp's backward runs with grad mode on over tensors that record nothing
    if torch.is_grad_enabled() and solution.requires_grad:
        return _differentiable_vjp(solution, covs, weights, grad, needs, max_iter, tol)
    closed, certified = ClosedFormAdjoint.where_certified(solution, covs, weights, tol)
    if closed is None:
        return _recorded_vjp(solution, covs, weights, grad, needs, max_iter, tol)
    easy = torch.nonzero(certified).squeeze(-1)
    adjoint = solve_adjoint(closed.pull, grad[easy].to(torch.float64), max_iter, tol, True)
    found = [
        None if part is None else part.to(covs.dtype) for part in closed.inputs(adjoint, needs)
    ]
    if easy.numel() == covs.shape[0]:
        return found[0], found[1]
    hard = torch.nonzero(~certified).squeeze(-1)
    rest = _recorded_vjp(
        solution[hard], covs[hard], weights[hard], grad[hard], needs, max_iter, tol
    )
    # every row is either easy or hard: each is written once
    return tuple(
        None
        if part is None
        else torch.empty_like(like).index_copy_(0, easy, part).index_copy_(0, hard, other)
        for like, part, other in zip((covs, weights), found, rest, strict=True)
    )


def _recorded_vjp(
    solution: torch.Tensor,
    covs: torch.Tensor,
    weights: torch.Tensor,
    grad: torch.Tensor,
    needs: tuple[bool, bool],
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`_implicit_vjp` through autograd's derivative of the map's polar form."""
    with torch.enable_grad():
        s = solution.detach().requires_grad_()
        c = covs.detach().requires_grad_(needs[0])
        w = weights.detach().requires_grad_(needs[1])
        image = _fixed_point_map(s, sqrtm_psd(c), w)
        pull = _autograd_product(image, s, tangent=False)
        adjoint = solve_adjoint(pull, grad, max_iter, tol, True)
        return _input_products(image, (c, w), adjoint, needs, create_graph=False)


def _autograd_product(
    image: torch.Tensor, point: torch.Tensor, tangent: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The symmetric part of :math:`J^\\top u` (or, with ``tangent``, of :math:`J v`) for
    :math:`J` the derivative of ``image = F(point)`` recorded by autograd: a vector-Jacobian
    product, or the vector-Jacobian product of that product, which is linear in its
    cotangent (taken at zero), with respect to the cotangent."""
    if not tangent:
        return lambda u: symmetrise(torch.autograd.grad(image, point, u, retain_graph=True)[0])
    probe = torch.zeros_like(point, requires_grad=True)
    (pulled,) = torch.autograd.grad(image, point, probe, create_graph=True)
    return lambda v: symmetrise(torch.autograd.grad(pulled, probe, v, retain_graph=True)[0])


def _solve_linear(
    solution: torch.Tensor,
    covs: torch.Tensor,
    weights: torch.Tensor,
    rhs: torch.Tensor,
    max_iter: int,
    tol: float,
    tangent: bool,
) -> torch.Tensor:
    """:math:`x = \\operatorname{sym}(r) + \\operatorname{sym}(J^\\top x)` (the adjoint) or,
    with ``tangent``, :math:`x = \\operatorname{sym}(r) + \\operatorname{sym}(J x)`, at
    :math:`S` = ``solution (B, d, d)`` for ``rhs (B, d, d)`` :math:`r`, by the accelerated
    iteration (:func:`~barycentric.functional._adjoint.solve_adjoint`, which warns if it
    stops short of ``tol``): in closed form for the problems ``functional._adjoint``
    certifies, through autograd for the others. In ``rhs``' dtype, with no graph."""
    solution, covs, weights, rhs = (t.detach() for t in (solution, covs, weights, rhs))
    closed, certified = ClosedFormAdjoint.where_certified(solution, covs, weights, tol)
    found = torch.empty_like(rhs)
    if closed is not None:
        easy = torch.nonzero(certified).squeeze(-1)
        product = closed.push if tangent else closed.pull
        x = solve_adjoint(product, rhs[easy].to(torch.float64), max_iter, tol, True)
        found.index_copy_(0, easy, x.to(rhs.dtype))
    hard = torch.nonzero(~certified).squeeze(-1)
    if hard.numel() > 0:
        with torch.enable_grad():
            s = solution[hard].requires_grad_()
            image = _fixed_point_map(s, sqrtm_psd(covs[hard]), weights[hard])
            product = _autograd_product(image, s, tangent)
        found.index_copy_(0, hard, solve_adjoint(product, rhs[hard], max_iter, tol, True))
    return found


def _differentiable_vjp(
    solution: torch.Tensor,
    covs: torch.Tensor,
    weights: torch.Tensor,
    grad: torch.Tensor,
    needs: tuple[bool, bool],
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`_implicit_vjp` as a graph, for the backward of a ``create_graph=True`` call.

    ``solution`` is then the output of :class:`_ImplicitFixedPoint`, whose own (implicit)
    derivative carries the dependence of the fixed point on the inputs; the adjoint comes
    from :class:`_LinearSolve`, solved to ``tol`` with the first-order backward's acceleration
    and differentiated implicitly too; and the products with :math:`(\\partial F /
    \\partial \\theta)^\\top` are recorded through autograd's derivative of the map's polar
    form. Fresh views of ``covs`` and ``weights`` make those products partial derivatives of
    ``F``: ``solution`` depends on the tensors, not on their views.
    """
    adjoint = _LinearSolve.apply(solution, covs, weights, grad, max_iter, tol, False)
    c, w = covs.view_as(covs), weights.view_as(weights)
    image = _fixed_point_map(solution, sqrtm_psd(c), w)
    return _input_products(image, (c, w), adjoint, needs, create_graph=True)


def _input_products(
    image: torch.Tensor,
    inputs: tuple[torch.Tensor, torch.Tensor],
    adjoint: torch.Tensor,
    needs: tuple[bool, bool],
    *,
    create_graph: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(∂F/∂covs)ᵀ adjoint, (∂F/∂weights)ᵀ adjoint`` by autograd from the map's ``image``
    of ``inputs = (covs, weights)``, each ``None`` where ``needs`` says it is not wanted."""
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    grads = iter(
        torch.autograd.grad(image, wanted, adjoint, create_graph=create_graph) if wanted else ()
    )
    return tuple(next(grads) if need else None for need in needs)


class _LinearSolve(torch.autograd.Function):
    """The solution :math:`x` of :math:`x = \\operatorname{sym} r + \\operatorname{sym}(A x)`
    at :math:`S`, :math:`A = J^\\top` (the adjoint) or, with ``tangent``, :math:`A = J`, as a
    function of ``(solution, covs, weights, rhs)``, differentiated implicitly to every order.

    For a cotangent :math:`\\bar x`, with :math:`z` the solution of the other system,
    :math:`z = \\operatorname{sym} \\bar x + \\operatorname{sym}(A^\\top z)` (this function
    again, so that its own derivative is implicit too), the linear equation gives
    :math:`\\bar r = z` and, for :math:`p` any of :math:`S`, the covariances and the weights,
    :math:`\\bar p = \\partial_p \\langle z, A(p)\\, x \\rangle`, taken by autograd through
    the map's polar form (a second derivative of the map for :math:`J^\\top`, a third for
    :math:`J`). Both solves stop at ``tol`` (:func:`_solve_linear`).
    """

    @staticmethod
    def forward(solution, covs, weights, rhs, max_iter, tol, tangent):
        return _solve_linear(solution, covs, weights, rhs, max_iter, tol, tangent)

    @staticmethod
    def setup_context(ctx, inputs, output):
        solution, covs, weights, _, max_iter, tol, tangent = inputs
        ctx.save_for_backward(solution, covs, weights, output)
        ctx.options = (max_iter, tol, tangent)

    @staticmethod
    @entry_point(
        name="The implicit second derivative of the Wasserstein barycenter",
        why="its linear solves stop on values; backward='unroll' can be mapped",
    )
    def backward(ctx, grad_found):
        solution, covs, weights, found = ctx.saved_tensors
        max_iter, tol, tangent = ctx.options
        other = _LinearSolve.apply(solution, covs, weights, grad_found, max_iter, tol, not tangent)
        needs = ctx.needs_input_grad[:3]
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # fresh views: derivatives with respect to them are partial, holding ``found``
            # (a function of the tensors themselves) fixed
            s = (
                solution.view_as(solution)
                if solution.requires_grad
                else solution.detach().requires_grad_()
            )
            c, w = covs.view_as(covs), weights.view_as(weights)
            image = _fixed_point_map(s, sqrtm_psd(c), w)
            if tangent:  # J x: the vector-Jacobian product of the (linear) Jᵀ(·), at zero
                probe = torch.zeros_like(s, requires_grad=True)
                (pulled,) = torch.autograd.grad(image, s, probe, create_graph=True)
                (product,) = torch.autograd.grad(pulled, probe, found, create_graph=True)
            else:
                (product,) = torch.autograd.grad(image, s, found, create_graph=True)
            inputs = [t for t, need in zip((s, c, w), needs, strict=True) if need]
            grads = iter(
                torch.autograd.grad((other * product).sum(), inputs, create_graph=create_graph)
                if inputs
                else ()
            )
        return (*(next(grads) if need else None for need in needs), other, None, None, None)


class _ImplicitFixedPoint(torch.autograd.Function):
    """Identity on the solution ``S*`` whose backward differentiates ``S* = F(S*, covs, w)``."""

    @staticmethod
    def forward(solution, covs, weights, max_iter, tol):
        return solution.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, covs, weights, ctx.max_iter, ctx.tol = inputs
        ctx.save_for_backward(output, covs, weights)

    @staticmethod
    @entry_point(
        name="The implicit derivative of the Wasserstein barycenter",
        why="its adjoint iteration stops on values; backward='unroll' can be mapped",
    )
    def backward(ctx, grad):
        solution, covs, weights = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:3]
        size = piece_size(covs, _ADJOINT_PIECE_BYTES, covs.element_size())
        with solver_threads(covs.device, _work(covs)):
            parts = [
                _implicit_vjp(*piece, needs, ctx.max_iter, ctx.tol)
                for piece in zip(
                    *(t.split(size) for t in (solution, covs, weights, grad)), strict=True
                )
            ]
        grad_covs, grad_weights = (
            torch.cat([part[i] for part in parts]) if need else None for i, need in enumerate(needs)
        )
        return None, grad_covs, grad_weights, None, None


def _mccann(covs: torch.Tensor, weights: torch.Tensor, needs_grad: bool) -> torch.Tensor:
    """The point :math:`t = \\lambda_2` of the geodesic from ``covs[..., 0]`` to ``covs[..., 1]``.

    Walked from the expert of larger weight, so that :math:`t \\le 1/2`; a lone expert
    (:math:`t = 0`) is returned as it is (an absent expert's weight has no derivative).
    Through autograd, the polar form (:func:`_mccann_polar`); outside it, 2 × 2 problems in
    closed form (``functional._two_by_two``) where its roots are certified, the others
    from a Cholesky factor (``functional._geodesic``) where its round-off is certified,
    and the polar form for the rest.
    """
    batch, dim = covs.shape[:-3], covs.shape[-1]
    if needs_grad:
        first, second, t = _walked(covs, weights)
        return torch.where(t == 0, first, _mccann_polar(first, second, t))
    tol = default_tolerance(covs.dtype)
    flat_covs, flat_weights = covs.reshape(-1, 2, dim, dim), weights.reshape(-1, 2)
    if dim == 2:
        found = mccann_two_by_two(flat_covs, flat_weights, tol)  # NaN where uncertified
        if bool(found.isnan().any()):
            hard = torch.nonzero(found[:, 0, 0].isnan()).squeeze(-1)
            general = _mccann_general(flat_covs[hard], flat_weights[hard], tol)
            found = found.index_copy(0, hard, general)
        return found.view(*batch, dim, dim)
    return _mccann_general(flat_covs, flat_weights, tol).view(*batch, dim, dim)


def _walked(
    covs: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(first, second, t)`` for ``covs (..., 2, d, d)`` and ``weights (..., 2)``: the expert
    of larger weight, the other, and the other's weight ``(..., 1, 1)``."""
    swap = (weights[..., 1] > weights[..., 0])[..., None, None]
    first = torch.where(swap, covs[..., 1, :, :], covs[..., 0, :, :])
    second = torch.where(swap, covs[..., 0, :, :], covs[..., 1, :, :])
    t = torch.where(swap, weights[..., 0, None, None], weights[..., 1, None, None])
    return first, second, t


def _mccann_general(covs: torch.Tensor, weights: torch.Tensor, tol: float) -> torch.Tensor:
    """McCann's interpolant of each problem of ``covs (B, 2, d, d)``, ``weights (B, 2)``, any
    ``d``, outside autograd: from a Cholesky factor where its round-off is certified to
    ``tol`` (``functional._geodesic``), the polar form elsewhere."""
    # no autograd records to keep (as for the fixed point's solve); the result leaves as a copy
    with torch.inference_mode():
        first, second, t = _walked(covs, weights)
        found, accepted = mccann_cholesky(first, second, t, tol)
        hard = torch.nonzero(~accepted).squeeze(-1)
        if hard.numel() > 0:
            polar_form = _mccann_polar(first[hard], second[hard], t[hard])
            found = found.index_copy(0, hard, polar_form)
        result = torch.where(t == 0, first, found)
    return result.clone()


def _mccann_polar(first: torch.Tensor, second: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """:math:`\\Sigma_t = G G^\\top` with :math:`G = (1-t) \\Sigma_1^{1/2} + t \\Sigma_2^{1/2} Q`,
    :math:`Q` the orthogonal polar factor of :math:`\\Sigma_2^{1/2} \\Sigma_1^{1/2}`
    (:math:`T \\Sigma_1^{1/2} = \\Sigma_2^{1/2} Q` for the optimal map :math:`T`), so no
    inverse is formed and no product of the covariances squares their condition number."""
    root, other = sqrtm_psd(first), sqrtm_psd(second)
    factor = (1 - t) * root + t * other @ polar(other @ root)[0]
    return symmetrise(factor @ factor.mT)


def _work(covs: torch.Tensor) -> int:
    """Flops of one batched product over ``covs (..., M, d, d)``: ``batch · M · d³`` (0 for
    anything else, which validation then refuses)."""
    shape = getattr(covs, "shape", ())
    return math.prod(shape[:-2]) * shape[-1] ** 3 if len(shape) >= 2 else 0


def _device(tensor: object) -> torch.device:
    return tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")


def _is_diagonal(covs: torch.Tensor) -> bool:
    return bool((covs == torch.diag_embed(torch.diagonal(covs, dim1=-2, dim2=-1))).all())


def _diagonal_closed_form(covs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    stddev = torch.diagonal(covs, dim1=-2, dim2=-1).sqrt()
    return torch.diag_embed(weighted_sum(weights, stddev).square())


@entry_point
def wasserstein_barycenter_full(
    loc: torch.Tensor,
    cov: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    max_iter: int = 100,
    tol: float | None = None,
    backward: Literal["implicit", "unroll"] = "implicit",
    return_info: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, FixedPointInfo]:
    """2-Wasserstein barycenter of full-covariance Gaussians.

    Solves :math:`\\Sigma = \\sum_m \\lambda_m (\\Sigma^{1/2} \\Sigma_m \\Sigma^{1/2})^{1/2}`
    for every problem of the batch at once (see the module docstring for the iteration,
    its start, its accuracy and the exact fast paths: one expert is returned as it is, two
    experts use McCann's geodesic, diagonal covariances, outside autograd, the closed
    form). Every symmetric positive definite input gives a finite positive semi-definite
    covariance, and ``bary(c Σ) = c bary(Σ)`` for every ``c > 0`` the dtype holds.

    Parameters
    ----------
    loc : Tensor, shape (..., M, d)
        Means of the ``M`` experts.
    cov : Tensor, shape (..., M, d, d)
        Symmetric positive definite covariances.
    weights : Tensor, optional
        Non-negative, broadcastable to ``(..., M)``; normalised to sum to 1. A zero weight
        removes an expert. ``None``: uniform.
    max_iter : int
        Maximum number of fixed-point steps (also bounds the adjoint iteration).
    tol : float, optional
        A problem stops (and stops costing steps) when its fixed-point residual
        :math:`\\|\\sum_m \\lambda_m (\\Sigma^{1/2} \\Sigma_m \\Sigma^{1/2})^{1/2} - \\Sigma\\|_F /
        \\|\\Sigma\\|_F` is at most ``tol`` (a number, at least 0). Default
        :func:`default_tolerance` of the dtype (1e-12 in float64, 1e-5 in float32).
    backward : {"implicit", "unroll"}
        How gradients of the covariance are computed: the implicit function theorem at the
        fixed point (memory independent of the iterations), or autograd through every step.
        Both give second derivatives too (``create_graph=True``).
    return_info : bool
        Also return a :class:`FixedPointInfo`.

    Returns
    -------
    loc : Tensor, shape (..., d)
        :math:`\\sum_m \\lambda_m \\mu_m`.
    cov : Tensor, shape (..., d, d)
        The barycenter's covariance. A problem that did not converge holds its last
        finite iterate.
    info : FixedPointInfo
        Only with ``return_info=True``.

    Warns
    -----
    RuntimeWarning
        Once per call, naming how many problems of the batch have not reached ``tol``
        after ``max_iter`` steps or could not be solved; their ``info.converged`` is
        ``False``, and the other problems are computed as if they were absent.

    References
    ----------
    Álvarez-Esteban, del Barrio, Cuesta-Albertos, Matrán (2016). A fixed-point approach to
    barycenters in Wasserstein space. *J. Math. Anal. Appl.* 441(2).

    Examples
    --------
    >>> import torch
    >>> from barycentric.functional import wasserstein_barycenter_full
    >>> cov = torch.stack([torch.eye(2), 9 * torch.eye(2)]).double()
    >>> loc, bary = wasserstein_barycenter_full(torch.zeros(2, 2).double(), cov)
    >>> bary
    tensor([[4., 0.],
            [0., 4.]], dtype=torch.float64)
    """
    max_iter, tol = check_solver_options(max_iter, tol, backward)
    arguments = (loc, cov, weights)
    options = {"max_iter": max_iter, "tol": tol, "backward": backward}
    if solve_on_host(*arguments):
        mean, bary, info, tol = run_on_host(_barycenter_full, cov.device, *arguments, **options)
    else:
        mean, bary, info, tol = _barycenter_full(*arguments, **options)
    warn_unconverged(info, tol)
    return (mean, bary, info) if return_info else (mean, bary)


def _barycenter_full(
    loc: torch.Tensor,
    cov: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    max_iter: int,
    tol: float | None,
    backward: Literal["implicit", "unroll"],
) -> tuple[torch.Tensor, torch.Tensor, FixedPointInfo, float]:
    """:func:`wasserstein_barycenter_full` where its inputs are, without the warning; also
    returns the tolerance it used."""
    # small solves run on one intra-op thread, validation included (barycentric._threads)
    with solver_threads(_device(cov), _work(cov)):
        loc, cov, weights = prepare_experts(loc, cov, weights, full=True)
        # after promotion: integer or mixed-precision inputs get the computing dtype's tolerance
        tol = default_tolerance(cov.dtype) if tol is None else tol
        mean = weighted_sum(weights, loc)
        needs_grad = torch.is_grad_enabled() and (cov.requires_grad or weights.requires_grad)
        # the barycenter is 1-homogeneous: solve at unit scale, where no product of roots can
        # underflow or overflow, and scale back (exactly, by a power of two)
        scale = power_of_two_scale((weights * _mean_variance(cov)).sum(-1))
        covs = cov / scale[..., None, None, None]
        info = None
        if covs.shape[-3] == 1:
            bary = covs[..., 0, :, :]
        elif covs.shape[-3] == 2:
            bary = _mccann(covs, weights, needs_grad)
        elif not needs_grad and _is_diagonal(covs):
            bary = _diagonal_closed_form(covs, weights)
        else:
            batch, (m, d) = covs.shape[:-3], covs.shape[-3:-1]
            flat_covs = covs.reshape(math.prod(batch), m, d, d)
            flat_weights = weights.reshape(math.prod(batch), m)
            if backward == "unroll":
                bary, info = _solve(flat_covs, flat_weights, max_iter, tol, differentiable=True)
            else:
                # the solve keeps no autograd records: inference mode skips their upkeep (a
                # fifth of a small problem's time); its tensors leave it as copies
                with torch.inference_mode():
                    solution, info = _solve(
                        untracked(flat_covs),
                        untracked(flat_weights),
                        max_iter,
                        tol,
                        differentiable=False,
                    )
                bary = _ImplicitFixedPoint.apply(solution, flat_covs, flat_weights, max_iter, tol)
                info = FixedPointInfo(
                    info.iterations, info.residual.clone(), info.converged.clone()
                )
            bary = bary.reshape(*batch, d, d)
            info = FixedPointInfo(
                info.iterations, info.residual.reshape(batch), info.converged.reshape(batch)
            )
        bary = bary * scale[..., None, None]
        if info is None:
            info = FixedPointInfo.exact(bary, 2)
        return mean, bary, info, tol


def warn_unconverged(info: FixedPointInfo, tol: float) -> None:
    """One warning for the whole batch, naming how many problems did not converge (none
    where the flags cannot be read: under :func:`torch.compile` or vmap)."""
    if not readable(info.converged):
        return
    unconverged = ~info.converged
    count = int(unconverged.sum())
    if count == 0:
        return
    broken = int((unconverged & ~torch.isfinite(info.residual)).sum())
    reached = info.residual[unconverged & torch.isfinite(info.residual)]
    detail = (
        [f"largest residual {reached.max().item():.2e} > tol {tol:.1e}"] if len(reached) else []
    )
    if broken:
        detail.append(f"{broken} could not be solved (an input or a step was not finite)")
    warn_at_caller(
        f"Wasserstein barycenter fixed point did not converge for {count} of "
        f"{info.converged.numel()} problems in {info.iterations} iterations "
        f"({'; '.join(detail)}); their rows have converged=False, the other rows are "
        "unaffected",
    )


@entry_point
def wasserstein_distance_diag(
    loc_p: torch.Tensor, scale_p: torch.Tensor, loc_q: torch.Tensor, scale_q: torch.Tensor
) -> torch.Tensor:
    """Squared 2-Wasserstein distance between diagonal Gaussians.

    :math:`W_2^2 = \\|\\mu_p - \\mu_q\\|^2 + \\|\\sigma_p - \\sigma_q\\|^2`.

    Parameters
    ----------
    loc_p, scale_p, loc_q, scale_q : Tensor, shape (..., d)
        Broadcastable against each other.

    Returns
    -------
    Tensor, shape (...)
        In the promoted floating dtype of the inputs (float32 with float64 gives float64,
        integer data the default float dtype).
    """
    loc_p, scale_p, loc_q, scale_q = promote_floating(
        ("loc_p", loc_p), ("scale_p", scale_p), ("loc_q", loc_q), ("scale_q", scale_q)
    )
    return (loc_p - loc_q).square().sum(-1) + (scale_p - scale_q).square().sum(-1)


@entry_point
def wasserstein_distance_full(
    loc_p: torch.Tensor, cov_p: torch.Tensor, loc_q: torch.Tensor, cov_q: torch.Tensor
) -> torch.Tensor:
    """Squared 2-Wasserstein (Bures–Wasserstein) distance between Gaussians.

    :math:`W_2^2 = \\|\\mu_p - \\mu_q\\|^2 + \\operatorname{tr}\\big(\\Sigma_p + \\Sigma_q -
    2 (\\Sigma_p^{1/2} \\Sigma_q \\Sigma_p^{1/2})^{1/2}\\big)`, clamped at zero against
    round-off.

    The trace of the cross term is the sum of the singular values of
    :math:`\\Sigma_q^{1/2} \\Sigma_p^{1/2}` (:func:`~barycentric.linalg.polar`), so the
    product of the covariances is never formed; the covariances are normalised by a power
    of two first, so :math:`W_2^2(c \\Sigma_p, c \\Sigma_q) = c\\, W_2^2(\\Sigma_p, \\Sigma_q)`
    for every ``c > 0`` the dtype holds. In float32 the Bures term is within about
    :math:`3 \\cdot 10^{-6} (\\operatorname{tr} \\Sigma_p + \\operatorname{tr} \\Sigma_q)` of
    float64 up to condition number 1e6 (measured). Differentiable twice and more.

    Parameters
    ----------
    loc_p, loc_q : Tensor, shape (..., d)
    cov_p, cov_q : Tensor, shape (..., d, d)
        Symmetric positive semi-definite; all broadcastable against each other.

    Returns
    -------
    Tensor, shape (...)
        In the promoted floating dtype of the inputs.
    """
    loc_p, cov_p, loc_q, cov_q = promote_floating(
        ("loc_p", loc_p), ("cov_p", cov_p), ("loc_q", loc_q), ("cov_q", cov_q)
    )
    # W2^2 is 1-homogeneous in the covariances: compute at unit scale, where the product
    # of roots cannot underflow or overflow, and scale back (exactly, by a power of two)
    scale = power_of_two_scale(0.5 * _mean_variance(cov_p) + 0.5 * _mean_variance(cov_q))
    cov_p = cov_p / scale[..., None, None]
    cov_q = cov_q / scale[..., None, None]
    # tr (Σp^½ Σq Σp^½)^½ is the sum of the singular values of Σq^½ Σp^½ (never squared)
    cross = polar(sqrtm_psd(cov_q) @ sqrtm_psd(cov_p))[1]
    bures = (
        torch.diagonal(cov_p, dim1=-2, dim2=-1).sum(-1)
        + torch.diagonal(cov_q, dim1=-2, dim2=-1).sum(-1)
        - 2 * torch.diagonal(cross, dim1=-2, dim2=-1).sum(-1)
    )
    # the clamp removes round-off below zero (p ≈ q) from the value only: clamping the
    # derivatives too would zero the Hessian there, where the true one is not zero
    bures = bures + (bures.clamp_min(0) - bures).detach()
    return (loc_p - loc_q).square().sum(-1) + scale * bures
