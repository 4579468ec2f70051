r"""Mixtures of barycenters over subsets of experts: MoE, MoPoE and MWB in one call.

For experts :math:`q_1, \dots, q_M` and subsets :math:`S_1, \dots, S_K` of them, the mixture
of barycenters is :math:`\sum_k \pi_k\, \mathrm{bary}(\{q_m\}_{m \in S_k})` with uniform
:math:`\pi` over the subsets that keep at least one present expert. Every subset
barycenter of a batch is computed in one batched call: the subsets are a boolean matrix
``(S, M)`` multiplied into the weights, so there is no Python loop over the
:math:`2^M - 1` subsets.

* MoE (MMVAE, Shi et al. 2019): ``subsets="singletons"``, any divergence;
* MoPoE (Sutter et al. 2021) with normalised products: ``subsets="all"``,
  ``divergence="reverse_kl"``. Sutter et al. multiply the experts of each subset (the
  precisions add, so, prior aside, the same means and variances :math:`|s|` times
  smaller; the full set's product includes the prior :math:`\mathcal N(0, I)`): that is
  :func:`barycentric.product_of_experts` per subset, which ``examples/multimodal_vae``
  batches as the subset membership matrix times the precisions;
* MWB (MWB-VAE, Qiu et al.): ``subsets="all"``, ``divergence="wasserstein"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.distributions import Distribution, MixtureSameFamily

from barycentric._entry import entry_point
from barycentric._families import Family, categorical, gather_experts
from barycentric._validation import check_int, validation_enabled
from barycentric.functional._experts import (
    normalise_weights,
    prepare_experts,
    standard_where_absent,
)
from barycentric.functional.subsets import SubsetSpec, subset_masks

__all__ = ["mixture_of_barycenters", "stratified_rsample"]

_KERNELS: dict[str, Callable[[Family], Callable[..., tuple[torch.Tensor, torch.Tensor]]]] = {
    "wasserstein": lambda family: family.wasserstein,
    "reverse_kl": lambda family: family.reverse_kl,
    "forward_kl": lambda family: family.forward_kl,
}


@entry_point
def mixture_of_barycenters(
    experts: Distribution | Sequence[Distribution],
    subsets: SubsetSpec = "all",
    *,
    divergence: str = "wasserstein",
    dim: int = -1,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | Sequence[float] | None = None,
) -> MixtureSameFamily:
    r"""Mixture over subsets of experts of the experts' barycenter in each subset.

    Parameters
    ----------
    experts : Distribution or sequence of Distribution
        Diagonal (``Independent(Normal, 1)``) or full-covariance (``MultivariateNormal``)
        Gaussians; batch dimension ``dim`` indexes the ``M`` experts.
    subsets : {"all", "singletons"} or int or Tensor
        ``"all"``: the :math:`2^M - 1` non-empty subsets (size-major order, see
        :func:`barycentric.functional.subset_masks`); ``"singletons"``: the ``M`` experts
        themselves; an int ``k``: every subset of size ``k``; a bool tensor ``(S, M)``.
    divergence : {"wasserstein", "reverse_kl", "forward_kl"}
        The barycenter inside each subset: W2 (MWB), the normalised product (the
        reverse-KL barycenter, precisions averaged: MoPoE's product tempered by the
        subset's size, see above), or the moment-matched Gaussian.
    dim : int
        The batch dimension that indexes the experts.
    mask : Tensor, optional
        Bool, broadcastable to the experts' batch shape; ``False`` marks a missing expert.
        A subset that loses all its experts gets mixing weight 0 in that row and the
        others are renormalised.
    weights : Tensor, optional
        Non-negative expert weights, renormalised inside each subset.

    Returns
    -------
    MixtureSameFamily
        ``mixture_distribution.probs`` has shape ``(..., S)``;
        ``component_distribution`` is of the experts' family with batch shape
        ``(..., S)``. In a row where a subset has no present expert, its component is
        the standard normal :math:`\mathcal N(0, I)`, a finite placeholder with mixing
        weight 0: the parameters of absent experts never reach the result or its
        gradients.

    Raises
    ------
    ValueError
        For an unknown divergence or subsets form, or a row in which no subset keeps an
        expert.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> import barycentric as bc
    >>> experts = Independent(Normal(torch.tensor([[0.0], [2.0]]), torch.ones(2, 1)), 1)
    >>> mix = bc.mixture_of_barycenters(experts, "all")
    >>> mix.component_distribution.mean.squeeze(-1)
    tensor([0., 2., 1.])
    >>> mix.mixture_distribution.probs
    tensor([0.3333, 0.3333, 0.3333])
    """
    if divergence not in _KERNELS:
        raise ValueError(f"`divergence` must be one of {sorted(_KERNELS)}, got {divergence!r}")
    gathered = gather_experts(experts, dim)
    family = gathered.family
    raw = gathered.weights(weights, mask)
    loc, spread, _ = prepare_experts(
        gathered.loc, gathered.spread, raw, full=family.full, normalise=False
    )
    members = subset_masks(subsets, gathered.num_experts, loc.device)
    subset_weights = raw.unsqueeze(-2) * members
    present = (subset_weights > 0).any(-1)
    if validation_enabled() and not bool(present.any(-1).all()):
        raise ValueError("`mask`/`weights`: a row has no present expert in any subset")
    # a subset without a present expert is solved over all the row's present experts (finite
    # and never reading an absent one), then replaced by the standard normal
    complete = bool(present.all())
    safe_weights = (
        subset_weights
        if complete
        else torch.where(present.unsqueeze(-1), subset_weights, raw.unsqueeze(-2))
    )
    tail = family.spread_dims + 1
    loc_b, spread_b = loc.unsqueeze(-3), spread.unsqueeze(-1 - tail)
    if divergence in family.subset_kernels:
        normalised = normalise_weights(safe_weights)
        bary_loc, bary_spread = family.subset_kernels[divergence](loc_b, spread_b, normalised)
    else:
        shape = safe_weights.shape
        bary_loc, bary_spread = _KERNELS[divergence](family)(
            loc_b.expand(*shape, loc.shape[-1]),
            spread_b.expand(*shape, *spread.shape[-family.spread_dims :]),
            safe_weights,
        )
    if not complete:
        bary_loc, bary_spread = standard_where_absent(
            present, bary_loc, bary_spread, full=family.full
        )
    mixing = categorical(present.to(raw.dtype))
    return MixtureSameFamily(mixing, family.pack(bary_loc, bary_spread))


@entry_point
def stratified_rsample(mixture: MixtureSameFamily, n: int = 1) -> torch.Tensor:
    r"""Reparameterised draws from every component of a mixture (stratified sampling).

    A mixture has no reparameterised sampler (the component index is discrete). The
    stratified estimator of MMVAE and MoPoE instead draws ``n`` samples from *each*
    component and weights their contributions by the mixing probabilities:

    .. math::

        \mathbb E_{z \sim \sum_s \pi_s q_s}[f(z)]
        \approx \sum_s \pi_s \frac1n \sum_{i=1}^n f(z_{s,i}),
        \qquad z_{s,i} = \mu_s + \sigma_s \odot \epsilon_{s,i},

    which is unbiased, has lower variance than ancestral sampling and lets gradients flow
    to every component's parameters. Components with :math:`\pi_s = 0` are sampled too;
    weight them by ``mixture.mixture_distribution.probs``.

    Parameters
    ----------
    mixture : MixtureSameFamily
        With a component family that has ``rsample`` (e.g. from
        :func:`mixture_of_barycenters`).
    n : int
        Samples per component, at least 1 (a Python or numpy integer).

    Returns
    -------
    Tensor, shape (n, *mixture.batch_shape, S, *mixture.event_shape)

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> import barycentric as bc
    >>> experts = Independent(Normal(torch.zeros(4, 3, 2), torch.ones(4, 3, 2)), 1)
    >>> bc.stratified_rsample(bc.mixture_of_barycenters(experts, "all"), 5).shape
    torch.Size([5, 4, 7, 2])
    """
    if not isinstance(mixture, MixtureSameFamily):
        raise ValueError(f"`mixture` must be a MixtureSameFamily, got {type(mixture).__name__}")
    if not mixture.component_distribution.has_rsample:
        raise ValueError("`mixture`'s components have no reparameterised sampler")
    n = check_int(n, "n", minimum=1)
    return mixture.component_distribution.rsample((n,))
