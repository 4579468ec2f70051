"""Random Gaussian parameters for tests: seeded generators and hypothesis strategies.

Every generator is deterministic given a ``torch.Generator``; the strategies draw a seed
(and, for covariances, a condition number) and call them, so hypothesis can replay and
shrink examples. All tensors are float64 unless a dtype is given.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

__all__ = [
    "diag_gaussian_params",
    "full_gaussian_params",
    "random_diag_gaussian",
    "random_full_gaussian",
    "random_spd",
    "random_weights",
    "spd_matrices",
    "weights",
]

DTYPE = torch.float64
_SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def _shape(batch: int | tuple[int, ...]) -> tuple[int, ...]:
    return (batch,) if isinstance(batch, int) else tuple(batch)


def random_spd(
    generator: torch.Generator,
    d: int,
    batch: int | tuple[int, ...] = (),
    condition: float = 1e2,
    dtype: torch.dtype = DTYPE,
) -> torch.Tensor:
    """SPD matrices ``Q diag(λ) Qᵀ`` ``(*batch, d, d)`` with condition number ``condition``.

    ``Q`` is a random orthogonal matrix (QR of a Gaussian matrix, signs fixed so it is
    Haar-distributed); the eigenvalues are log-uniform in ``[condition^{-1/2},
    condition^{1/2}]`` with both ends attained when ``d > 1``.
    """
    shape = _shape(batch)
    gaussian = torch.randn(*shape, d, d, generator=generator, dtype=DTYPE)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    u = torch.rand(*shape, d, generator=generator, dtype=DTYPE)
    if d > 1:
        u[..., 0], u[..., 1] = 0.0, 1.0
    eigenvalues = condition ** (u - 0.5)
    spd = (q * eigenvalues.unsqueeze(-2)) @ q.mT
    return (0.5 * (spd + spd.mT)).to(dtype)


def random_diag_gaussian(
    generator: torch.Generator,
    d: int,
    batch: int | tuple[int, ...] = (),
    dtype: torch.dtype = DTYPE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` of shape ``(*batch, d)``: standard normal means, scales in [0.1, 10]."""
    shape = (*_shape(batch), d)
    loc = torch.randn(*shape, generator=generator, dtype=DTYPE)
    scale = 10.0 ** (2 * torch.rand(*shape, generator=generator, dtype=DTYPE) - 1)
    return loc.to(dtype), scale.to(dtype)


def random_full_gaussian(
    generator: torch.Generator,
    d: int,
    batch: int | tuple[int, ...] = (),
    condition: float = 1e2,
    dtype: torch.dtype = DTYPE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, cov)`` of shapes ``(*batch, d)`` and ``(*batch, d, d)``."""
    loc = torch.randn(*_shape(batch), d, generator=generator, dtype=DTYPE)
    return loc.to(dtype), random_spd(generator, d, batch, condition, dtype)


def random_weights(
    generator: torch.Generator,
    m: int,
    batch: int | tuple[int, ...] = (),
    zeros: bool = False,
    dtype: torch.dtype = DTYPE,
) -> torch.Tensor:
    """Non-negative weights ``(*batch, m)``, unnormalised; with ``zeros``, about a third are
    zero, but every row keeps at least one positive weight."""
    shape = (*_shape(batch), m)
    w = torch.rand(*shape, generator=generator, dtype=DTYPE) + 0.05
    if zeros:
        drop = torch.rand(*shape, generator=generator) < 1 / 3
        drop[..., int(torch.randint(m, (), generator=generator))] = False
        w = torch.where(drop, 0.0, w)
    return w.to(dtype)


def _generated(build, *args, **kwargs):
    return _SEEDS.map(lambda seed: build(torch.Generator().manual_seed(seed), *args, **kwargs))


def spd_matrices(
    d: int, batch: int | tuple[int, ...] = (), max_condition: float = 1e6
) -> st.SearchStrategy[torch.Tensor]:
    """SPD matrices ``(*batch, d, d)`` whose condition number is log-uniform in
    ``[1, max_condition]``."""
    log_max = math.log10(max_condition)
    return st.tuples(_SEEDS, st.floats(0.0, log_max)).map(
        lambda drawn: random_spd(
            torch.Generator().manual_seed(drawn[0]), d, batch, 10.0 ** drawn[1]
        )
    )


def diag_gaussian_params(
    d: int, batch: int | tuple[int, ...] = ()
) -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor]]:
    """``(loc, scale)`` of diagonal Gaussians, shape ``(*batch, d)``."""
    return _generated(random_diag_gaussian, d, batch)


def full_gaussian_params(
    d: int, batch: int | tuple[int, ...] = (), max_condition: float = 1e6
) -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor]]:
    """``(loc, cov)`` of full-covariance Gaussians, shapes ``(*batch, d)``, ``(*batch, d, d)``."""
    locs = _generated(
        lambda generator: torch.randn(*_shape(batch), d, generator=generator, dtype=DTYPE)
    )
    return st.tuples(locs, spd_matrices(d, batch, max_condition))


def weights(
    m: int, batch: int | tuple[int, ...] = (), zeros: bool = True
) -> st.SearchStrategy[torch.Tensor]:
    """Non-negative weights ``(*batch, m)`` (zeros included when ``zeros``), every row with
    a positive entry."""
    return _generated(random_weights, m, batch, zeros)
