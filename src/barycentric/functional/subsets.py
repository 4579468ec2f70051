"""Subsets of experts as boolean masks, for mixtures of barycenters (MoE, MoPoE, MWB)."""

from __future__ import annotations

import itertools
import math
import numbers

import numpy as np
import torch

__all__ = ["MAX_SUBSETS", "subset_masks"]

SubsetSpec = str | int | torch.Tensor | np.ndarray | list[list[bool]]

MAX_SUBSETS = 2**16
"""Largest number of subsets :func:`subset_masks` enumerates from a name or a size.

``"all"`` is refused beyond 16 experts (:math:`2^{17} - 1` subsets); a bool tensor of
explicit subsets is not limited, since its caller has already built it.
"""


def _combinations(num_experts: int, sizes: range) -> torch.Tensor:
    rows = [
        [expert in chosen for expert in range(num_experts)]
        for size in sizes
        for chosen in itertools.combinations(range(num_experts), size)
    ]
    return torch.tensor(rows, dtype=torch.bool).reshape(-1, num_experts)


def subset_masks(
    subsets: SubsetSpec, num_experts: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean membership matrix of the subsets of ``num_experts`` experts.

    Parameters
    ----------
    subsets : {"all", "singletons"} or int or Tensor
        ``"all"``: every non-empty subset, :math:`2^M - 1` of them, ordered by size then
        lexicographically (singletons first, the full set last); ``"singletons"``: the
        :math:`M` one-expert subsets (MoE); an int ``k`` (Python or numpy): all
        :math:`\\binom{M}{k}` subsets of size ``k``; a bool tensor, numpy array or nested
        list ``(S, M)``: the subsets as given.
    num_experts : int
        ``M``.
    device : torch.device, optional
        Where to put the result.

    Returns
    -------
    Tensor, shape (S, M), bool
        Row ``s`` marks the experts of subset ``s``.

    Raises
    ------
    ValueError
        For an unknown name, ``k`` outside ``1..M``, a tensor of the wrong shape or dtype,
        or an empty subset; and, before any enumeration, for a name or size that asks for
        more than :data:`MAX_SUBSETS` subsets (``"all"`` for more than 16 experts):
        enumerating :math:`2^M - 1` subsets exhausts memory long before it ends (40
        experts: over :math:`10^{12}` subsets). Pass the subsets needed as a bool tensor
        instead.

    Examples
    --------
    >>> from barycentric.functional import subset_masks
    >>> subset_masks("all", 2).int()
    tensor([[1, 0],
            [0, 1],
            [1, 1]], dtype=torch.int32)
    """
    if isinstance(subsets, list | tuple | np.ndarray):
        try:
            array = np.asarray(subsets)
        except ValueError as error:
            raise ValueError(
                f"`subsets` as a nested list must be rectangular, got {subsets!r}"
            ) from error
        if array.dtype != np.bool_:
            raise ValueError(
                f"`subsets` as an array must be bool of shape (S, {num_experts}), got {array.dtype}"
            )
        subsets = torch.tensor(array)
    if isinstance(subsets, torch.Tensor):
        if subsets.dtype != torch.bool or subsets.ndim != 2 or subsets.shape[1] != num_experts:
            raise ValueError(
                f"`subsets` as a tensor must be bool of shape (S, {num_experts}), got "
                f"{subsets.dtype} of shape {tuple(subsets.shape)}"
            )
        if subsets.shape[0] == 0 or not bool(subsets.any(-1).all()):
            raise ValueError("`subsets` must hold at least one subset and no empty subset")
        return subsets.to(device) if device is not None else subsets
    if isinstance(subsets, bool) or not isinstance(subsets, str | numbers.Integral):
        raise ValueError(
            f"`subsets` must be 'all', 'singletons', an int or a bool tensor or array (S, M), "
            f"got {subsets!r}"
        )
    if subsets == "all":
        sizes = range(1, num_experts + 1)
    elif subsets == "singletons":
        sizes = range(1, 2)
    elif isinstance(subsets, numbers.Integral) and 1 <= subsets <= num_experts:
        sizes = range(subsets, subsets + 1)
    else:
        raise ValueError(
            f"`subsets` must be 'all', 'singletons', an int in 1..{num_experts} or a bool "
            f"tensor (S, {num_experts}), got {subsets!r}"
        )
    count = 2**num_experts - 1 if subsets == "all" else math.comb(num_experts, sizes.start)
    if count > MAX_SUBSETS:
        raise ValueError(
            f"`subsets`={subsets!r} asks for {count} subsets of {num_experts} experts, more "
            f"than MAX_SUBSETS = {MAX_SUBSETS}; pass the subsets you need as a bool tensor "
            f"of shape (S, {num_experts}), one row per subset"
        )
    return _combinations(num_experts, sizes).to(device)
