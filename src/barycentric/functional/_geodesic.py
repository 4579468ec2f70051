"""McCann's interpolant from a Cholesky factor: one eigendecomposition per problem.

With :math:`\\Sigma_1 = L L^\\top` and :math:`H = (L^\\top \\Sigma_2 L)^{1/2}`, the optimal map
from :math:`\\Sigma_1` to :math:`\\Sigma_2` is :math:`T = L^{-\\top} H L^{-1}` (it is symmetric
positive definite and :math:`T \\Sigma_1 T = \\Sigma_2`), so the point :math:`t` of the
geodesic is

.. math::

    \\Sigma_t = \\big((1-t) I + t T\\big) \\Sigma_1 \\big((1-t) I + t T\\big) = G G^\\top,
    \\qquad G = (1-t) L + t L^{-\\top} H,

one Cholesky factorisation, one eigendecomposition and a triangular solve, where the polar
form of ``gaussian_wasserstein._mccann`` takes two eigendecompositions and a singular value
decomposition. The root :math:`H` comes from the square :math:`L^\\top \\Sigma_2 L`, so its
round-off is :math:`\\varepsilon \\kappa(H)` relative: as the warm-started fixed point does
(``functional._warm_fixed_point``), this computes in float64 and accepts a problem only
where :math:`16 \\varepsilon \\kappa(H) \\le` ``tol``; the others, and those whose first
covariance has no Cholesky factor, are left to the polar form.
"""

from __future__ import annotations

import torch

from barycentric._validation import all_finite
from barycentric.functional._warm_fixed_point import cholesky_flagged, condition_limit
from barycentric.linalg import _decompose, symmetrise

__all__ = ["mccann_cholesky"]


def mccann_cholesky(
    first: torch.Tensor, second: torch.Tensor, t: torch.Tensor, tol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The point ``t`` of the geodesic from ``first`` to ``second`` (module docstring).

    Parameters
    ----------
    first, second : Tensor, shape (B, d, d)
        Symmetric positive definite covariances.
    t : Tensor, shape (B, 1, 1)
        Positions on the geodesic, in [0, 1].
    tol : float
        Relative accuracy a problem must be certified to (``16 ε κ(H) ≤ tol``).

    Returns
    -------
    solution : Tensor, shape (B, d, d)
        In ``first``'s dtype; meaningless where not ``accepted``.
    accepted : Tensor, shape (B,), bool
    """
    dtype = first.dtype
    first, second, t = first.double(), second.double(), t.double()
    factor, accepted = cholesky_flagged(first)
    # the covariances come normalised to unit scale (``gaussian_wasserstein``), so no
    # rescaling; a round-off eigenvalue at or below 0 gives an infinite or NaN condition
    values, vectors = _decompose(torch.linalg.eigh, factor.mT @ second @ factor)
    roots = values.clamp_min(0).sqrt()
    condition = roots[..., -1] / roots[..., 0]
    root = (vectors * roots.unsqueeze(-2)) @ vectors.mT
    transported = torch.linalg.solve_triangular(factor.mT, root, upper=True)
    g = (1 - t) * factor + t * transported
    solution = symmetrise(g @ g.mT)
    finite = all_finite(solution, (-2, -1))
    accepted = accepted & finite & (condition <= condition_limit(tol))
    return solution.to(dtype), accepted
