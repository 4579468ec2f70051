"""Anderson acceleration of batched matrix fixed points (type II, Walker & Ni 2011)."""

from __future__ import annotations

import torch

from barycentric._validation import all_finite

__all__ = ["MEMORY", "Anderson"]

#: Differences kept: the last ``MEMORY + 1`` iterates.
MEMORY = 4


class Anderson:
    """Anderson acceleration of a batched matrix fixed point :math:`X = G(X)`.

    Keeps the differences of the last ``memory + 1`` iterates :math:`X_k` and images
    :math:`G(X_k)` and proposes :math:`G(X_k) - \\Delta G\\, \\gamma` with
    :math:`\\gamma = \\arg\\min_\\gamma \\|r_k - \\Delta r\\, \\gamma\\|` (:math:`r = G(X) - X`),
    problem by problem, so a problem never mixes with another. A proposal that is not finite
    is replaced by the plain step :math:`G(X_k)`. The differences live in a ring buffer
    ``(B, memory, n)``, one row written per step (the least-squares problem does not depend
    on the order of its columns).

    Parameters
    ----------
    memory : int
        Number of differences kept.
    """

    def __init__(self, memory: int = MEMORY) -> None:
        self.memory = memory
        self.steps = 0
        self.image: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None
        self.d_image: torch.Tensor | None = None
        self.d_residual: torch.Tensor | None = None

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the histories of the problems ``rows`` (a bool mask or index)."""
        if self.image is not None:
            self.image, self.residual = self.image[rows], self.residual[rows]
        if self.d_image is not None:
            self.d_image, self.d_residual = self.d_image[rows], self.d_residual[rows]

    def __call__(
        self, point: torch.Tensor, image: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The next iterate from ``point (B, ...)`` and its ``image`` (same shape).

        ``keep`` (a bool mask or index over the problems of the previous call) drops the
        histories of problems that have left the iteration.
        """
        if keep is not None:
            self.keep(keep)
        flat = image.flatten(1)
        residual = flat - point.flatten(1)
        previous_image, previous_residual = self.image, self.residual
        self.image, self.residual = flat, residual
        if previous_image is None:
            return image
        if self.d_image is None:
            self.d_image = flat.new_empty(flat.shape[0], self.memory, flat.shape[1])
            self.d_residual = torch.empty_like(self.d_image)
        row = self.steps % self.memory
        self.steps += 1
        torch.sub(flat, previous_image, out=self.d_image[:, row])
        torch.sub(residual, previous_residual, out=self.d_residual[:, row])
        filled = min(self.steps, self.memory)
        d_image, d_residual = self.d_image[:, :filled], self.d_residual[:, :filled]
        gram = d_residual @ d_residual.mT
        # a tiny ridge keeps the normal equations solvable once differences vanish
        diagonal = torch.diagonal(gram, dim1=-2, dim2=-1)
        ridge = diagonal.sum(-1, keepdim=True).mul_(1e-10).add_(torch.finfo(gram.dtype).tiny)
        diagonal.add_(ridge)
        gamma, _ = torch.linalg.solve_ex(gram, d_residual @ residual.unsqueeze(-1))
        mixed = torch.baddbmm(flat.unsqueeze(-2), gamma.mT, d_image, alpha=-1).view_as(image)
        finite = all_finite(mixed.flatten(1), -1)
        return torch.where(finite.reshape(-1, *(1,) * (image.ndim - 1)), mixed, image)
