"""The barycenter fixed point of a single small problem on the CPU, with exact roots.

For one problem the batched warm solver (``_warm_fixed_point``) spends most of its time on
the fixed cost of its tensor operations, about 150 per step (Newton steps, active sets,
certification), rather than on arithmetic. Here each step decomposes the matrices
:math:`P_m = L^\\top \\Sigma_m L` (:math:`\\Sigma = L L^\\top`) afresh, so the roots
:math:`H_m = V_m \\operatorname{diag}(\\sqrt{\\lambda_m}) V_m^\\top` are exact up to round-off,
and the step is a few dozen operations:

.. math::

    \\bar H = \\sum_m w_m H_m, \\qquad Y = L^{-\\top} \\bar H, \\qquad
    \\Sigma \\leftarrow Y Y^\\top,

with the Anderson mixing of the batched solver (``_anderson``) and the same residual
:math:`\\|\\bar H - L^\\top L\\|_F / \\|L^\\top L\\|_F`, start
:math:`(\\sum_m w_m \\Sigma_m^{1/2})^2` and rule of acceptance: a problem is accepted only
while :math:`16 \\varepsilon \\kappa(H_m) \\le` ``tol`` for every expert (checked at every
step, from the eigenvalues), and a problem whose factorisation fails or whose step is not
finite is left to the robust solver.

An eigendecomposition costs about :math:`d^3` where a Newton step of the warm solver costs
a matrix product plus fixed costs, so this path serves problems with
:math:`M d^3 \\le` :data:`MAX_WORK`. Measured against the warm solver in one process (one
thread on the project's 2-core machine, float64, tol 1e-10): 1 × (M = 5, d = 16)
3.8 → 1.9 ms, 1 × (10, 24) 4.5 → 4.0 ms, 1 × (5, 32) 6.5 → 4.4 ms; at the limit,
1 × (8, 32), the two are even, 6.2 and 6.3 ms, and at 1 × (10, 32) the warm solver was
faster, 6.8 against 7.6 ms. Where the two cross depends on the machine.
"""

from __future__ import annotations

import torch

from barycentric.functional._anderson import Anderson
from barycentric.functional._experts import weighted_spectral_sum
from barycentric.functional._warm_fixed_point import (
    WarmSolution,
    condition_limit,
    nothing_accepted,
)
from barycentric.linalg import symmetrise

__all__ = ["MAX_WORK", "serves_one", "solve_one"]

#: The largest :math:`M d^3` of a single problem solved here (module docstring).
MAX_WORK = 2**18


def serves_one(covs: torch.Tensor) -> bool:
    """Whether ``covs (B, M, d, d)`` is one problem on the CPU small enough for
    :func:`solve_one`."""
    batch, experts, dim = covs.shape[:3]
    return batch == 1 and covs.device.type == "cpu" and experts * dim**3 <= MAX_WORK


def _factor(matrix: torch.Tensor) -> torch.Tensor | None:
    """The lower Cholesky factor of ``matrix (1, d, d)``, or ``None`` where it fails."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    return factor if int(info) == 0 else None


def _mean_root(
    factor: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, float] | None:
    """:math:`\\bar H = \\sum_m w_m (L^\\top \\Sigma_m L)^{1/2}` for ``factor (1, d, d)``,
    ``covs (1, M, d, d)`` and ``weights (1, M)``, and the largest condition number of its
    roots; ``None`` where the decomposition fails."""
    # for one problem broadcasting L is cheaper than ``_warm_fixed_point._congruent``'s
    # stacked products, which avoid copying it over a large batch (at M = 5, d = 16, 11 µs
    # against 16, and bitwise the same)
    congruent = factor.mT @ covs @ factor.unsqueeze(1)
    try:
        values, vectors = torch.linalg.eigh(congruent)
    except torch.linalg.LinAlgError:
        return None
    roots = values.sqrt()
    condition = float((roots[..., -1] / roots[..., 0]).max())
    return symmetrise(weighted_spectral_sum(weights, roots, vectors.mT)), condition


def solve_one(covs: torch.Tensor, weights: torch.Tensor, max_iter: int, tol: float) -> WarmSolution:
    """The fixed point of the single problem ``covs (1, M, d, d)``, ``weights (1, M)``;
    fields as :func:`~barycentric.functional._warm_fixed_point.solve_warm` returns them.

    Computes in float64 and returns ``covs``' dtype. Stops when the residual reaches ``tol``
    (returning the covariance that residual certifies) or at ``max_iter``; ``accepted`` is
    ``False`` where the problem is left to the robust solver (module docstring).
    """
    largest_condition = condition_limit(tol)
    if largest_condition < 1:  # no condition number qualifies (tol = 0 forces every step)
        return nothing_accepted(covs)
    work, weights = covs.to(torch.float64), weights.to(torch.float64)
    # the start (Σ_m w_m Σ_m^½)²: the mean root at L = I
    found = _mean_root(torch.eye(covs.shape[-1], dtype=torch.float64)[None], work, weights)
    if found is None:
        return nothing_accepted(covs)
    point = symmetrise(found[0] @ found[0])
    factor = _factor(point)
    accelerate = Anderson()
    iterations = 0
    while factor is not None and iterations < max_iter:
        iterations += 1
        found = _mean_root(factor, work, weights)
        if found is None:
            break
        mean, condition = found
        gram = factor.mT @ factor
        residual = float(torch.linalg.matrix_norm(mean - gram) / torch.linalg.matrix_norm(gram))
        if not (condition <= largest_condition and residual < torch.inf):
            break
        if residual <= tol or iterations == max_iter:
            return WarmSolution(
                point.to(covs.dtype),
                covs.new_full((1,), residual),
                torch.tensor([residual <= tol]),
                iterations,
                torch.tensor([True]),
            )
        image = torch.linalg.solve_triangular(factor.mT, mean, upper=True)
        image = symmetrise(image @ image.mT)
        point = accelerate(point, image)
        factor = _factor(point)
        if factor is None:
            point = image
            factor = _factor(point)
    return nothing_accepted(covs)._replace(iterations=iterations)
