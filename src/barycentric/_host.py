"""Which work on a CUDA device runs faster on the host CPU, and moving it there and back.

Two regimes, measured on an H100 against its host (``benchmarks/results/cuda/host_policies.md``):

* **Decompositions of mid-sized matrices.** cuSOLVER decomposes a batch of matrices with
  ``d > 32`` one matrix at a time, each call a few kernel launches and a host
  synchronisation, so a batch of ``eigh`` or ``svd`` of ``32 < d ≤``
  :data:`HOST_DECOMPOSITION_MAX` is decomposed on the host (one batched LAPACK call) and
  its factors copied back; ``d ≤ 32`` (batched Jacobi kernels) and larger matrices stay
  on the device.
* **Small barycenter problems.** An iterative solve issues hundreds of small operations,
  each a kernel launch of several microseconds on a GPU and well under one on the host, so a
  full-covariance barycenter whose experts hold at most :data:`HOST_SOLVE_ELEMENTS`
  numbers in all (``batch · M · d²``) is solved on the host and its results copied back.

Both are plain copies (``Tensor.to``): results land on the caller's device with the
caller's dtype, and derivatives of every order flow through the copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "HOST_DECOMPOSITION_MAX",
    "HOST_SOLVE_ELEMENTS",
    "decompose_on_host",
    "run_on_host",
    "solve_on_host",
]

#: Device types whose work may move to the host.
_ACCELERATORS = frozenset({"cuda"})
#: Largest ``d`` of the ``d × d`` matrices above 32 whose batched decompositions on a CUDA
#: device run on the host.
HOST_DECOMPOSITION_MAX = 128
#: Largest ``batch · M · d²`` of a full-covariance barycenter on a CUDA device solved on the
#: host.
HOST_SOLVE_ELEMENTS = 2**15


def decompose_on_host(matrices: torch.Tensor) -> bool:
    """Whether a batched decomposition of ``matrices (..., d, d)`` runs on the host."""
    return (
        matrices.device.type in _ACCELERATORS and 32 < matrices.shape[-1] <= HOST_DECOMPOSITION_MAX
    )


def solve_on_host(loc: object, cov: object, weights: object) -> bool:
    """Whether a full-covariance barycenter of these inputs is solved on the host.

    Only well-formed inputs on one CUDA device qualify (any others go on to the validation
    of the device's own path, which names what is wrong with them).

    Parameters
    ----------
    loc, cov, weights
        The barycenter's arguments: ``(..., M, d)``, ``(..., M, d, d)`` and ``None`` or
        anything ``torch.as_tensor`` takes.
    """
    if not (isinstance(loc, torch.Tensor) and isinstance(cov, torch.Tensor)):
        return False
    if cov.device.type not in _ACCELERATORS or loc.device != cov.device or cov.ndim < 3:
        return False
    if isinstance(weights, torch.Tensor) and weights.device != cov.device:
        return False
    return math.prod(cov.shape[:-1]) * cov.shape[-1] <= HOST_SOLVE_ELEMENTS


def run_on_host(function: Callable[..., Any], device: torch.device, *args: Any, **kwargs: Any):
    """``function(*args, **kwargs)`` with its tensor arguments copied to the host, and the
    tensors of its result (in tuples and named tuples, to any depth) copied to ``device``."""
    return _moved(function(*_moved(args, "cpu"), **_moved(kwargs, "cpu")), device)


def _moved(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _moved(item, device) for key, item in value.items()}
    if isinstance(value, tuple):
        items = [_moved(item, device) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value
