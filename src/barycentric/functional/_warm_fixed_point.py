"""The barycenter fixed point with warm-started roots: matrix products, few eigendecompositions.

The fixed-point step :math:`\\Sigma \\mapsto \\bar T \\Sigma \\bar T` needs the roots
:math:`H_m = (L^\\top \\Sigma_m L)^{1/2}` (:math:`\\Sigma = L L^\\top` its Cholesky factor):
:math:`\\bar T = L^{-\\top} \\bar H L^{-1}` with :math:`\\bar H = \\sum_m \\lambda_m H_m`, so the
next covariance is :math:`Y Y^\\top`, :math:`Y = L^{-\\top} \\bar H`, and the fixed-point
residual is :math:`\\|\\bar H - L^\\top L\\|_F / \\|L^\\top L\\|_F`. The Cholesky factor moves
smoothly with :math:`\\Sigma`, so the matrices :math:`P_m = L^\\top \\Sigma_m L` change little
from one step to the next, and so do their eigenvectors. Each root is kept as
:math:`H_m = V_m X_m V_m^\\top` in a basis :math:`V_m` in which :math:`X_m` is nearly diagonal
(the eigenvectors of an earlier :math:`P_m`), and is updated by the Newton step for
:math:`X^2 = \\tilde P = V_m^\\top P_m V_m` whose Lyapunov operator is frozen at the
diagonal :math:`x` that :math:`X` had when its basis was computed (the square roots of that
:math:`P_m`'s eigenvalues),

.. math::

    X \\leftarrow X + (\\tilde P - X^2) \\circ K, \\qquad K_{ij} = \\frac{1}{x_i + x_j},

which costs one matrix product per matrix, has the exact root as its fixed point whatever
:math:`K`, and contracts at a rate about the relative change of :math:`P_m` since its basis
was computed. Each step takes :data:`INNER_STEPS` such steps on all roots, then
:data:`EXTRA_STEPS` on those whose correction has not fallen below the step's tolerance,
alone; a root that still falls short, or whose correction shrinks by less than
:data:`MAX_RATE` in a step (then the last correction no longer bounds its error), is
recomputed from an eigendecomposition of :math:`\\tilde P` (which refreshes its basis); so
are all of them at the first step. A root takes no step after its correction meets the
tolerance, so what it becomes never depends on the other problems of the batch. Early steps
need their roots only to 3 % of the previous residual (a thousandth for d ≤ 4, where
decompositions are cheap), the step that certifies ``tol`` to ``tol / 16``.

The residual of a root computed from :math:`P_m` (rather than from the singular values of a
factor, as the robust solver does) is about :math:`\\varepsilon \\kappa(H_m)` relative,
:math:`\\kappa` the condition number: this solver works in float64 and accepts a problem only
where :math:`16 \\varepsilon \\kappa(H_m) \\le` ``tol`` for every expert (so the residual it
reports is within a few percent of the exact one); the others, and those whose Cholesky
factorisation fails (singular or indefinite inputs), are left to the robust solver.

On the CPU a large batch is solved in pieces of about :data:`CHUNK_BYTES` of experts'
covariances each (``functional._pieces``; every result is the same): each step makes some
twenty passes over stacks the size of the experts', and pieces that fit in a core's L2
cache cost 20–30 % less than the whole batch at once (measured from d = 16 to 64, neutral
at d = 8). On an accelerator the whole batch is one piece.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from barycentric._validation import all_finite
from barycentric.functional._anderson import Anderson
from barycentric.functional._experts import weighted_matrix_sum
from barycentric.functional._pieces import piece_size
from barycentric.linalg import eigh_psd, sqrtm_psd, symmetrise

__all__ = [
    "CHUNK_BYTES",
    "INNER_STEPS",
    "Outcomes",
    "WarmSolution",
    "cholesky_flagged",
    "condition_limit",
    "nothing_accepted",
    "solve_warm",
]

#: Bytes of float64 experts' covariances ``(chunk, M, d, d)`` solved at once on the CPU: a
#: core's L2 cache (against one piece, in one process: 256 × (M = 5, d = 16) 177 → 149 ms,
#: 64 × (5, 64) 826 → 694 ms; 1024 × (5, 8) 165 → 170 ms, within noise).
CHUNK_BYTES = 2**21
#: Newton steps of all roots per fixed-point step (fewer once every root has converged)...
INNER_STEPS = 4
#: ...then of the roots that have not, alone, before their eigendecompositions are refreshed.
#: At 256 × (M = 5, d = 16), 2 + 0 steps decomposed about 1,000 roots after the first step,
#: 4 + 2 decompose about 30: most roots that fall short miss by about their rate, 0.1 a step.
EXTRA_STEPS = 2
#: A root whose correction shrinks by less than this factor in a step has drifted too far from
#: its basis for its last correction to bound its error: it is decomposed afresh.
MAX_RATE = 0.5
#: Early steps compute the roots to this fraction of the previous residual: roots that only
#: just meet a loose accuracy slow the outer iteration (256 × (M = 5, d = 16): 12 steps at
#: 0.1, 11 at 0.03), tight ones cost Newton steps; for d ≤ 4, where decompositions cost about
#: as much as the Newton steps, exact roots save outer steps (64 × (M = 5, d = 2): 11 steps at
#: 0.1, 7 at 1e-3, 7.2 → 5.4 ms).
_EARLY_ACCURACY = 0.03
_EARLY_ACCURACY_SMALL = 1e-3
_SMALL_DIM = 4
#: The roots of the step that certifies ``tol`` are computed to ``tol / SAFETY``, and a root
#: of condition number κ is trusted only where ``SAFETY · ε · κ ≤ tol``.
SAFETY = 16.0
#: Stacks of the roots' size that :class:`_Roots` computes its products in.
_WORKSPACES = 3


def condition_limit(tol: float) -> float:
    """The largest condition number :math:`\\kappa` of a root taken from a square whose
    round-off, about :math:`\\varepsilon \\kappa` in float64, is trusted to ``tol``:
    :math:`16 \\varepsilon \\kappa \\le` ``tol`` (the rule of this solver, of
    ``functional._two_by_two`` and of ``functional._geodesic``), and finite: an infinite
    condition number (a singular root) is never trusted, even at ``tol = inf``."""
    info = torch.finfo(torch.float64)
    return min(tol / (SAFETY * info.eps), info.max)


class WarmSolution(NamedTuple):
    """What :func:`solve_warm` returns for a batch of ``B`` problems."""

    solution: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    iterations: int
    accepted: torch.Tensor


def nothing_accepted(covs: torch.Tensor) -> WarmSolution:
    """What a solver returns for ``covs (B, M, d, d)`` when it accepts none of the problems
    (every one is left to the robust solver)."""
    nothing = torch.zeros(covs.shape[0], dtype=torch.bool, device=covs.device)
    return WarmSolution(covs[:, 0], covs.new_full(nothing.shape, torch.inf), nothing, 0, nothing)


class Outcomes:
    """Each problem's answer, written when it leaves the iteration.

    Parameters
    ----------
    start : Tensor, shape (B, ...)
        The iterates at the start (what a problem that never leaves returns).
    accepted : Tensor, shape (B,)
        The problems the solver takes on (bool).
    """

    def __init__(self, start: torch.Tensor, accepted: torch.Tensor) -> None:
        self.solution = start.clone()
        self.residual = start.new_full(accepted.shape, torch.inf)
        self.converged = torch.zeros_like(accepted)
        self.accepted = accepted

    def record(
        self,
        active: torch.Tensor,
        point: torch.Tensor,
        residual: torch.Tensor,
        done: torch.Tensor,
        easy: torch.Tensor,
        last: bool,
    ) -> torch.Tensor:
        """Write the step of the problems ``active`` (indices): their iterates ``point``,
        residuals, which reached ``tol`` (``done``) and which the solver still accepts
        (``easy``); those done, refused, or at the ``last`` step leave. Returns the bool mask
        of the problems that stay."""
        leaving = done | ~easy | last
        self.accepted = self.accepted.index_put((active,), easy)
        self.residual = self.residual.index_put((active,), residual)
        self.converged = self.converged.index_put((active,), done & easy)
        self.solution = self.solution.index_copy(0, active[leaving], point[leaving])
        return ~leaving

    def refuse(self, problems: torch.Tensor) -> None:
        """Leave the problems ``problems`` (indices) to the robust solver."""
        false = torch.tensor(False, device=problems.device)
        self.accepted = self.accepted.index_put((problems,), false)

    def finish(self, iterations: int, dtype: torch.dtype) -> WarmSolution:
        """The :class:`WarmSolution`, solutions and residuals in ``dtype``."""
        return WarmSolution(
            self.solution.to(dtype),
            self.residual.to(dtype),
            self.converged,
            iterations,
            self.accepted,
        )


def cholesky_flagged(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower Cholesky factors and a bool of success per matrix (non-finite fails)."""
    finite = all_finite(matrices, (-2, -1))
    eye = torch.eye(matrices.shape[-1], dtype=matrices.dtype, device=matrices.device)
    factor, info = torch.linalg.cholesky_ex(torch.where(finite[:, None, None], matrices, eye))
    return factor, finite & (info == 0)


def _congruent(factor: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """:math:`L^\\top \\Sigma_m L` for ``factor (B, d, d)`` and ``covs (B, M, d, d)``, as two
    products of ``(B, M d, d)`` stacks (broadcasting ``L`` over the experts would copy it)."""
    batch, experts, dim = covs.shape[:3]
    right = (covs.reshape(batch, experts * dim, dim) @ factor).view_as(covs)
    return (right.mT.reshape(batch, experts * dim, dim) @ factor).view_as(covs)


def _lyapunov_kernel(roots: torch.Tensor) -> torch.Tensor:
    """:math:`K_{ij} = 1 / (x_i + x_j)` for the diagonals ``roots (..., d)`` of the roots."""
    return (roots.unsqueeze(-1) + roots.unsqueeze(-2)).reciprocal_()


class _Newton(NamedTuple):
    """What :func:`_newton` leaves: the roots not yet converged (``live``), those that
    converge too slowly to be trusted (``slow``), and each root's last relative change."""

    live: torch.Tensor
    slow: torch.Tensor
    change: torch.Tensor


def _newton(
    rotated: torch.Tensor,
    root: torch.Tensor,
    kernel: torch.Tensor,
    scale: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    scratch: torch.Tensor,
    change: torch.Tensor | None = None,
) -> _Newton:
    """Up to ``steps`` Newton steps :math:`X \\leftarrow X + (\\tilde P - X^2) \\circ K` on the
    roots ``root (..., d, d)`` of ``rotated`` :math:`\\tilde P`, in place, with the kernels
    ``kernel`` (same shape).

    ``scale = (norm, tolerance)``, both of shape ``(...)``, holds :math:`\\|X\\|_F` and the
    relative change of a step at or below which a root has converged; a root stops at
    convergence, or as ``slow`` once its change shrinks by less than :data:`MAX_RATE` in a
    step (``change``: the changes of a previous call's last step, if any), so what a root
    becomes depends on it alone. On the CPU the steps stop once every root has stopped.
    ``scratch`` (same shape as ``root``) receives the corrections.
    """
    norm, tolerance = scale
    flat = root.view(-1, *root.shape[-2:])
    correction = scratch.view_as(flat)
    live = torch.ones_like(norm, dtype=torch.bool)
    slow = torch.zeros_like(live)
    for step in range(steps):
        torch.baddbmm(rotated.reshape(flat.shape), flat, flat, alpha=-1, out=correction)
        scratch.mul_(kernel)
        if step > 0:
            scratch.masked_fill_(~live[..., None, None], 0.0)
        root.add_(scratch)
        previous, change = change, torch.linalg.matrix_norm(scratch) / norm
        if previous is not None:
            slow = slow | (live & (change > MAX_RATE * previous))
        live = live & ~(change <= tolerance) & ~slow
        # on an accelerator, no host synchronisation until the steps are done
        if root.device.type == "cpu" and not bool(live.any()):
            break
    return _Newton(live, slow, change)


class _Roots:
    """The roots :math:`H_m = V X V^\\top` of the active problems, warm from step to step.

    The bases are kept transposed, ``rows (B, M, d, d)`` holding :math:`V_m^\\top`, so that
    :math:`G_m = V_m^\\top L^\\top` is one product of ``(B, M d, d)`` stacks and the rotated
    matrices :math:`V_m^\\top P_m V_m = G_m \\Sigma_m G_m^\\top` two more.

    The products of every step are written into :data:`_WORKSPACES` stacks of the roots'
    size, allocated once: a fresh stack of a megabyte or more comes, with glibc's ``malloc``,
    from pages the system hands out anew, and touching them costs a page fault per 4 KiB
    (at 256 × (M = 5, d = 16), 19,800 faults and about 15 ms per solve without them).
    """

    def __init__(self, congruent: torch.Tensor) -> None:
        values, basis = eigh_psd(congruent)
        self.rows = basis.mT.contiguous()
        roots = values.sqrt()
        self.condition = roots[..., -1] / roots[..., 0]
        self.root = torch.diag_embed(roots)
        self.kernel = _lyapunov_kernel(roots)
        self._workspaces = congruent.new_empty((_WORKSPACES, *congruent.shape))

    def _workspace(self, which: int) -> torch.Tensor:
        """Workspace ``which``, shape ``(B, M, d, d)`` for the ``B`` active problems."""
        return self._workspaces[which, : self.root.shape[0]]

    def _rotated(self, factor: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
        """:math:`V_m^\\top L^\\top \\Sigma_m L V_m` for ``factor (B, d, d)`` and ``covs
        (B, M, d, d)``."""
        batch, experts, dim = covs.shape[:3]
        stacked = (batch, experts * dim, dim)
        rotated = self._workspace(0)
        torch.matmul(self.rows.view(stacked), factor.mT, out=rotated.view(stacked))
        middle = torch.matmul(rotated, covs, out=self._workspace(1))
        return torch.matmul(middle, rotated.mT, out=self._workspace(2))

    def refresh(self, factor: torch.Tensor, covs: torch.Tensor, tolerance: torch.Tensor) -> None:
        """Update the roots to the new factor ``L (B, d, d)``, to a relative ``tolerance
        (B, 1)``: :data:`INNER_STEPS` Newton steps in the current bases, then
        :data:`EXTRA_STEPS` more on the roots that fall short alone, and eigendecompositions
        where those fall short too."""
        rotated = self._rotated(factor, covs)
        # ‖X‖_F² = tr X² = tr P̃
        norm = torch.diagonal(rotated, dim1=-2, dim2=-1).sum(-1).clamp_min(0).sqrt()
        scale = (norm, tolerance.expand_as(norm))
        first = _newton(rotated, self.root, self.kernel, scale, INNER_STEPS, self._workspace(0))
        redo = first.slow
        retry = torch.nonzero(first.live, as_tuple=True)
        if retry[0].numel() > 0:
            root = self.root[retry]
            extra = _newton(
                rotated[retry],
                root,
                self.kernel[retry],
                (scale[0][retry], scale[1][retry]),
                EXTRA_STEPS,
                torch.empty_like(root),
                first.change[retry],
            )
            self.root.index_put_(retry, root)
            redo = redo.index_put(retry, extra.live | extra.slow)
        stale = torch.nonzero(redo, as_tuple=True)
        if stale[0].numel() == 0:
            return
        values, vectors = eigh_psd(rotated[stale])
        self.rows.index_put_(stale, vectors.mT @ self.rows[stale])
        roots = values.sqrt()
        self.root.index_put_(stale, torch.diag_embed(roots))
        self.kernel.index_put_(stale, _lyapunov_kernel(roots))

    def mean(self, weights: torch.Tensor) -> torch.Tensor:
        """:math:`\\bar H = \\sum_m \\lambda_m V_m X_m V_m^\\top`: with the rows
        :math:`V_m^\\top` stacked into ``(B, M d, d)``, one product ``stackᵀ @ (λ X V^\\top)``
        sums over the experts as it multiplies."""
        batch, experts, dim = self.rows.shape[:3]
        scaled = torch.matmul(self.root, self.rows, out=self._workspace(0))
        scaled.mul_(weights[..., None, None])
        stacked = self.rows.view(batch, experts * dim, dim)
        return symmetrise(stacked.mT @ scaled.view_as(stacked))

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the problems ``rows`` (a bool mask)."""
        if not bool(rows.all()):
            self.rows, self.root, self.kernel = self.rows[rows], self.root[rows], self.kernel[rows]


def solve_warm(
    covs: torch.Tensor, weights: torch.Tensor, max_iter: int, tol: float
) -> WarmSolution:
    """The fixed point of each problem of ``covs (B, M, d, d)``, ``weights (B, M)``.

    On the CPU, in pieces of at most about :data:`CHUNK_BYTES` (module docstring), each
    solved by :func:`_solve_piece`; ``iterations`` is the largest of theirs.
    """
    size = piece_size(covs, CHUNK_BYTES, torch.finfo(torch.float64).bits // 8)
    if size >= covs.shape[0]:
        return _solve_piece(covs, weights, max_iter, tol)
    parts = [
        _solve_piece(c, w, max_iter, tol)
        for c, w in zip(covs.split(size), weights.split(size), strict=True)
    ]
    return WarmSolution(
        torch.cat([part.solution for part in parts]),
        torch.cat([part.residual for part in parts]),
        torch.cat([part.converged for part in parts]),
        max(part.iterations for part in parts),
        torch.cat([part.accepted for part in parts]),
    )


def _solve_piece(
    covs: torch.Tensor, weights: torch.Tensor, max_iter: int, tol: float
) -> WarmSolution:
    """The fixed point of each problem of ``covs (B, M, d, d)``, ``weights (B, M)``, all at
    once.

    Starts from :math:`(\\sum_m \\lambda_m \\Sigma_m^{1/2})^2`, the answer when the
    covariances commute. Computes in float64 and returns ``covs``' dtype. A problem leaves the
    iteration when its residual reaches ``tol`` (returning the covariance that residual
    certifies) or at ``max_iter``; ``accepted`` is ``False`` for the problems this solver
    leaves to the robust one (module docstring), whose other fields are then meaningless.
    """
    work, weights = covs.to(torch.float64), weights.to(torch.float64)
    largest_condition = condition_limit(tol)
    if largest_condition < 1:  # no condition number qualifies (tol = 0 forces every step)
        return nothing_accepted(covs)
    root_mean = weighted_matrix_sum(weights, sqrtm_psd(work))
    point = symmetrise(root_mean @ root_mean)
    factor, accepted = cholesky_flagged(point)
    outcomes = Outcomes(point, accepted)
    active = torch.nonzero(accepted).squeeze(-1)
    factor, point = factor[active], point[active]
    work, weights = work[active], weights[active]
    early = _EARLY_ACCURACY_SMALL if covs.shape[-1] <= _SMALL_DIM else _EARLY_ACCURACY
    roots = None
    accelerate = Anderson()
    previous = work.new_full((active.numel(),), 1.0)
    iterations = 0
    while active.numel() > 0 and iterations < max_iter:
        iterations += 1
        if roots is None:
            roots = _Roots(_congruent(factor, work))
            easy = (roots.condition <= largest_condition).all(-1)
            accuracy = torch.zeros_like(previous)
        else:
            accuracy = (early * previous).clamp_min(tol / SAFETY)
            roots.refresh(factor, work, accuracy[:, None])
            easy = torch.ones_like(previous, dtype=torch.bool)
        mean = roots.mean(weights)
        gram = factor.mT @ factor
        step_residual = torch.linalg.matrix_norm(mean - gram) / torch.linalg.matrix_norm(gram)
        easy = easy & torch.isfinite(step_residual)
        # the roots' error, at most `accuracy`, may hide in the residual
        done = step_residual + accuracy <= tol
        keep = outcomes.record(active, point, step_residual, done, easy, iterations == max_iter)
        if not bool(keep.any()):
            break
        active, factor, mean = active[keep], factor[keep], mean[keep]
        if not bool(keep.all()):
            work, weights = work[keep], weights[keep]
        previous = step_residual[keep]
        roots.keep(keep)
        image = torch.linalg.solve_triangular(factor.mT, mean, upper=True)
        image = symmetrise(image @ image.mT)
        mixed = accelerate(point[keep], image, None if bool(keep.all()) else keep)
        factor, ok = cholesky_flagged(mixed)
        point = torch.where(ok[:, None, None], mixed, image)
        if bool(ok.all()):
            continue
        plain, plain_ok = cholesky_flagged(image)
        factor = torch.where(ok[:, None, None], factor, plain)
        failed = ~(ok | plain_ok)
        if bool(failed.any()):
            outcomes.refuse(active[failed])
            keep = ~failed
            active, factor, point, previous = (
                active[keep],
                factor[keep],
                point[keep],
                previous[keep],
            )
            work, weights = work[keep], weights[keep]
            roots.keep(keep)
            accelerate.keep(keep)
    return outcomes.finish(iterations, covs.dtype)
