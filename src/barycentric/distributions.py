r"""Barycenters of :mod:`torch.distributions` Gaussians: the public adapters.

Experts are diagonal Gaussians, ``Independent(Normal(loc, scale), 1)``, full-covariance
ones, ``MultivariateNormal``, or univariate ones, ``Normal`` (computed as diagonal Gaussians
of event size 1); either one distribution whose batch dimension ``dim`` indexes the ``M``
experts, or a Python sequence of distributions of one family (stacked along a new last
batch dimension). Results have the experts' batch shape without ``dim`` and the same
family, dtype and device as the input.

``weights`` are non-negative, broadcastable to the experts' batch shape (a 1-D tensor of
length ``M`` indexes the experts along ``dim``), and normalised to sum to one over the
experts; ``None`` is uniform. ``mask`` (bool, same broadcasting) marks the experts that are
present: ``mask=False`` and a zero weight both remove an expert, row by row, which is how
missing modalities are expressed. A row with no expert left raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch.distributions import Distribution, MixtureSameFamily

from barycentric._entry import entry_point
from barycentric._families import FULL, Experts, Family, categorical, family_of, gather_experts
from barycentric._validation import promote_floating
from barycentric.functional._experts import check_gaussian, prepare_experts
from barycentric.linalg import power_of_two_scale

__all__ = [
    "barycenter",
    "kl_barycenter",
    "product_of_experts",
    "wasserstein_barycenter",
    "wasserstein_distance",
]

ExpertsLike = Distribution | Sequence[Distribution]
Divergence = Literal["wasserstein", "reverse_kl", "forward_kl"]


@entry_point
def wasserstein_barycenter(
    experts: ExpertsLike,
    weights: torch.Tensor | Sequence[float] | None = None,
    *,
    dim: int = -1,
    mask: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float | None = None,
    backward: Literal["implicit", "unroll"] = "implicit",
    return_info: bool = False,
) -> Distribution | tuple[Distribution, Any]:
    r"""2-Wasserstein barycenter :math:`\arg\min_q \sum_m \lambda_m W_2^2(q, q_m)` of Gaussians.

    The barycenter of Gaussians is Gaussian (Agueh & Carlier, 2011) with mean
    :math:`\sum_m \lambda_m \mu_m`. Diagonal experts have the closed form
    :math:`\sigma = \sum_m \lambda_m \sigma_m`; full covariances solve
    :math:`\Sigma = \sum_m \lambda_m (\Sigma^{1/2}\Sigma_m\Sigma^{1/2})^{1/2}` by the
    fixed point of Álvarez-Esteban et al. (2016), exactly for commuting covariances and
    by McCann's geodesic for two experts (see
    :func:`barycentric.functional.wasserstein_barycenter_full`).

    Parameters
    ----------
    experts : Distribution or sequence of Distribution
        ``Independent(Normal, 1)`` with batch shape ``(..., M, ...)`` or
        ``MultivariateNormal``; or a sequence of ``M`` of them.
    weights : Tensor, optional
        Non-negative, broadcastable to the experts' batch shape; normalised over ``dim``.
    dim : int
        The batch dimension that indexes the experts.
    mask : Tensor, optional
        Bool, broadcastable like ``weights``; ``False`` removes an expert.
    max_iter, tol, backward
        Fixed-point settings for full covariances (ignored by the closed forms).
    return_info : bool
        Also return the solver's :class:`~barycentric.functional.FixedPointInfo`
        (iterations, residual, converged).

    Returns
    -------
    Distribution
        Same family as the experts, batch shape without ``dim``; with ``return_info``,
        ``(distribution, info)``.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> import barycentric as bc
    >>> experts = Independent(Normal(torch.tensor([[0.0], [4.0]]), torch.tensor([[1.0], [3.0]])), 1)
    >>> q = bc.wasserstein_barycenter(experts)
    >>> q.mean, q.stddev
    (tensor([2.]), tensor([2.]))
    """
    gathered = gather_experts(experts, dim)
    family = gathered.family
    loc, spread, info = family.wasserstein(
        gathered.loc,
        gathered.spread,
        gathered.weights(weights, mask),
        max_iter=max_iter,
        tol=tol,
        backward=backward,
        return_info=True,
    )
    result = family.pack(loc, spread)
    return (result, info) if return_info else result


def _mixture(gathered: Experts, weights: torch.Tensor) -> MixtureSameFamily:
    loc, spread, weights = prepare_experts(
        gathered.loc, gathered.spread, weights, full=gathered.family.full
    )
    return MixtureSameFamily(categorical(weights), gathered.family.pack(loc, spread))


def _reverse(gathered: Experts, weights: torch.Tensor, project: bool) -> Distribution:
    family = gathered.family
    return family.pack(*family.reverse_kl(gathered.loc, gathered.spread, weights))


def _forward(gathered: Experts, weights: torch.Tensor, project: bool) -> Distribution:
    if not project:
        return _mixture(gathered, weights)
    family = gathered.family
    return family.pack(*family.forward_kl(gathered.loc, gathered.spread, weights))


_DIRECTIONS: dict[str, Callable[[Experts, torch.Tensor, bool], Distribution]] = {
    "reverse": _reverse,
    "forward": _forward,
}


@entry_point
def kl_barycenter(
    experts: ExpertsLike,
    weights: torch.Tensor | Sequence[float] | None = None,
    *,
    direction: Literal["reverse", "forward"] = "reverse",
    dim: int = -1,
    mask: torch.Tensor | None = None,
    project: bool = False,
) -> Distribution:
    r"""KL barycenter of Gaussians, in either direction.

    * ``direction="reverse"``: :math:`\arg\min_q \sum_m \lambda_m \mathrm{KL}(q \| q_m)`,
      the normalised weighted product :math:`\propto \prod_m q_m^{\lambda_m}`: precision
      :math:`\Lambda = \sum_m \lambda_m \Sigma_m^{-1}`, mean
      :math:`\Lambda^{-1} \sum_m \lambda_m \Sigma_m^{-1} \mu_m` (zero-forcing; PoE).
    * ``direction="forward"``: :math:`\arg\min_q \sum_m \lambda_m \mathrm{KL}(q_m \| q)`,
      the mixture :math:`\sum_m \lambda_m q_m` (mass-covering; MoE), returned as a
      :class:`~torch.distributions.MixtureSameFamily`; with ``project=True``, the
      moment-matched Gaussian (the minimiser over Gaussians).

    Parameters
    ----------
    experts : Distribution or sequence of Distribution
        Diagonal or full-covariance Gaussians (see the module docstring).
    weights : Tensor, optional
        Non-negative, normalised over ``dim``; ``None``: uniform.
    direction : {"reverse", "forward"}
    dim : int
        The batch dimension that indexes the experts.
    mask : Tensor, optional
        Bool; ``False`` removes an expert.
    project : bool
        Forward direction only: return the moment-matched Gaussian instead of the
        mixture. The reverse barycenter is Gaussian already; ``project`` changes nothing.

    Returns
    -------
    Distribution
        A Gaussian of the experts' family, or (forward, ``project=False``) a mixture whose
        components have batch shape ``(..., M)``.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> import barycentric as bc
    >>> experts = Independent(Normal(torch.tensor([[0.0], [3.0]]), torch.tensor([[1.0], [1.0]])), 1)
    >>> bc.kl_barycenter(experts).mean
    tensor([1.5000])
    >>> bc.kl_barycenter(experts, direction="forward", project=True).variance
    tensor([3.2500])
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"`direction` must be one of {sorted(_DIRECTIONS)}, got {direction!r}")
    gathered = gather_experts(experts, dim)
    return _DIRECTIONS[direction](gathered, gathered.weights(weights, mask), project)


@entry_point
def product_of_experts(
    experts: ExpertsLike,
    *,
    dim: int = -1,
    mask: torch.Tensor | None = None,
    prior: Distribution | None = None,
) -> Distribution:
    r"""The classic un-normalised product of Gaussian experts of MVAE (Wu & Goodman, 2018).

    :math:`\prod_m q_m` (times the prior expert, if given) is Gaussian with precision
    :math:`\Lambda = \sum_m \Sigma_m^{-1}` and mean
    :math:`\Lambda^{-1} \sum_m \Sigma_m^{-1} \mu_m`: the reverse-KL barycenter with
    weights that sum to the number of experts rather than to one, so it sharpens as
    experts are added.

    Parameters
    ----------
    experts : Distribution or sequence of Distribution
        Diagonal or full-covariance Gaussians.
    dim : int
        The batch dimension that indexes the experts.
    mask : Tensor, optional
        Bool; ``False`` removes an expert (a missing modality).
    prior : Distribution, optional
        An expert of the same family that is always present (MVAE uses the standard
        normal), batch shape broadcastable to the result's. With a prior, a row whose
        experts are all masked returns the prior.

    Returns
    -------
    Distribution
        Same family, batch shape without ``dim``.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> import barycentric as bc
    >>> experts = Independent(Normal(torch.zeros(3, 1), torch.ones(3, 1)), 1)
    >>> bc.product_of_experts(experts).variance
    tensor([0.3333])
    """
    gathered = gather_experts(experts, dim)
    family = gathered.family
    loc, spread = gathered.loc, gathered.spread
    weights = gathered.weights(None, mask)
    if prior is not None:
        loc, spread, weights = family.with_prior(prior, loc, spread, weights)
    return family.pack(*family.precision_pool(loc, spread, weights, normalise=False))


@entry_point
def barycenter(
    experts: ExpertsLike,
    weights: torch.Tensor | Sequence[float] | None = None,
    *,
    divergence: Divergence = "wasserstein",
    dim: int = -1,
    mask: torch.Tensor | None = None,
    **solver: Any,
) -> Distribution:
    r"""Barycenter of Gaussian experts under a named divergence.

    ``"wasserstein"`` calls :func:`wasserstein_barycenter` (``solver``: ``max_iter``,
    ``tol``, ``backward``, ``return_info``); ``"reverse_kl"`` and ``"forward_kl"`` call
    :func:`kl_barycenter` in that direction (``solver``: ``project``).

    Parameters
    ----------
    experts, weights, dim, mask
        As in :func:`wasserstein_barycenter`.
    divergence : {"wasserstein", "reverse_kl", "forward_kl"}
    **solver
        Passed to the function of the divergence.

    Returns
    -------
    Distribution
        The barycenter (a mixture for ``"forward_kl"`` without ``project=True``).

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> import barycentric as bc
    >>> experts = Independent(Normal(torch.zeros(2, 1), torch.tensor([[1.0], [4.0]])), 1)
    >>> bc.barycenter(experts, divergence="wasserstein").stddev
    tensor([2.5000])
    """
    if divergence not in _DIVERGENCES:
        raise ValueError(f"`divergence` must be one of {sorted(_DIVERGENCES)}, got {divergence!r}")
    return _DIVERGENCES[divergence](experts, weights, dim=dim, mask=mask, **solver)


def _reverse_kl(experts, weights, **options):
    return kl_barycenter(experts, weights, direction="reverse", **options)


def _forward_kl(experts, weights, **options):
    return kl_barycenter(experts, weights, direction="forward", **options)


_DIVERGENCES: dict[str, Callable[..., Distribution]] = {
    "wasserstein": wasserstein_barycenter,
    "reverse_kl": _reverse_kl,
    "forward_kl": _forward_kl,
}


@entry_point
def wasserstein_distance(
    p: Distribution, q: Distribution, *, squared: bool = False
) -> torch.Tensor:
    r"""2-Wasserstein distance between Gaussians, batched.

    :math:`W_2^2(p, q) = \|\mu_p - \mu_q\|^2 + \operatorname{tr}\big(\Sigma_p + \Sigma_q
    - 2 (\Sigma_p^{1/2} \Sigma_q \Sigma_p^{1/2})^{1/2}\big)`, which for diagonal Gaussians is
    :math:`\|\mu_p - \mu_q\|^2 + \|\sigma_p - \sigma_q\|^2`. A diagonal and a full
    Gaussian are compared as full ones.

    Parameters
    ----------
    p, q : Distribution
        ``Independent(Normal, 1)`` or ``MultivariateNormal`` with the same event size and
        broadcastable batch shapes; of different dtypes, they are compared in the
        promoted one (float32 and float64 give float64), as the barycenters do.
    squared : bool
        Return :math:`W_2^2` instead of :math:`W_2`. :math:`W_2` is not differentiable
        where it is 0 (like a norm at the origin): there its gradient is the subgradient
        0, as :func:`torch.linalg.vector_norm`'s is.

    Returns
    -------
    Tensor, shape: the broadcast batch shape
        In the promoted dtype of ``p``'s and ``q``'s parameters.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> import barycentric as bc
    >>> p = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    >>> q = Independent(Normal(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 5.0])), 1)
    >>> bc.wasserstein_distance(p, q)
    tensor(5.)
    """
    family_p, family_q = family_of(p, "p"), family_of(q, "q")
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"`p` and `q` have different event shapes {tuple(p.event_shape)} and "
            f"{tuple(q.event_shape)}"
        )
    try:
        torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    except RuntimeError as error:
        raise ValueError(
            f"`p` and `q` have batch shapes {tuple(p.batch_shape)} and {tuple(q.batch_shape)} "
            "that do not broadcast"
        ) from error
    (loc_p, spread_p), (loc_q, spread_q) = family_p.unpack(p), family_q.unpack(q)
    loc_p, spread_p, loc_q, spread_q = promote_floating(
        ("p", loc_p), ("p", spread_p), ("q", loc_q), ("q", spread_q)
    )
    check_gaussian(loc_p, spread_p, full=family_p.full)
    check_gaussian(loc_q, spread_q, full=family_q.full)
    if not squared:
        # W2 scales with the Gaussians (means and standard deviations by c): from both
        # divided by a power of two near their largest mean or standard deviation, W2²
        # neither underflows nor overflows wherever W2 is representable
        unit = power_of_two_scale(
            torch.maximum(
                _magnitude(loc_p, spread_p, family_p), _magnitude(loc_q, spread_q, family_q)
            )
        ).unsqueeze(-1)
        loc_p, loc_q = loc_p / unit, loc_q / unit
        spread_p, spread_q = (
            _divide_spread(spread, unit, family)
            for spread, family in ((spread_p, family_p), (spread_q, family_q))
        )
    if family_p is family_q:
        distance = family_p.distance(loc_p, spread_p, loc_q, spread_q)
    else:
        distance = FULL.distance(
            loc_p, family_p.to_full(spread_p), loc_q, family_q.to_full(spread_q)
        )
    if squared:
        return distance
    # the double ``where`` keeps sqrt's infinite derivative at 0 out of the backward pass
    positive = distance > 0
    return torch.where(positive, torch.where(positive, distance, 1.0).sqrt(), 0.0) * unit[..., 0]


def _magnitude(loc: torch.Tensor, spread: torch.Tensor, family: Family) -> torch.Tensor:
    """The largest absolute mean entry or standard deviation of each Gaussian, ``(...)``."""
    std = torch.diagonal(spread, dim1=-2, dim2=-1).sqrt() if family.full else spread
    return torch.maximum(loc.abs().amax(-1), std.amax(-1))


def _divide_spread(spread: torch.Tensor, unit: torch.Tensor, family: Family) -> torch.Tensor:
    """The spread of a Gaussian whose variable is divided by ``unit (..., 1)``."""
    return spread / unit.unsqueeze(-1) / unit.unsqueeze(-1) if family.full else spread / unit
