r"""Mixtures over subsets of experts: MoE, MoPoE and MWB in one call, and their samplers.

For experts :math:`q_1, \dots, q_M` and subsets :math:`S_1, \dots, S_K` of them, a
mixture over subsets is :math:`\sum_k \pi_k\, q_{S_k}` with uniform :math:`\pi` over the
subsets that keep at least one present expert, :math:`q_{S_k}` an aggregate of the experts
of :math:`S_k`. Every subset of a batch is computed in one batched call: the subsets are
a boolean matrix ``(S, M)`` multiplied into the weights, so there is no Python loop over
the :math:`2^M - 1` subsets.

* MoE (MMVAE, Shi et al. 2019): :func:`mixture_of_barycenters` with
  ``subsets="singletons"``, any divergence;
* MoPoE (Sutter et al. 2021): :func:`mixture_of_products`, each subset's un-normalised
  product of experts (precisions add). ``mixture_of_barycenters(..., "all",
  divergence="reverse_kl")`` is the normalised variant (precisions averaged), which does
  not sharpen as experts are added;
* MWB (MWB-VAE, Qiu et al.): :func:`mixture_of_barycenters` with ``subsets="all"``,
  ``divergence="wasserstein"``.

A mixture has no reparameterised sampler; :func:`stratified_rsample` draws from every
component (MMVAE's and MoPoE's stratified ELBO) and :func:`split_rsample` from one
component per batch row, the rows shared out in proportion to the mixing weights
(MoPoE's estimator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.distributions import Distribution, MixtureSameFamily

from barycentric._entry import entry_point
from barycentric._families import Family, categorical, family_of, gather_experts
from barycentric._validation import check_int, validation_enabled
from barycentric.functional._experts import (
    normalise_weights,
    prepare_experts,
    standard_where_absent,
)
from barycentric.functional.subsets import SubsetSpec, subset_masks

__all__ = ["mixture_of_barycenters", "mixture_of_products", "split_rsample", "stratified_rsample"]

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
        reverse-KL barycenter, precisions averaged: MoPoE's product, which
        :func:`mixture_of_products` computes, tempered by the subset's size), or the
        moment-matched Gaussian.
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
        For an unknown divergence or subsets form, more than
        :data:`~barycentric.functional.subsets.MAX_SUBSETS` subsets asked for by name or
        size (``"all"`` beyond 16 experts; refused before any work), or a row in which no
        subset keeps an expert.

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
    members = subset_masks(subsets, gathered.num_experts, gathered.loc.device)
    family = gathered.family
    raw = gathered.weights(weights, mask)
    loc, spread, _ = prepare_experts(
        gathered.loc, gathered.spread, raw, full=family.full, normalise=False
    )
    subset_weights, present = _subset_weights(raw, members, "`mask`/`weights`")
    complete = bool(present.all())
    safe_weights = subset_weights if complete else _over_present(subset_weights, present, raw)
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
    return _subset_mixture(family, present, bary_loc, bary_spread, complete=complete)


@entry_point
def mixture_of_products(
    experts: Distribution | Sequence[Distribution],
    subsets: SubsetSpec = "all",
    *,
    dim: int = -1,
    mask: torch.Tensor | None = None,
    prior: Distribution | None = None,
) -> MixtureSameFamily:
    r"""MoPoE: the mixture over subsets of experts of their un-normalised products.

    For Gaussian experts :math:`q_m = \mathcal N(\mu_m, \Sigma_m)` and a subset
    :math:`S`, the component :math:`q_S \propto \prod_{m \in S} q_m` (times the prior
    :math:`p = \mathcal N(\mu_0, \Sigma_0)`, if given) is the Gaussian with precision
    and mean

    .. math::

        \Lambda_S = \sum_{m \in S} \Sigma_m^{-1} \;\big(+\, \Sigma_0^{-1}\big),
        \qquad
        \mu_S = \Lambda_S^{-1} \Big(\sum_{m \in S} \Sigma_m^{-1} \mu_m
        \;\big(+\, \Sigma_0^{-1} \mu_0\big)\Big),

    :func:`barycentric.product_of_experts` of the experts of :math:`S`, and the mixture is
    :math:`q = \sum_S \pi_S\, q_S` with :math:`\pi` uniform over the subsets that keep
    a present expert (Sutter et al., 2021). The precisions add, so a component sharpens
    as experts join it; ``mixture_of_barycenters(..., divergence="reverse_kl")`` averages
    them instead. All products are one contraction of the ``(S, M)`` membership matrix
    with the experts' precisions and precision-weighted means (full covariances: one
    Cholesky factorisation per expert and one per subset), with no loop over subsets and
    no copy of an expert per subset.

    **The prior** multiplies into every subset's product, so that component :math:`S` is
    exactly ``product_of_experts`` of the experts of :math:`S` with the same ``prior``
    (MVAE's posterior given the modalities of :math:`S`): a component then depends on its
    own subset alone, not on which other subsets are listed or which experts are missing.
    ``prior=None`` puts no prior in any product. Sutter et al.'s code
    (``utils/BaseMMVae.py``, ``poe_fusion``) multiplies :math:`\mathcal N(0, I)` into the
    full set's product only, and only when every modality is observed; that convention
    is this function with the prior passed as expert ``M + 1``, a member of the full set
    alone, masked in rows with a missing modality (see the last example).

    **Missing experts** (``mask=False``) leave every subset, row by row. A subset left
    with no present expert gets mixing weight 0 in that row; its component is the prior
    alone (the product of the prior and no expert, as ``product_of_experts`` returns it),
    or without a prior the standard normal, a finite placeholder. The parameters of
    absent experts never reach the result or its gradients.

    Parameters
    ----------
    experts : Distribution or sequence of Distribution
        Diagonal (``Independent(Normal, 1)``) or full-covariance (``MultivariateNormal``)
        Gaussians; batch dimension ``dim`` indexes the ``M`` experts.
    subsets : {"all", "singletons"} or int or Tensor or array
        ``"all"``: the :math:`2^M - 1` non-empty subsets (size-major order, the full set
        last, see :func:`barycentric.functional.subset_masks`); ``"singletons"``: the
        ``M`` experts (MoE, or with a prior each expert times the prior); an int ``k``:
        every subset of size ``k``; a bool tensor, numpy array or nested list ``(S, M)``.
    dim : int
        The batch dimension that indexes the experts.
    mask : Tensor, optional
        Bool, broadcastable to the experts' batch shape (a 1-D mask of length ``M``
        indexes the experts); ``False`` marks a missing expert.
    prior : Distribution, optional
        A Gaussian of the experts' family and event size, batch shape broadcastable to
        the experts' without ``dim``, in every product; ``None``: no prior.

    Returns
    -------
    MixtureSameFamily
        ``mixture_distribution.probs`` of shape ``(..., S)``; ``component_distribution``
        of the experts' family with batch shape ``(..., S)``, in the promoted dtype of
        the experts and the prior.

    Raises
    ------
    ValueError
        For a ``prior`` of another family or event size, or whose batch shape does not
        broadcast; ``subsets`` of the wrong width or form; a ``mask`` row with no
        present expert in any subset.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> import barycentric as bc
    >>> experts = Independent(Normal(torch.tensor([[0.0], [2.0]]), torch.ones(2, 1)), 1)
    >>> mix = bc.mixture_of_products(experts)  # subsets {1}, {2}, {1, 2}
    >>> mix.component_distribution.mean.squeeze(-1)
    tensor([0., 2., 1.])
    >>> mix.component_distribution.variance.squeeze(-1)
    tensor([1.0000, 1.0000, 0.5000])
    >>> prior = Independent(Normal(torch.zeros(1), torch.ones(1)), 1)
    >>> bc.mixture_of_products(experts, prior=prior).component_distribution.mean.squeeze(-1)
    tensor([0.0000, 1.0000, 0.6667])

    Sutter et al.'s convention, the prior in the full set's product only:

    >>> with_prior = Independent(Normal(torch.tensor([[0.0], [2.0], [0.0]]), torch.ones(3, 1)), 1)
    >>> subsets = [[True, False, False], [False, True, False], [True, True, True]]
    >>> bc.mixture_of_products(with_prior, subsets).component_distribution.mean.squeeze(-1)
    tensor([0.0000, 2.0000, 0.6667])
    """
    gathered = gather_experts(experts, dim)
    members = subset_masks(subsets, gathered.num_experts, gathered.loc.device)
    family = gathered.family
    loc, spread, raw = prepare_experts(
        gathered.loc,
        gathered.spread,
        gathered.weights(None, mask),
        full=family.full,
        normalise=False,
    )
    subset_weights, present = _subset_weights(raw, members, "`mask`")
    # with a prior, a subset without a present expert is the prior alone
    complete = prior is not None or bool(present.all())
    if not complete:
        subset_weights = _over_present(subset_weights, present, raw)
    if prior is not None:
        loc, spread, subset_weights = family.with_prior(prior, loc, spread, subset_weights)
    tail = family.spread_dims + 1
    product_loc, product_spread = family.subset_kernels["reverse_kl"](
        loc.unsqueeze(-3), spread.unsqueeze(-1 - tail), subset_weights
    )
    return _subset_mixture(family, present, product_loc, product_spread, complete=complete)


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


@entry_point
def split_rsample(
    mixture: MixtureSameFamily, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One reparameterised draw per batch row, the rows split among the components in
    proportion to the mixing weights (MoPoE's estimator).

    :func:`stratified_rsample` draws from every component, ``S`` decodings per row. MoPoE
    (Sutter et al., 2021; ``mixture_component_selection`` in their code) instead shares
    the batch out: row :math:`i` draws :math:`z_i = \mu_{k_i} + L_{k_i} \epsilon_i`,
    :math:`\epsilon_i \sim \mathcal N(0, I)`, from one component :math:`k_i`, each
    component taking a share of the rows in proportion to its weight, so that

    .. math::

        \sum_s \pi_s\, \mathbb E_{q_s}[f] \approx \frac1n \sum_{i=1}^n f_i(z_i)

    with ``S`` times fewer evaluations of :math:`f`, reparameterised: gradients flow to
    the mean and scale (``L``: standard deviations, or the Cholesky factor of the
    covariance) of the component each row draws from.

    **The split** is deterministic. The rows are the ``n`` elements of the mixture's
    batch in row-major order; row :math:`i` takes the component whose interval of its
    cumulative mixing weights holds the row's midpoint:

    .. math::

        C_{k_i - 1} \le \frac{i + 1/2}{n} < C_{k_i},
        \qquad C_k = \sum_{j \le k} \pi_j,\; C_{-1} = 0.

    Rows that share their weights are cut into contiguous blocks in component order,
    component :math:`k` taking :math:`n_k = \lceil n C_k - \tfrac12 \rceil -
    \lceil n C_{k-1} - \tfrac12 \rceil` rows, :math:`|n_k - n \pi_k| < 1`; a
    component of weight 0 takes none. MoPoE's code gives :math:`\lfloor n \pi_k \rfloor`
    rows to every component but the last, which takes the rest (up to :math:`S - 1`
    rows beyond its share); the two agree when every :math:`n \pi_k` is an integer. A
    row whose weights differ from the others' (a missing modality) reads its own
    :math:`C` at its own midpoint, so it never draws from a component it lacks.

    As in MoPoE, the estimate is unbiased, up to the rounding of the shares
    (:math:`|n_k / n - \pi_k| < 1/n`), when the rows come in random order, as from a
    shuffled data loader; a given row of a fixed batch always draws from the same
    component (:func:`stratified_rsample` covers every component of every row).

    Parameters
    ----------
    mixture : MixtureSameFamily
        Of diagonal (``Independent(Normal, 1)``) or full-covariance
        (``MultivariateNormal``) Gaussian components, e.g. from
        :func:`mixture_of_products`; batch shape ``(...)``, ``S`` components.
    generator : torch.Generator, optional
        The source of :math:`\epsilon` (on the mixture's device); ``None``: torch's
        default.

    Returns
    -------
    z : Tensor, shape (..., d)
        One draw per row, in the components' dtype.
    component : Tensor, shape (...), int64
        :math:`k_i`, the component each row drew from.

    Raises
    ------
    ValueError
        If ``mixture`` is not a ``MixtureSameFamily`` of Gaussians.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> import barycentric as bc
    >>> experts = Independent(Normal(torch.zeros(8, 2, 3), torch.ones(8, 2, 3)), 1)
    >>> z, component = bc.split_rsample(bc.mixture_of_products(experts))
    >>> z.shape, component.tolist()
    (torch.Size([8, 3]), [0, 0, 0, 1, 1, 2, 2, 2])
    """
    if not isinstance(mixture, MixtureSameFamily):
        raise ValueError(f"`mixture` must be a MixtureSameFamily, got {type(mixture).__name__}")
    components = mixture.component_distribution
    family = family_of(components, "mixture.component_distribution")
    component = _split(mixture.mixture_distribution.probs)
    index = component[..., None, None]
    loc = torch.take_along_dim(family.unpack(components)[0], index, -2)[..., 0, :]
    noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
    if family.full:
        tril = torch.take_along_dim(components.scale_tril, index[..., None], -3)[..., 0, :, :]
        return loc + (tril @ noise.unsqueeze(-1))[..., 0], component
    scale = torch.take_along_dim(family.unpack(components)[1], index, -2)[..., 0, :]
    z = loc + scale * noise
    return (z if components.event_shape else z[..., 0]), component


def _split(probs: torch.Tensor) -> torch.Tensor:
    """The component of every row of ``probs (..., S)`` by :func:`split_rsample`'s rule,
    shape ``(...)``; computed in the weights' dtype, never a component of weight 0."""
    batch, count = probs.shape[:-1], probs.shape[-1]
    rows = batch.numel()
    weights = probs.detach().reshape(rows, count)
    cumulative = weights.cumsum(-1)
    midpoints = (torch.arange(rows, dtype=weights.dtype, device=weights.device) + 0.5) / rows
    chosen = torch.searchsorted(
        cumulative, midpoints.unsqueeze(-1) * cumulative[:, -1:], right=True
    )
    # rounding can only push a midpoint past the row's last component of positive weight
    last = count - 1 - (weights > 0).flip(-1).to(torch.uint8).argmax(-1, keepdim=True)
    return torch.minimum(chosen, last).reshape(batch)


def _over_present(
    subset_weights: torch.Tensor, present: torch.Tensor, raw: torch.Tensor
) -> torch.Tensor:
    """``subset_weights (..., S, M)`` with every subset that has no present expert
    (``present (..., S)`` false) given the row's weights ``raw (..., M)``: its pooling stays
    finite and never reads an absent expert, and :func:`_subset_mixture` then replaces it."""
    return torch.where(present.unsqueeze(-1), subset_weights, raw.unsqueeze(-2))


def _subset_mixture(
    family: Family,
    present: torch.Tensor,
    loc: torch.Tensor,
    spread: torch.Tensor,
    *,
    complete: bool,
) -> MixtureSameFamily:
    """The mixture of the pooled subsets ``(loc (..., S, d), spread)``, uniform over the
    subsets with a present expert (``present (..., S)``); unless ``complete``, a subset
    without one is the standard normal."""
    if not complete:
        loc, spread = standard_where_absent(present, loc, spread, full=family.full)
    return MixtureSameFamily(categorical(present.to(loc.dtype)), family.pack(loc, spread))


def _subset_weights(
    raw: torch.Tensor, members: torch.Tensor, names: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights ``(..., S, M)`` of the experts in every subset, from their weights
    ``raw (..., M)`` and the subsets' membership ``members (S, M)``, and whether each subset
    keeps a present expert, ``(..., S)``; ``ValueError`` naming ``names`` for a row where no
    subset does."""
    subset_weights = raw.unsqueeze(-2) * members
    present = (subset_weights > 0).any(-1)
    if validation_enabled() and not bool(present.any(-1).all()):
        raise ValueError(f"{names}: a row has no present expert in any subset")
    return subset_weights, present
