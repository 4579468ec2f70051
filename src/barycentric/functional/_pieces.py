"""Cache-sized pieces of a batch of problems on the CPU.

The batched solvers make tens of passes over stacks the size of the experts' covariances
per step; a stack that fits in a core's L2 cache is passed over at cache speed rather than
memory speed. Problems never interact, so a batch solved piece by piece gives the same
answers. On an accelerator, where each operation's launch is the cost, the whole batch is
one piece.
"""

from __future__ import annotations

import math

import torch

__all__ = ["piece_size"]


def piece_size(covs: torch.Tensor, budget: int, itemsize: int) -> int:
    """Problems per piece when ``covs (B, ...)``, computed in a dtype of ``itemsize`` bytes,
    is split into the fewest even pieces of at most about ``budget`` bytes: ``B`` (one
    piece) off the CPU, and never less than one."""
    problems = covs.shape[0]
    if covs.device.type != "cpu" or problems == 0:
        return max(problems, 1)
    pieces = math.ceil(covs.numel() * itemsize / budget)
    return math.ceil(problems / pieces)
