"""The adjoint of the barycenter's fixed-point map in closed form, for the implicit backward.

The implicit derivative of the fixed point :math:`S = F(S)` of
:math:`F(S) = \\bar T S \\bar T`, :math:`\\bar T = \\sum_m w_m T_m`, needs the adjoint
:math:`u = g + J^\\top u` (:math:`J = \\partial F / \\partial S`, :math:`g` the incoming
gradient), then :math:`(\\partial F / \\partial \\Sigma_m)^\\top u` and
:math:`(\\partial F / \\partial w_m)^\\top u`. The optimal map :math:`T_m` from :math:`S` to
:math:`\\Sigma_m` is the positive definite solution of :math:`T_m S T_m = \\Sigma_m`;
differentiating it gives one Lyapunov equation per expert, diagonal in the eigenbasis of
:math:`P_m = L^\\top \\Sigma_m L` (:math:`S = L L^\\top`,
:math:`P_m = V_m \\operatorname{diag}(s_m)^2 V_m^\\top`, so that
:math:`T_m = L^{-\\top} H_m L^{-1}` with :math:`H_m = V_m \\operatorname{diag}(s_m) V_m^\\top`).
With :math:`G = u \\bar T S + S \\bar T u`, :math:`C = L^{-1} G L^{-\\top}` and
:math:`\\tilde C_m = V_m^\\top C V_m`,

.. math::

    J^\\top u = \\bar T u \\bar T - L^{-\\top} \\Big[\\sum_m w_m V_m \\Big(\\tilde C_m \\circ
        \\frac{s_i s_j}{s_i + s_j}\\Big) V_m^\\top\\Big] L^{-1}, \\qquad
    \\Big(\\frac{\\partial F}{\\partial \\Sigma_m}\\Big)^\\top u = w_m L V_m \\Big(\\tilde C_m
        \\circ \\frac{1}{s_i + s_j}\\Big) V_m^\\top L^\\top, \\qquad
    \\Big(\\frac{\\partial F}{\\partial w_m}\\Big)^\\top u = \\sum_i (\\tilde C_m)_{ii} s_{m,i}.

A product with :math:`J^\\top` is then four products of the experts' stacks and a few of
the problems' matrices, where autograd differentiates through the polar decompositions of
the map's factor form and its square roots, about three times the work (the adjoint of
256 × (M = 5, d = 16), one thread: 214 → 68 ms). The bracket is a self-adjoint map of
:math:`C`, so the transposed product, which the derivative of the adjoint itself needs (the
backward of a ``create_graph=True`` call), costs the same:
:math:`J v = \\bar T v \\bar T - (Z S \\bar T + \\bar T S Z)` with :math:`Z` the bracket,
:math:`L^{-\\top} [\\ldots] L^{-1}`, of :math:`C = L^{-1} v L^{-\\top}`
(:meth:`ClosedFormAdjoint.push`).

:math:`s_m` and :math:`V_m` come in float64 from one of two decompositions, chosen expert
by expert. Where an upper bound of :math:`\\kappa(P_m) = \\kappa(H_m)^2` (from the
Cholesky factor :math:`R_m` of :math:`P_m`: :math:`\\|P_m\\|_F \\|R_m^{-1}\\|_F^2`) shows
that the rule below holds for the square itself, from the eigendecomposition of
:math:`P_m`, whose round-off :math:`\\varepsilon \\kappa(H_m)^2` the kernel
:math:`1 / (s_i + s_j)` amplifies; elsewhere, and where the eigendecomposition does not
certify after all, from the singular value decomposition
:math:`C_m^\\top L = U_m \\operatorname{diag}(s_m) V_m^\\top` of a factor
(:math:`\\Sigma_m = C_m C_m^\\top`, Cholesky), whose round-off is the
:math:`\\varepsilon \\kappa(H_m)` of a factor, at twice the cost (256 × (M = 5, d = 16), tol
1e-10, one thread: the backward 121–123 → 90–94 ms with eigendecompositions). As in the
forward (``_warm_fixed_point``), a problem is taken here only where the round-off of its
decompositions, :math:`16 \\varepsilon \\kappa(H_m)^2` or :math:`16 \\varepsilon
\\kappa(H_m)`, is at most ``tol`` for every expert and every factorisation succeeds; the
others keep autograd's derivative of the polar form. On a CUDA device the decompositions of
mid-sized matrices run on the host, and a matrix LAPACK fails on leaves only its own problem
uncertified (both ``barycentric.linalg``'s, as for every decomposition of the library).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from barycentric.functional._anderson import Anderson
from barycentric.functional._experts import weighted_spectral_sum
from barycentric.functional._warm_fixed_point import (
    _congruent,
    cholesky_flagged,
    condition_limit,
)
from barycentric.linalg import _decompose, symmetrise

__all__ = ["ClosedFormAdjoint", "solve_adjoint"]


def solve_adjoint(
    pull: Callable[[torch.Tensor], torch.Tensor],
    grad: torch.Tensor,
    max_iter: int,
    tol: float,
    accelerate: bool,
) -> torch.Tensor:
    """The solution :math:`u` of :math:`u = \\operatorname{sym} g + A u` for ``grad (B, d, d)``
    :math:`g`, with ``pull(u)`` the symmetric part of :math:`A u`: :math:`A = J^\\top` for
    the adjoint of the implicit backward, :math:`A = J` for the tangent its own derivative
    needs (:meth:`ClosedFormAdjoint.push`).

    Iterates, with Anderson mixing where ``accelerate``, until the relative change of every
    problem's iterate is at most ``tol``, or ``max_iter`` times; then warns
    (``RuntimeWarning``) that the derivative is that of the last iterate.
    """
    adjoint = grad = symmetrise(grad)
    scale = torch.linalg.matrix_norm(grad).detach().clamp_min(torch.finfo(grad.dtype).tiny)
    mixing = Anderson() if accelerate else None
    for _ in range(max_iter):
        new = grad + pull(adjoint)
        change = torch.linalg.matrix_norm((new - adjoint).detach()) / scale
        if bool((change <= tol).all()):
            return new
        adjoint = new if mixing is None else mixing(adjoint, new)
    warnings.warn(
        f"Wasserstein barycenter implicit backward: the adjoint iteration did not reach tol "
        f"{tol:.1e} in {max_iter} iterations (largest relative change "
        f"{float(change.max()):.2e}); the derivatives are those of its last iterate",
        RuntimeWarning,
        stacklevel=2,
    )
    return adjoint


def _condition_bound(matrices: torch.Tensor) -> torch.Tensor:
    """An upper bound of the condition number of each symmetric positive definite matrix of
    ``matrices (..., d, d)``: :math:`\\|P\\|_F \\|R^{-1}\\|_F^2 \\ge \\|P\\|_2 \\|P^{-1}\\|_2`
    for :math:`P = R R^\\top`, at most :math:`d^{3/2}` times too large, and an upper bound
    up to its own round-off, about :math:`d \\varepsilon \\kappa`. ``inf`` where the
    Cholesky factorisation fails; ``inf`` or NaN where an entry is not finite."""
    dim = matrices.shape[-1]
    flat = matrices.reshape(-1, dim, dim)
    factor, info = torch.linalg.cholesky_ex(flat)
    eye = torch.eye(dim, dtype=matrices.dtype, device=matrices.device)
    inverse = torch.linalg.solve_triangular(factor, eye, upper=False)
    bound = torch.linalg.matrix_norm(flat) * torch.linalg.matrix_norm(inverse).square()
    return torch.where(info == 0, bound, torch.inf).view(matrices.shape[:-2])


def _right_solve(factor: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """:math:`L^{-\\top} A L^{-1}` for lower triangular ``factor (B, d, d)`` :math:`L`."""
    left = torch.linalg.solve_triangular(factor.mT, a, upper=True)
    return torch.linalg.solve_triangular(factor.mT, left.mT, upper=True).mT


class ClosedFormAdjoint:
    """The map's adjoint (module docstring), in float64, from its factors: ``solution (B, d,
    d)`` :math:`S`, ``factor`` its Cholesky factor :math:`L`, ``weights (B, M)``, ``roots
    (B, M, d)`` :math:`s_m` and ``rows (B, M, d, d)`` :math:`V_m^\\top`."""

    def __init__(
        self,
        solution: torch.Tensor,
        factor: torch.Tensor,
        weights: torch.Tensor,
        roots: torch.Tensor,
        rows: torch.Tensor,
    ) -> None:
        self.factor, self.weights, self.roots, self.rows = factor, weights, roots, rows
        self.kernel = (roots.unsqueeze(-1) + roots.unsqueeze(-2)).reciprocal()
        self.outer_kernel = roots.unsqueeze(-1) * roots.unsqueeze(-2) * self.kernel
        mean = weighted_spectral_sum(weights, roots, rows)
        self.map = symmetrise(_right_solve(factor, mean))
        self.map_solution = self.map @ solution

    @classmethod
    def where_certified(
        cls, solution: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor, tol: float
    ) -> tuple[ClosedFormAdjoint | None, torch.Tensor]:
        """The adjoint of the problems of ``solution (B, d, d)``, ``covs (B, M, d, d)`` and
        ``weights (B, M)`` that it serves (factorisations succeed and the round-off of the
        decomposition is at most ``tol``, module docstring; ``None`` if none), and which
        those are (bool, shape ``(B,)``)."""
        batch, experts = covs.shape[:2]
        largest_condition = condition_limit(tol)
        if largest_condition < 1:  # no condition number qualifies (tol = 0: every step)
            return None, torch.zeros(batch, dtype=torch.bool, device=covs.device)
        solution, covs = solution.to(torch.float64), covs.to(torch.float64)
        factor, accepted = cholesky_flagged(solution)
        congruent = _congruent(factor, covs)
        # expert by expert: the squares whose round-off the bound certifies, then factors
        squares = accepted[:, None] & (_condition_bound(congruent) <= largest_condition)
        roots = covs.new_empty(covs.shape[:-1])
        rows = torch.empty_like(covs)
        # the condition number each decomposition's round-off is proportional to
        condition = covs.new_full((batch, experts), torch.inf)
        if bool(squares.any()):
            # NaN factors (and so no certificate) for a matrix that LAPACK fails on, and
            # mid-sized matrices on a CUDA device decomposed on the host (``linalg._decompose``)
            values, vectors = _decompose(torch.linalg.eigh, congruent[squares])
            roots[squares], rows[squares] = values.clamp_min(0).sqrt(), vectors.mT
            # κ(P) = κ(H)², infinite where round-off left no positive eigenvalue
            condition[squares] = values[..., -1] / values[..., 0].clamp_min(0)
        # the others, and those the eigendecomposition did not certify after all
        factors = accepted[:, None] & ~(condition <= largest_condition)
        if bool(factors.any()):
            problem = torch.nonzero(factors)[:, 0]
            expert_factors, expert_ok = cholesky_flagged(covs[factors])
            _, values, vectors = _decompose(torch.linalg.svd, expert_factors.mT @ factor[problem])
            roots[factors], rows[factors] = values, vectors
            condition[factors] = torch.where(expert_ok, values[..., 0] / values[..., -1], torch.inf)
        accepted = accepted & (condition <= largest_condition).all(-1)
        if not bool(accepted.any()):
            return None, accepted
        parts = (solution, factor, weights.to(torch.float64), roots, rows)
        return cls(*(part[accepted] for part in parts)), accepted

    def _mean(self, inner: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum_m V_m Q_m V_m^\\top` for ``inner (B, M, d, d)`` :math:`Q_m`: with the
        rows :math:`V_m^\\top` stacked into ``(B, M d, d)``, one product sums over the experts."""
        stacked = self.rows.reshape(self.rows.shape[0], -1, self.rows.shape[-1])
        return stacked.mT @ (inner @ self.rows).view_as(stacked)

    def _rotated(self, u: torch.Tensor) -> torch.Tensor:
        """:math:`\\tilde C_m = V_m^\\top L^{-1} (u \\bar T S + S \\bar T u) L^{-\\top} V_m`."""
        g = u @ self.map_solution
        return self._rotate(g + g.mT)

    def _rotate(self, a: torch.Tensor) -> torch.Tensor:
        """:math:`V_m^\\top L^{-1} A L^{-\\top} V_m` for ``a (B, d, d)``, shape ``(B, M, d, d)``."""
        left = torch.linalg.solve_triangular(self.factor, a, upper=False)
        c = torch.linalg.solve_triangular(self.factor, left.mT, upper=False).mT
        stacked = self.rows.reshape(self.rows.shape[0], -1, self.rows.shape[-1])
        return (stacked @ c).view_as(self.rows) @ self.rows.mT

    def _lyapunov_mean(self, rotated: torch.Tensor) -> torch.Tensor:
        """:math:`L^{-\\top} \\big[\\sum_m w_m V_m (\\tilde C_m \\circ \\frac{s_i s_j}{s_i + s_j})
        V_m^\\top\\big] L^{-1}` for ``rotated (B, M, d, d)`` :math:`\\tilde C_m`: a self-adjoint
        map of the :math:`L^{-1} (\\cdot) L^{-\\top}` it is applied to."""
        inner = rotated * self.outer_kernel * self.weights[..., None, None]
        return _right_solve(self.factor, self._mean(inner))

    def pull(self, u: torch.Tensor) -> torch.Tensor:
        """The symmetric part of :math:`J^\\top u` for symmetric ``u (B, d, d)``."""
        correction = self._lyapunov_mean(self._rotated(u))
        return symmetrise(self.map @ u @ self.map - correction)

    def push(self, v: torch.Tensor) -> torch.Tensor:
        """The symmetric part of :math:`J v` for symmetric ``v (B, d, d)``, the transpose of
        :meth:`pull`: :math:`J v = \\bar T v \\bar T - (Z S \\bar T + \\bar T S Z)` with
        :math:`Z` the :meth:`_lyapunov_mean` of :math:`V_m^\\top L^{-1} v L^{-\\top} V_m` (the
        bracket of :math:`J^\\top` is self-adjoint, and :math:`u \\mapsto L^{-1} (u \\bar T S
        + S \\bar T u) L^{-\\top}` has the transpose :math:`Z \\mapsto Z S \\bar T + \\bar T S
        Z`)."""
        z = self._lyapunov_mean(self._rotate(v))
        z_map = z @ self.map_solution.mT
        return symmetrise(self.map @ v @ self.map - z_map - z_map.mT)

    def inputs(
        self, u: torch.Tensor, needs: tuple[bool, bool] = (True, True)
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """:math:`(\\partial F / \\partial \\Sigma_m)^\\top u`, shape ``(B, M, d, d)``
        (symmetric), and :math:`(\\partial F / \\partial w_m)^\\top u`, shape ``(B, M)``; each
        ``None`` where ``needs`` says it is not wanted."""
        rotated = self._rotated(u)
        grad_covs = grad_weights = None
        if needs[0]:
            lyapunov = self.rows.mT @ (rotated * self.kernel) @ self.rows
            factor = self.factor.unsqueeze(1)
            grad_covs = self.weights[..., None, None] * symmetrise(factor @ lyapunov @ factor.mT)
        if needs[1]:
            grad_weights = (torch.diagonal(rotated, dim1=-2, dim2=-1) * self.roots).sum(-1)
        return grad_covs, grad_weights
