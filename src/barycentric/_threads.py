"""One intra-op thread for the iterative solvers' many small batched operations.

An iterative solver issues hundreds of small batched operations per call (matrix products
of ``d × d`` blocks, element-wise updates, small ``eigh`` calls), and every one of them is a
parallel region of torch's intra-op thread pool. When another process shares the cores, the
pool's barrier at the end of each region waits until the operating system runs the
pre-empted thread again, so each region can cost a scheduler time slice: measured on two
cores with one competing process, the full-covariance barycenter of 256 × (M = 5, d = 16)
took 3.8 times longer on torch's default two threads than on one (``benchmarks/busy_cores.py``),
while on idle cores two threads were only 1.2 times faster than one. The solvers therefore
run on one intra-op thread when their work is below :data:`SMALL_WORK` (the whole call,
validation included, and the implicit backward), and restore torch's setting when they
return (or raise). Larger problems keep the user's threads. The setting is process-wide:
while such a call runs, torch operations in the process's other Python threads also run on
one intra-op thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["SMALL_WORK", "solver_threads"]

#: Flops of one batched product (``batch · M · d³``) below which a solver runs on one thread.
SMALL_WORK = 2**28


@contextlib.contextmanager
def solver_threads(device: torch.device, work: float) -> Iterator[None]:
    """Run the block on one intra-op thread if ``device`` is the CPU and ``work`` is small.

    Parameters
    ----------
    device : torch.device
        Where the solve runs.
    work : float
        ``batch · M · d³``, the flops of one batched matrix product of the solve.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or work > SMALL_WORK:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
