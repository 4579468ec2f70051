"""Weights of the experts: broadcasting, normalisation, and removal of absent experts.

Every kernel in :mod:`barycentric.functional` takes expert parameters stacked along the
axis just before the event axes (``loc (..., M, d)``) and weights broadcastable to
``(..., M)``. A zero weight removes an expert; its parameters are replaced by harmless
values (zero mean, unit scale) so that NaN or garbage in a missing modality's slot can
never leak into the result or its gradient.
"""

from __future__ import annotations

import numpy as np
import torch

from barycentric._validation import (
    as_tensor,
    check_decomposable,
    check_finite,
    check_nonnegative,
    check_positive,
    check_spd,
    promote_floating,
    validation_enabled,
)
from barycentric.linalg import power_of_two_scale

__all__ = [
    "check_gaussian",
    "normalise_weights",
    "prepare_experts",
    "prepare_weights",
    "standard_where_absent",
    "weighted_matrix_sum",
    "weighted_spectral_sum",
    "weighted_sum",
]


def prepare_weights(
    weights: torch.Tensor | None,
    shape: tuple[int, ...],
    like: torch.Tensor,
    *,
    normalise: bool = True,
) -> torch.Tensor:
    """Broadcast weights to the experts' ``shape`` and normalise them to sum to 1.

    Parameters
    ----------
    weights : Tensor or None
        Non-negative, broadcastable to ``shape``; ``None`` means uniform.
    shape : tuple of int
        ``(..., M)``: the experts' batch shape, experts last.
    like : Tensor
        Fixes the dtype and device.
    normalise : bool
        Divide by the sum over experts (``False`` keeps raw weights, as the un-normalised
        product of experts needs).

    Returns
    -------
    Tensor, shape (..., M)

    Raises
    ------
    ValueError
        If ``weights`` does not broadcast, is negative or not finite, or a row has no
        expert with positive weight.
    """
    shape = torch.Size(shape)
    if weights is None:
        weights = like.new_ones(())
    weights = as_tensor(weights, "weights", dtype=like.dtype, device=like.device)
    try:
        # numpy's rule is torch's, at a twentieth of the cost (what one small problem pays)
        broadcast = torch.Size(np.broadcast_shapes(weights.shape, shape))
    except ValueError as error:
        raise ValueError(
            f"`weights` of shape {tuple(weights.shape)} does not broadcast to the experts' "
            f"shape {tuple(shape)} (..., M) with M = {shape[-1]} experts"
        ) from error
    if broadcast != shape:
        raise ValueError(
            f"`weights` of shape {tuple(weights.shape)} would enlarge the experts' shape "
            f"{tuple(shape)}; weights must broadcast to (..., M) with M = {shape[-1]}"
        )
    check_nonnegative(weights, "weights")
    weights = weights.expand(shape)
    if validation_enabled() and bool((weights.amax(-1) == 0).any()):
        raise ValueError(
            "`weights`/`mask`: a row has no expert left (all its weights are zero or masked)"
        )
    return normalise_weights(weights) if normalise else weights


def normalise_weights(weights: torch.Tensor) -> torch.Tensor:
    """``weights (..., M)`` divided by their sum over the last axis.

    They are first divided by a power of two near their row's largest: exact, so the
    normalised weights keep every digit, and the sum of finite weights is then finite.
    Always, with branch-free tensor operations (a few on ``(..., M)``): no host
    synchronisation, and nothing for :func:`torch.compile` to break its graph on.
    """
    weights = weights / power_of_two_scale(weights.amax(-1, keepdim=True))
    return weights / weights.sum(-1, keepdim=True)


def weighted_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_m w_m x_m` over the experts' axis.

    Parameters
    ----------
    weights : Tensor, shape (..., M)
    values : Tensor, shape (..., M, d)
        Batch dimensions broadcast against ``weights``'.

    Returns
    -------
    Tensor, shape (..., d)

    Notes
    -----
    :func:`torch.einsum` contracts broadcast (size-one) dimensions without materialising
    them, so ``S`` subsets of weights ``(..., S, M)`` against ``values (..., 1, M, d)``
    cost one matrix product, not a ``(..., S, M, d)`` temporary.
    """
    return torch.einsum("...m,...md->...d", weights, values)


def weighted_matrix_sum(weights: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_m w_m A_m` for ``weights (..., M)`` and ``matrices (..., M, d, d)``."""
    return torch.einsum("...m,...mij->...ij", weights, matrices)


def weighted_spectral_sum(
    weights: torch.Tensor, values: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """:math:`\\sum_m w_m V_m \\operatorname{diag}(x_m) V_m^\\top` for ``weights (B, M)``,
    ``values (B, M, d)`` :math:`x_m` and ``rows (B, M, d, d)`` holding :math:`V_m^\\top`.

    With the rows stacked into ``(B, M d, d)``, one product sums over the experts as it
    multiplies; the result is symmetric up to round-off, shape ``(B, d, d)``.
    """
    batch, experts, dim = rows.shape[:3]
    stacked = rows.reshape(batch, experts * dim, dim)
    scaled = stacked * (weights[..., None] * values).reshape(batch, experts * dim, 1)
    return stacked.mT @ scaled


def _spread_name(full: bool) -> str:
    return "cov" if full else "scale"


def _check_shapes(loc: torch.Tensor, spread: torch.Tensor, full: bool) -> torch.Size:
    """The broadcast experts' shape ``(..., M)``; ``ValueError`` if the tensors disagree."""
    name = _spread_name(full)
    if loc.ndim < 2:
        raise ValueError(f"`loc` must have shape (..., M, d), got {tuple(loc.shape)}")
    d = loc.shape[-1]
    if d == 0:
        raise ValueError(f"`loc` must have an event size d of at least 1, got {tuple(loc.shape)}")
    event = (d, d) if full else (d,)
    if spread.ndim < len(event) + 1 or spread.shape[spread.ndim - len(event) :] != event:
        expected = "(..., M, d, d)" if full else "(..., M, d)"
        raise ValueError(
            f"`{name}` of shape {tuple(spread.shape)} does not match `loc` of shape "
            f"{tuple(loc.shape)}: expected {expected} with d = {d}"
        )
    try:
        batch = np.broadcast_shapes(loc.shape[:-1], spread.shape[: spread.ndim - len(event)])
    except ValueError as error:
        raise ValueError(
            f"`{name}` of shape {tuple(spread.shape)} does not broadcast against `loc` of "
            f"shape {tuple(loc.shape)} (experts along the axis before the event axes)"
        ) from error
    return torch.Size(batch)


def check_gaussian(loc: torch.Tensor, spread: torch.Tensor, full: bool) -> None:
    """Finite means; positive scales (diagonal) or SPD covariances (``full``)."""
    check_finite(loc, "loc")
    if full:
        check_spd(spread, "cov")
    else:
        check_positive(spread, "scale")


def prepare_experts(
    loc: torch.Tensor,
    spread: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    full: bool,
    normalise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check, broadcast and clean the experts of a kernel.

    Parameters
    ----------
    loc : Tensor, shape (..., M, d)
        ``d`` at least 1; or a numpy array or nested sequence of numbers (see
        :func:`~barycentric._validation.promote_floating`).
    spread : Tensor, shape (..., M, d) or (..., M, d, d)
        Standard deviations or covariances; batch dimensions broadcast against ``loc``'s.
        Like ``loc``, also an array or a nested sequence.
    weights : Tensor or None
        See :func:`prepare_weights`.
    full : bool
        Whether ``spread`` holds covariances rather than standard deviations.
    normalise : bool
        See :func:`prepare_weights`.

    Returns
    -------
    loc, spread, weights : Tensor
        Broadcast to a common ``(..., M)`` and to the common floating dtype of ``loc`` and
        ``spread`` (the default float dtype for integer data, see
        :func:`~barycentric._validation.promote_floating`); zero-weight experts hold zero
        mean and unit spread; present ones are checked (finite means, positive scales, SPD
        covariances).
    """
    loc, spread = promote_floating(("loc", loc), (_spread_name(full), spread))
    batch = _check_shapes(loc, spread, full)
    if full:
        check_decomposable(spread, "cov")
    loc = loc.expand(*batch, loc.shape[-1])
    spread = spread.expand(*batch, *spread.shape[-2 if full else -1 :])
    weights = prepare_weights(weights, batch, loc, normalise=normalise)
    loc, spread = standard_where_absent(weights > 0, loc, spread, full=full)
    check_gaussian(loc, spread, full)
    return loc, spread, weights


def standard_where_absent(
    present: torch.Tensor, loc: torch.Tensor, spread: torch.Tensor, *, full: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loc (..., d)`` and ``spread (..., d)`` or ``(..., d, d)`` with the Gaussians where
    ``present (...)`` is ``False`` replaced by the standard normal (zero mean, unit standard
    deviations or identity covariance): a finite placeholder whose values nothing reads."""
    loc = torch.where(present.unsqueeze(-1), loc, 0.0)
    unit = torch.eye(loc.shape[-1], dtype=spread.dtype, device=spread.device) if full else 1.0
    spread = torch.where(present[(..., *(None,) * (spread.ndim - present.ndim))], spread, unit)
    return loc, spread
