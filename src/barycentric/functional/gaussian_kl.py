"""KL barycenters of Gaussians: the product (reverse KL) and the mixture (forward KL).

For experts :math:`q_m = \\mathcal N(\\mu_m, \\Sigma_m)` with weights :math:`\\lambda_m`
(normalised to sum to one):

* the **reverse-KL barycenter** :math:`\\arg\\min_q \\sum_m \\lambda_m \\mathrm{KL}(q \\| q_m)`
  is the normalised weighted geometric mean :math:`\\propto \\prod_m q_m^{\\lambda_m}`, a
  Gaussian with precision :math:`\\Lambda = \\sum_m \\lambda_m \\Sigma_m^{-1}` and mean
  :math:`\\Lambda^{-1} \\sum_m \\lambda_m \\Sigma_m^{-1} \\mu_m`. With all
  :math:`\\lambda_m = 1` it is the product of experts of MVAE (Wu & Goodman, 2018).
* the **forward-KL barycenter** :math:`\\arg\\min_q \\sum_m \\lambda_m \\mathrm{KL}(q_m \\| q)`
  over all densities is the mixture :math:`\\sum_m \\lambda_m q_m` (MMVAE, Shi et al., 2019);
  over Gaussians it is the moment-matched Gaussian with mean :math:`\\sum_m \\lambda_m \\mu_m`
  and covariance :math:`\\sum_m \\lambda_m (\\Sigma_m + (\\mu_m - \\mu)(\\mu_m - \\mu)^\\top)`.

Shapes: ``loc (..., M, d)``, ``scale (..., M, d)`` (standard deviations), ``cov
(..., M, d, d)``, ``weights`` broadcastable to ``(..., M)``; results drop the ``M`` axis.
"""

from __future__ import annotations

import math

import torch

from barycentric.functional._experts import prepare_experts, weighted_matrix_sum, weighted_sum
from barycentric.linalg import power_of_two_scale, symmetrise

__all__ = [
    "forward_kl_moments_diag",
    "forward_kl_moments_full",
    "pool_precisions_diag",
    "pool_precisions_full",
    "precision_pool_diag",
    "precision_pool_full",
    "reverse_kl_barycenter_diag",
    "reverse_kl_barycenter_full",
]


def precision_pool_diag(
    loc: torch.Tensor,
    scale: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    normalise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision-weighted pooling of diagonal Gaussians.

    :math:`\\sigma^{-2} = \\sum_m w_m \\sigma_m^{-2}`,
    :math:`\\mu = \\sigma^2 \\sum_m w_m \\sigma_m^{-2} \\mu_m`, with the weights normalised
    (the reverse-KL barycenter) or as given (``normalise=False``: the product of experts).
    """
    loc, scale, weights = prepare_experts(loc, scale, weights, full=False, normalise=normalise)
    return pool_precisions_diag(loc, scale, weights)


def _weighted_experts(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Whether each expert of ``values (..., M, d)`` has a positive weight in some row of
    ``weights`` (broadcastable to ``(..., M)``, or ``(..., S, M)`` against ``values (...,
    1, M, d)``), shape ``(..., M, 1)``: the experts whose values a rescaling may look at
    (the others hold placeholders)."""
    return (weights > 0).to(values.dtype).sum_to_size(values.shape[:-1]).unsqueeze(-1) > 0


def _moderate(x: torch.Tensor, *, tiny_ok: bool = False) -> bool:
    r"""Whether every entry of ``x`` lies within :math:`2^{\pm e/4}` of 1 (``e`` the dtype's
    largest exponent: :math:`2^{\pm 31}` in float32), or is 0 where ``tiny_ok``: then
    squares, inverse squares and sums of a few of them stay far inside the dtype's range,
    and the plain formulas are exact as they stand (one host synchronisation)."""
    if x.numel() == 0:
        return True
    bound = 2.0 ** (int(math.log2(torch.finfo(x.dtype).max)) // 4)
    magnitude = x.abs()
    moderate = magnitude.amax() <= bound
    if not tiny_ok:
        moderate &= magnitude.amin() >= 1 / bound
    return bool(moderate)


def _plus_absent(
    total: torch.Tensor, absent: torch.Tensor | None, unit: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """``total (..., S, *event)`` plus ``unit`` (a unit precision) in the subsets where
    ``absent (..., S)`` is true; ``total`` itself, no copy, without ``absent``."""
    if absent is None:
        return total
    return total + absent.to(total.dtype).unsqueeze(-1) * unit


def pool_precisions_diag(
    loc: torch.Tensor,
    scale: torch.Tensor,
    weights: torch.Tensor,
    *,
    absent: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The arithmetic of :func:`precision_pool_diag` on prepared inputs, without checks.

    ``weights (..., S, M)`` against ``loc, scale (..., 1, M, d)`` pools ``S`` subsets in
    one contraction (see :func:`~barycentric.functional._experts.weighted_sum`).
    ``absent (..., S)``, bool, marks subsets whose weights are all zero: they get the
    standard normal, from a unit precision added to their zero one (cheaper than
    replacing them afterwards; adding 0 changes no other subset).

    The precisions are taken relative to :math:`u`, a power of two at the smallest
    standard deviation among the experts with weight, dimension by dimension:
    :math:`\sigma^{-2} = u^{-2} \sum_m w_m (u / \sigma_m)^2`, each ratio at most 1, so
    standard deviations near the dtype's range (below about 1e-19 or above 1e19 in
    float32) neither overflow nor underflow, and scaling every :math:`\sigma_m` by a
    power of two changes no digit. Where every standard deviation is moderate (within
    :math:`2^{\pm 31}` in float32), :math:`u = 1` and the rescaling is skipped.
    """
    if _moderate(scale):
        precision = scale.pow(-2)
        total = _plus_absent(weighted_sum(weights, precision), absent)
        return weighted_sum(weights, precision * loc) / total, total.rsqrt()
    weighted = _weighted_experts(weights, scale)
    unit = power_of_two_scale(torch.where(weighted, scale, torch.inf).amin(-2, keepdim=True))
    precision = torch.where(weighted, unit / scale, 0.0).square()
    total = _plus_absent(weighted_sum(weights, precision), absent)
    pooled_scale = unit.squeeze(-2) * total.rsqrt()
    if absent is not None:
        pooled_scale = torch.where(absent.unsqueeze(-1), 1.0, pooled_scale)
    return weighted_sum(weights, precision * loc) / total, pooled_scale


def precision_pool_full(
    loc: torch.Tensor,
    cov: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    normalise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision-weighted pooling of full-covariance Gaussians (see :func:`precision_pool_diag`).

    :math:`\\Lambda = \\sum_m w_m \\Sigma_m^{-1}`,
    :math:`\\mu = \\Lambda^{-1} \\sum_m w_m \\Sigma_m^{-1} \\mu_m`; solved with Cholesky
    factors, never an explicit inverse of an ill-conditioned matrix more than needed.
    """
    loc, cov, weights = prepare_experts(loc, cov, weights, full=True, normalise=normalise)
    return pool_precisions_full(loc, cov, weights)


def pool_precisions_full(
    loc: torch.Tensor,
    cov: torch.Tensor,
    weights: torch.Tensor,
    *,
    absent: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The arithmetic of :func:`precision_pool_full` on prepared inputs, without checks.

    ``weights (..., S, M)`` against ``loc (..., 1, M, d)`` and ``cov (..., 1, M, d, d)``
    pools ``S`` subsets with one Cholesky factorisation per expert, not per subset and
    expert (see :func:`~barycentric.functional._experts.weighted_sum`). ``absent (...,
    S)`` marks subsets whose weights are all zero: they get the standard normal (see
    :func:`pool_precisions_diag`).
    """
    chol = torch.linalg.cholesky(cov)
    precision = weighted_matrix_sum(weights, torch.cholesky_inverse(chol))
    if absent is not None:
        eye = torch.eye(loc.shape[-1], dtype=precision.dtype, device=precision.device)
        precision = _plus_absent(precision, absent.unsqueeze(-1), eye)
    information = weighted_sum(weights, torch.cholesky_solve(loc.unsqueeze(-1), chol)[..., 0])
    chol_total = torch.linalg.cholesky(symmetrise(precision))
    pooled_cov = symmetrise(torch.cholesky_inverse(chol_total))
    pooled_loc = torch.cholesky_solve(information.unsqueeze(-1), chol_total)[..., 0]
    return pooled_loc, pooled_cov


def reverse_kl_barycenter_diag(
    loc: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-KL barycenter of diagonal Gaussians (normalised product of experts).

    Parameters
    ----------
    loc, scale : Tensor, shape (..., M, d)
        Means and standard deviations of the ``M`` experts.
    weights : Tensor, optional
        Non-negative, broadcastable to ``(..., M)``; normalised to sum to 1. ``None``:
        uniform.

    Returns
    -------
    loc, scale : Tensor, shape (..., d)
        :math:`\\sigma^{-2} = \\sum_m \\lambda_m \\sigma_m^{-2}` and
        :math:`\\mu = \\sigma^2 \\sum_m \\lambda_m \\sigma_m^{-2} \\mu_m`.
    """
    return precision_pool_diag(loc, scale, weights)


def reverse_kl_barycenter_full(
    loc: torch.Tensor, cov: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-KL barycenter of full-covariance Gaussians.

    Parameters
    ----------
    loc : Tensor, shape (..., M, d)
    cov : Tensor, shape (..., M, d, d)
        Symmetric positive definite covariances.
    weights : Tensor, optional
        Broadcastable to ``(..., M)``; normalised. ``None``: uniform.

    Returns
    -------
    loc : Tensor, shape (..., d)
        :math:`\\Lambda^{-1} \\sum_m \\lambda_m \\Sigma_m^{-1} \\mu_m`.
    cov : Tensor, shape (..., d, d)
        :math:`\\Lambda^{-1}` with :math:`\\Lambda = \\sum_m \\lambda_m \\Sigma_m^{-1}`.
    """
    return precision_pool_full(loc, cov, weights)


def forward_kl_moments_diag(
    loc: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Moment-matched Gaussian of a mixture of diagonal Gaussians (forward-KL projection).

    Parameters
    ----------
    loc, scale : Tensor, shape (..., M, d)
    weights : Tensor, optional
        Broadcastable to ``(..., M)``; normalised. ``None``: uniform.

    Returns
    -------
    loc, scale : Tensor, shape (..., d)
        :math:`\\mu = \\sum_m \\lambda_m \\mu_m` and
        :math:`\\sigma^2 = \\sum_m \\lambda_m (\\sigma_m^2 + (\\mu_m - \\mu)^2)`: the
        diagonal of the mixture's covariance, the best diagonal Gaussian in
        :math:`\\mathrm{KL}(\\text{mixture} \\| q)`.
    """
    loc, scale, weights = prepare_experts(loc, scale, weights, full=False)
    mean = weighted_sum(weights, loc)
    centred = loc - mean.unsqueeze(-2)
    if _moderate(scale) and _moderate(centred, tiny_ok=True):
        return mean, weighted_sum(weights, scale.square() + centred.square()).sqrt()
    # relative to a power of two at the largest deviation, so that no square overflows
    weighted = _weighted_experts(weights, scale)
    largest = torch.where(weighted, torch.maximum(scale, centred.abs()), 0.0)
    unit = power_of_two_scale(largest.amax(-2, keepdim=True))
    scale, centred = (torch.where(weighted, x / unit, 0.0) for x in (scale, centred))
    return mean, unit.squeeze(-2) * weighted_sum(weights, scale.square() + centred.square()).sqrt()


def forward_kl_moments_full(
    loc: torch.Tensor, cov: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Moment-matched Gaussian of a mixture of full-covariance Gaussians.

    Parameters
    ----------
    loc : Tensor, shape (..., M, d)
    cov : Tensor, shape (..., M, d, d)
    weights : Tensor, optional
        Broadcastable to ``(..., M)``; normalised. ``None``: uniform.

    Returns
    -------
    loc : Tensor, shape (..., d)
        :math:`\\mu = \\sum_m \\lambda_m \\mu_m`.
    cov : Tensor, shape (..., d, d)
        :math:`\\sum_m \\lambda_m (\\Sigma_m + (\\mu_m - \\mu)(\\mu_m - \\mu)^\\top)`.
    """
    loc, cov, weights = prepare_experts(loc, cov, weights, full=True)
    mean = weighted_sum(weights, loc)
    centred = loc - mean.unsqueeze(-2)
    spread = cov + centred.unsqueeze(-1) * centred.unsqueeze(-2)
    return mean, symmetrise(weighted_matrix_sum(weights, spread))
