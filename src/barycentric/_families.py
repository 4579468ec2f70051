"""Gaussian families as :mod:`torch.distributions` sees them, and how to take them apart.

A family knows how to turn a distribution into parameter tensors (``loc`` and a
``spread``: standard deviations or covariances), how to build one back, and which tensor
kernels compute its barycenters. Lookup is by the distribution's type, as in
:func:`torch.distributions.kl.register_kl`, not by an ``isinstance`` ladder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
)

from barycentric._validation import (
    check_finite,
    check_int,
    check_not_complex,
    check_positive,
    check_spd,
)
from barycentric.functional import gaussian_kl, gaussian_wasserstein

__all__ = [
    "DIAGONAL",
    "FULL",
    "UNIVARIATE",
    "Experts",
    "Family",
    "categorical",
    "family_of",
    "gather_experts",
]

Kernel = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Family:
    """A Gaussian family: its parameters, its constructor and its barycenter kernels."""

    name: str
    spread_dims: int
    unpack: Callable[[Distribution], tuple[torch.Tensor, torch.Tensor]]
    pack: Callable[[torch.Tensor, torch.Tensor], Distribution]
    wasserstein: Kernel
    reverse_kl: Kernel
    forward_kl: Kernel
    precision_pool: Kernel
    distance: Callable[..., torch.Tensor]
    # Unchecked kernels, by divergence, that take subset weights (..., S, M) against
    # experts (..., 1, M, ...) without materialising (..., S, M, ...): the linear ones.
    subset_kernels: dict[str, Kernel] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        """Whether the spread is a covariance matrix (else standard deviations)."""
        return self.spread_dims == 2

    def to_full(self, spread: torch.Tensor) -> torch.Tensor:
        """The covariance matrices of parameters of this family."""
        return spread if self.full else torch.diag_embed(spread.square())

    def with_prior(
        self,
        prior: Distribution,
        loc: torch.Tensor,
        spread: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Experts ``loc (..., M, d)``, ``spread`` and ``weights (..., [S,] M)`` with
        ``prior`` appended as expert ``M + 1``, of weight 1 in every row (and subset).

        ``prior`` must be of this family and the experts' event size, with a finite mean,
        a positive scale or SPD covariance, and a batch shape that broadcasts to the
        experts' ``(...)``; otherwise ``ValueError`` naming ``prior``.
        """
        if family_of(prior, "prior") is not self:
            raise ValueError(f"`prior` must be a {self.name} like the experts")
        prior_loc, prior_spread = self.unpack(prior)
        if prior_loc.shape[-1:] != loc.shape[-1:]:
            raise ValueError(
                f"`prior` has event size {prior_loc.shape[-1]}, the experts {loc.shape[-1]}"
            )
        check_finite(prior_loc, "prior")
        (check_spd if self.full else check_positive)(prior_spread, "prior")
        batch = loc.shape[:-2]
        try:
            prior_loc = prior_loc.expand(*batch, loc.shape[-1])
            prior_spread = prior_spread.expand(*batch, *spread.shape[-self.spread_dims :])
        except RuntimeError as error:
            raise ValueError(
                f"`prior` of batch shape {tuple(prior.batch_shape)} does not broadcast to "
                f"the product's batch shape {tuple(batch)} and event size {loc.shape[-1]}"
            ) from error
        axis = -1 - self.spread_dims
        return (
            torch.cat([loc, prior_loc.unsqueeze(-2)], -2),
            torch.cat([spread, prior_spread.unsqueeze(axis)], axis),
            torch.cat([weights, weights.new_ones(weights.shape[:-1]).unsqueeze(-1)], -1),
        )


def _validate_args(batch: torch.Tensor) -> bool | None:
    """torch's default validation, off for an empty batch: there is nothing to check, and
    torch's constraints on vectors and matrices fail to reshape zero elements (torch 2.13)."""
    return False if batch.numel() == 0 else None


def categorical(weights: torch.Tensor) -> Categorical:
    """The categorical distribution of non-negative ``weights (..., K)``, normalised.

    Built from logits with :math:`-\\infty` at zero weights: ``Categorical(probs=...)``
    clamps zero probabilities to a tiny epsilon in its logits, which lets a removed
    component dominate a mixture's ``log_prob`` far from the others. The ``where`` keeps
    the logarithm away from zero so that gradients stay finite.
    """
    present = weights > 0
    logits = torch.where(present, torch.where(present, weights, 1.0).log(), -torch.inf)
    return Categorical(logits=logits, validate_args=_validate_args(logits))


def _wasserstein_diagonal(
    loc: torch.Tensor,
    scale: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    max_iter: int = 100,
    tol: float | None = None,
    backward: str = "implicit",
    return_info: bool = False,
) -> tuple[torch.Tensor, ...]:
    """The closed form behind the fixed-point solver's interface.

    The solver's options mean nothing for commuting covariances; they are checked and
    accepted so that every family's ``wasserstein`` kernel is called (and refuses a bad
    option) the same way; the report says that no iteration ran, and flags (and warns
    about) a row whose scales are not finite, which validation lets through when off.
    """
    _, tol = gaussian_wasserstein.check_solver_options(max_iter, tol, backward)
    loc, scale = gaussian_wasserstein.wasserstein_barycenter_diag(loc, scale, weights)
    info = gaussian_wasserstein.FixedPointInfo.exact(scale, 1)
    gaussian_wasserstein.warn_unconverged(info, 0.0 if tol is None else tol)
    return (loc, scale, info) if return_info else (loc, scale)


def _unpack_diagonal(dist: Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    base = dist.base_dist
    return base.loc, base.scale


def _pack_diagonal(loc: torch.Tensor, scale: torch.Tensor) -> Distribution:
    return Independent(Normal(loc, scale), 1)


def _unpack_full(dist: Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    return dist.loc, dist.covariance_matrix


def _pack_full(loc: torch.Tensor, cov: torch.Tensor) -> Distribution:
    return MultivariateNormal(loc, covariance_matrix=cov, validate_args=_validate_args(loc))


DIAGONAL = Family(
    name="diagonal Gaussian (Independent(Normal, 1))",
    spread_dims=1,
    unpack=_unpack_diagonal,
    pack=_pack_diagonal,
    wasserstein=_wasserstein_diagonal,
    reverse_kl=gaussian_kl.reverse_kl_barycenter_diag,
    forward_kl=gaussian_kl.forward_kl_moments_diag,
    precision_pool=gaussian_kl.precision_pool_diag,
    distance=gaussian_wasserstein.wasserstein_distance_diag,
    subset_kernels={
        "wasserstein": gaussian_wasserstein.average_diag,
        "reverse_kl": gaussian_kl.pool_precisions_diag,
    },
)


def _unpack_univariate(dist: Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    return dist.loc.unsqueeze(-1), dist.scale.unsqueeze(-1)


def _pack_univariate(loc: torch.Tensor, scale: torch.Tensor) -> Distribution:
    return Normal(loc.squeeze(-1), scale.squeeze(-1))


#: ``Normal``: the diagonal family's kernels on an event axis of size 1, added on unpacking
#: and removed on packing, so that univariate experts give a univariate ``Normal``.
UNIVARIATE = replace(
    DIAGONAL,
    name="univariate Gaussian (Normal)",
    unpack=_unpack_univariate,
    pack=_pack_univariate,
)

FULL = Family(
    name="MultivariateNormal",
    spread_dims=2,
    unpack=_unpack_full,
    pack=_pack_full,
    wasserstein=gaussian_wasserstein.wasserstein_barycenter_full,
    reverse_kl=gaussian_kl.reverse_kl_barycenter_full,
    forward_kl=gaussian_kl.forward_kl_moments_full,
    precision_pool=gaussian_kl.precision_pool_full,
    distance=gaussian_wasserstein.wasserstein_distance_full,
    subset_kernels={"reverse_kl": gaussian_kl.pool_precisions_full},
)


def _independent_family(dist: Independent) -> Family | None:
    if type(dist.base_dist) is Normal and dist.reinterpreted_batch_ndims == 1:
        return DIAGONAL
    return None


_REGISTRY: dict[type, Callable[[Distribution], Family | None]] = {
    MultivariateNormal: lambda dist: FULL,
    Independent: _independent_family,
    Normal: lambda dist: UNIVARIATE,
}


def family_of(dist: object, name: str = "experts") -> Family:
    """The :class:`Family` of a distribution; ``ValueError`` naming ``name`` otherwise.

    Gaussians of event size 0 are refused too: they have no dimension to average over.
    """
    lookup = _REGISTRY.get(type(dist))
    family = lookup(dist) if lookup is not None else None
    if family is None:
        raise ValueError(
            f"`{name}` must be Independent(Normal(loc, scale), 1) (diagonal), "
            f"MultivariateNormal (full covariance) or Normal (univariate), got {dist!r}"
        )
    if 0 in dist.event_shape:
        raise ValueError(f"`{name}` must have an event size of at least 1, got event shape (0,)")
    return family


@dataclass(frozen=True)
class Experts:
    """Experts as tensors: ``loc (..., M, d)`` and ``spread (..., M, d[, d])``."""

    family: Family
    loc: torch.Tensor
    spread: torch.Tensor
    axis: int
    batch_shape: torch.Size

    @property
    def num_experts(self) -> int:
        return self.loc.shape[-2]

    def align(
        self, values: object, name: str, dtype: torch.dtype | None = None
    ) -> torch.Tensor | None:
        """Weights or a mask, given along the experts' batch shape, as ``(..., M)``.

        A 1-D value of length ``M`` indexes the experts whatever ``dim`` is; any other
        value must broadcast to the experts' batch shape, with experts along ``dim``.
        """
        if values is None:
            return None
        check_not_complex(values, name)
        if not isinstance(values, torch.Tensor):
            # a Python list of floats must not pass through torch's default float32
            values = torch.as_tensor(values, dtype=dtype)
        values = values.to(self.loc.device)
        ndim = len(self.batch_shape)
        if values.ndim == 1 and ndim > 1:
            if values.shape[0] not in (1, self.num_experts):
                raise ValueError(
                    f"`{name}` has {values.shape[0]} entries for {self.num_experts} experts"
                )
            values = values.reshape([-1 if i == self.axis else 1 for i in range(ndim)])
        try:
            shape = torch.broadcast_shapes(values.shape, self.batch_shape)
        except RuntimeError as error:
            raise ValueError(
                f"`{name}` of shape {tuple(values.shape)} does not broadcast to the experts' "
                f"batch shape {tuple(self.batch_shape)} (experts along dim {self.axis})"
            ) from error
        if shape != self.batch_shape:
            raise ValueError(
                f"`{name}` of shape {tuple(values.shape)} would enlarge the experts' batch "
                f"shape {tuple(self.batch_shape)}"
            )
        return values.expand(self.batch_shape).movedim(self.axis, -1)

    def weights(self, weights: object, mask: object) -> torch.Tensor:
        """Unnormalised weights ``(..., M)`` with masked experts set to zero."""
        w = self.align(weights, "weights", self.loc.dtype)
        w = self.loc.new_ones(self.loc.shape[:-1]) if w is None else w.to(self.loc.dtype)
        m = self.align(mask, "mask")
        if m is not None:
            if m.dtype != torch.bool:
                raise ValueError(f"`mask` must be a bool tensor, got {m.dtype}")
            w = torch.where(m, w, torch.zeros((), dtype=w.dtype, device=w.device))
        return w


def _stack(experts: Sequence[Distribution]) -> tuple[Family, torch.Tensor, torch.Tensor]:
    if len(experts) == 0:
        raise ValueError("`experts` is an empty sequence")
    families = [family_of(expert, f"experts[{i}]") for i, expert in enumerate(experts)]
    if any(f is not families[0] for f in families):
        raise ValueError(
            "`experts` mixes families: "
            + ", ".join(sorted({f.name for f in families}))
            + "; convert them to one family (e.g. all MultivariateNormal)"
        )
    family = families[0]
    params = [family.unpack(expert) for expert in experts]
    dims = {loc.shape[-1] for loc, _ in params}
    if len(dims) > 1:
        raise ValueError(f"`experts` have different event sizes {sorted(dims)}")
    try:
        locs = torch.broadcast_tensors(*(loc for loc, _ in params))
    except RuntimeError as error:
        shapes = ", ".join(str(tuple(expert.batch_shape)) for expert in experts)
        raise ValueError(f"`experts` have batch shapes {shapes} that do not broadcast") from error
    tail = (params[0][0].shape[-1],) * family.spread_dims
    batch = locs[0].shape[:-1]
    spreads = [spread.expand(*batch, *tail) for _, spread in params]
    return family, torch.stack(locs, -2), torch.stack(spreads, -1 - family.spread_dims)


def gather_experts(experts: Distribution | Sequence[Distribution], dim: int = -1) -> Experts:
    """Turn ``experts`` into stacked parameter tensors with the experts' axis last.

    Parameters
    ----------
    experts : Distribution or sequence of Distribution
        One distribution whose batch dimension ``dim`` indexes the experts, or a sequence of
        distributions of one family (broadcast, then stacked along a new last batch
        dimension, which ``dim`` then must name: ``-1`` or the new axis' index).
    dim : int
        The experts' batch dimension.
    """
    dim = check_int(dim, "dim")
    if isinstance(experts, Distribution):
        family = family_of(experts)
        batch = experts.batch_shape
        if len(batch) == 0:
            raise ValueError(
                "`experts` has batch shape (); its batch dimension `dim` must index the experts"
            )
        if not -len(batch) <= dim < len(batch):
            raise ValueError(f"`dim`={dim} is out of range for batch shape {tuple(batch)}")
        axis = dim % len(batch)
        loc, spread = family.unpack(experts)
        d = loc.shape[-1]
        loc = loc.expand(*batch, d).movedim(axis, -2)
        spread = spread.expand(*batch, *(d,) * family.spread_dims)
        spread = spread.movedim(axis, -1 - family.spread_dims)
        return Experts(family, loc, spread, axis, batch)
    if isinstance(experts, Sequence) and not isinstance(experts, str):
        family, loc, spread = _stack(experts)
        batch = loc.shape[:-1]
        if not -len(batch) <= dim < len(batch) or dim % len(batch) != len(batch) - 1:
            raise ValueError(
                f"`dim`={dim}: a sequence of experts is stacked along a new last batch "
                "dimension, so `dim` must be -1"
            )
        return Experts(family, loc, spread, len(batch) - 1, batch)
    raise ValueError(
        f"`experts` must be a Gaussian distribution or a sequence of them, got {type(experts)}"
    )
