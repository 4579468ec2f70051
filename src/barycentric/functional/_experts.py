"""Weights of the experts: broadcasting, normalisation, and removal of absent experts.

Every kernel in :mod:`barycentric.functional` takes expert parameters stacked along the
axis just before the event axes (``loc (..., M, d)``) and weights broadcastable to
``(..., M)``. A zero weight removes an expert; its parameters are replaced by harmless
values (zero mean, unit scale) so that NaN or garbage in a missing modality's slot can
never leak into the result or its gradient.
"""

from __future__ import annotations

import torch

from barycentric._validation import (
    check_finite,
    check_nonnegative,
    check_positive,
    check_spd,
    validation_enabled,
)

__all__ = ["mask_absent", "prepare_weights"]


def prepare_weights(
    weights: torch.Tensor | None, loc: torch.Tensor, *, normalise: bool = True
) -> torch.Tensor:
    """Broadcast weights to ``loc.shape[:-1]`` and normalise them to sum to 1.

    Parameters
    ----------
    weights : Tensor or None
        Non-negative, broadcastable to ``(..., M)``; ``None`` means uniform.
    loc : Tensor, shape (..., M, d)
        Expert means; fixes the batch shape, dtype and device.
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
    shape = loc.shape[:-1]
    if weights is None:
        weights = loc.new_ones(())
    weights = torch.as_tensor(weights, dtype=loc.dtype, device=loc.device)
    try:
        broadcast = torch.broadcast_shapes(weights.shape, shape)
    except RuntimeError as error:
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
    total = weights.sum(-1, keepdim=True)
    if validation_enabled() and bool((total == 0).any()):
        raise ValueError(
            "`weights`/`mask`: a row has no expert left (all its weights are zero or masked)"
        )
    return weights / total if normalise else weights


def mask_absent(
    weights: torch.Tensor, loc: torch.Tensor, spread: torch.Tensor, unit: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the parameters of zero-weight experts by ``0`` and ``unit``.

    Parameters
    ----------
    weights : Tensor, shape (..., M)
    loc : Tensor, shape (..., M, d)
    spread : Tensor, shape (..., M, d) or (..., M, d, d)
        Scales or covariances.
    unit : Tensor
        The harmless spread (ones, or the identity), broadcastable to ``spread``.

    Returns
    -------
    loc, spread : Tensor
        Same shapes; absent experts hold zero mean and ``unit`` spread. Present experts
        are checked: finite means, positive scales, symmetric positive definite
        covariances.
    """
    present = weights > 0
    loc = torch.where(present.unsqueeze(-1), loc, 0.0)
    spread_present = present.reshape(present.shape + (1,) * (spread.ndim - present.ndim))
    spread = torch.where(spread_present, spread, unit)
    check_finite(loc, "loc")
    if spread.ndim == loc.ndim:
        check_positive(spread, "scale")
    else:
        check_spd(spread, "covariance_matrix")
    return loc, spread
