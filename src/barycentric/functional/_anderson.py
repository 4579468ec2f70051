"""Anderson acceleration of batched matrix fixed points (type II, Walker & Ni 2011)."""

from __future__ import annotations

import itertools

import torch

__all__ = ["MEMORY", "Anderson"]

#: Differences kept: the last ``MEMORY + 1`` iterates.
MEMORY = 4


class Anderson:
    """Anderson acceleration of a batched matrix fixed point :math:`X = G(X)`.

    Keeps the last ``memory + 1`` iterates :math:`X_k` and images :math:`G(X_k)` and
    proposes :math:`G(X_k) - \\Delta G\\, \\gamma` with
    :math:`\\gamma = \\arg\\min_\\gamma \\|r_k - \\Delta r\\, \\gamma\\|` (:math:`r = G(X) - X`),
    problem by problem, so a problem never mixes with another. A proposal that is not finite
    is replaced by the plain step :math:`G(X_k)`.

    Parameters
    ----------
    memory : int
        Number of differences kept.
    """

    def __init__(self, memory: int = MEMORY) -> None:
        self.memory = memory
        self.points: list[torch.Tensor] = []
        self.images: list[torch.Tensor] = []

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the histories of the problems ``rows`` (a bool mask or index)."""
        self.points = [p[rows] for p in self.points]
        self.images = [f[rows] for f in self.images]

    def __call__(
        self, point: torch.Tensor, image: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The next iterate from ``point (B, ...)`` and its ``image`` (same shape).

        ``keep`` (a bool mask or index over the problems of the previous call) drops the
        histories of problems that have left the iteration.
        """
        if keep is not None:
            self.keep(keep)
        self.points = [*self.points, point.flatten(1)][-(self.memory + 1) :]
        self.images = [*self.images, image.flatten(1)][-(self.memory + 1) :]
        if len(self.points) < 2:
            return image
        residuals = [f - x for f, x in zip(self.images, self.points, strict=True)]
        d_residual = torch.stack([b - a for a, b in itertools.pairwise(residuals)], -1)
        d_image = torch.stack([b - a for a, b in itertools.pairwise(self.images)], -1)
        gram = d_residual.mT @ d_residual
        # a tiny ridge keeps the normal equations solvable once differences vanish
        ridge = (
            1e-10 * torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1) + torch.finfo(gram.dtype).tiny
        )
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        gamma, _ = torch.linalg.solve_ex(
            gram + ridge[..., None, None] * eye, d_residual.mT @ residuals[-1].unsqueeze(-1)
        )
        mixed = (self.images[-1].unsqueeze(-1) - d_image @ gamma).reshape(image.shape)
        finite = torch.isfinite(mixed.flatten(1)).all(-1)
        return torch.where(finite.reshape(-1, *(1,) * (image.ndim - 1)), mixed, image)
