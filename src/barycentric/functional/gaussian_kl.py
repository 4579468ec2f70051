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

import torch

from barycentric._entry import entry_point
from barycentric.functional._experts import (
    normalise_weights,
    prepare_experts,
    weighted_matrix_sum,
    weighted_sum,
)
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


def pool_precisions_diag(
    loc: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The arithmetic of :func:`precision_pool_diag` on prepared inputs, without checks.

    ``weights (..., S, M)`` against ``loc, scale (..., 1, M, d)`` pools ``S`` subsets in
    one contraction (see :func:`~barycentric.functional._experts.weighted_sum`).

    Overflow-safe at every scale the dtype holds, with branch-free tensor operations (no
    host synchronisation; :func:`torch.compile` traces it whole). The precisions are taken
    relative to :math:`u`, the smallest standard deviation among the experts with weight,
    dimension by dimension (the results do not depend on it, so it carries no derivative),
    and the weights relative to their sum :math:`W = \sum_m w_m` (:math:`\hat w = w / W`):

    .. math::

        \sigma^{-2} = u^{-2}\, W \sum_m \hat w_m r_m, \qquad
        \mu = \frac{\sum_m \hat w_m r_m \mu_m}{\sum_m \hat w_m r_m}, \qquad
        r_m = (u / \sigma_m)^2 \le 1.

    No :math:`r_m` overflows, the one of the smallest standard deviation is 1 (a ratio
    that underflows belongs to an expert of negligible precision), and the
    information :math:`\sum_m \hat w_m r_m \mu_m` is at most :math:`\max_m |\mu_m|`: means
    and standard deviations anywhere in the dtype's range give the result wherever it is
    representable (float32 means of 1e21 with standard deviations of 1e-9 included, whose
    precision-weighted means :math:`\sigma_m^{-2} \mu_m` overflow), and scaling every
    :math:`\sigma_m` by a power of two changes no digit of the mean.
    """
    # placeholders (no weight in any row) get an infinite deviation: out of the smallest,
    # and of precision 0
    scale = scale + torch.where(_weighted_experts(weights, scale), 0.0, torch.inf)
    unit = scale.detach().amin(-2, keepdim=True)
    precision = (unit / scale).square()
    share = normalise_weights(weights)
    pooled = weighted_sum(share, precision)
    mean = weighted_sum(share, precision * loc) / pooled
    total = weights.sum(-1, keepdim=True)
    return mean, unit.squeeze(-2) * (total * pooled).rsqrt()


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
    loc: torch.Tensor, cov: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The arithmetic of :func:`precision_pool_full` on prepared inputs, without checks.

    ``weights (..., S, M)`` against ``loc (..., 1, M, d)`` and ``cov (..., 1, M, d, d)``
    pools ``S`` subsets with one Cholesky factorisation per expert, not per subset and
    expert (see :func:`~barycentric.functional._experts.weighted_sum`).

    Overflow-safe as :func:`pool_precisions_diag` is, with branch-free tensor operations:
    each covariance is factorised divided by :math:`s_m`, a power of two near its largest
    variance, the precisions are taken relative to :math:`u = \min_m s_m` over the experts
    with weight, the weights relative to their sum :math:`W` and the means relative to
    :math:`v`, a power of two near the largest mean entry:

    .. math::

        \Lambda' = \sum_m \hat w_m \frac{u}{s_m} \Big(\frac{\Sigma_m}{s_m}\Big)^{-1}, \quad
        \eta' = \sum_m \hat w_m \frac{u}{s_m} \Big(\frac{\Sigma_m}{s_m}\Big)^{-1}
            \frac{\mu_m}{v}, \qquad
        \Sigma = \frac{u}{W} \Lambda'^{-1}, \quad \mu = v\, \Lambda'^{-1} \eta',

    every factor at most 1 but the experts' own condition numbers, so that neither the
    precisions nor the information overflow wherever the result is representable.
    """
    weighted = _weighted_experts(weights, loc)[..., 0]
    expert_scale = power_of_two_scale(torch.diagonal(cov, dim1=-2, dim2=-1).amax(-1))
    chol = torch.linalg.cholesky(cov / expert_scale[..., None, None])
    unit = torch.where(weighted, expert_scale, torch.inf).amin(-1, keepdim=True)
    share = normalise_weights(weights) * torch.where(weighted, unit / expert_scale, 0.0)
    loc_unit = power_of_two_scale(
        torch.where(weighted.unsqueeze(-1), loc.abs(), 0.0).amax((-2, -1))
    ).unsqueeze(-1)
    precision = weighted_matrix_sum(share, torch.cholesky_inverse(chol))
    scaled_loc = (loc / loc_unit.unsqueeze(-1)).unsqueeze(-1)
    information = weighted_sum(share, torch.cholesky_solve(scaled_loc, chol)[..., 0])
    chol_total = torch.linalg.cholesky(symmetrise(precision))
    pooled_cov = symmetrise(torch.cholesky_inverse(chol_total))
    pooled_loc = torch.cholesky_solve(information.unsqueeze(-1), chol_total)[..., 0]
    total = weights.sum(-1, keepdim=True)
    return loc_unit * pooled_loc, (unit / total).unsqueeze(-1) * pooled_cov


@entry_point
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


@entry_point
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


@entry_point
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
    # relative to a power of two at the largest deviation, so that no square overflows (and
    # none that matters underflows): branch-free, so compiled graphs hold it whole
    weighted = _weighted_experts(weights, scale)
    largest = torch.where(weighted, torch.maximum(scale, centred.abs()), 0.0)
    unit = power_of_two_scale(largest.amax(-2, keepdim=True))
    scale, centred = (torch.where(weighted, x / unit, 0.0) for x in (scale, centred))
    return mean, unit.squeeze(-2) * weighted_sum(weights, scale.square() + centred.square()).sqrt()


@entry_point
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
