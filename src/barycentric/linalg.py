"""Stable, differentiable square roots of symmetric positive semi-definite matrices.

Both roots are spectral functions :math:`f(A) = U f(\\Lambda) U^\\top` of the
eigendecomposition :math:`A = U \\Lambda U^\\top`. Their backward pass uses the
Daleckii–Krein formula

.. math::

    \\bar A = U \\left( (U^\\top \\bar X U) \\circ K \\right) U^\\top,
    \\qquad K_{ij} = \\frac{f(\\lambda_i) - f(\\lambda_j)}{\\lambda_i - \\lambda_j},

with the divided differences written in closed form, so that they stay finite when
eigenvalues repeat (where differentiating :func:`torch.linalg.eigh` divides by zero):

* :math:`f(\\lambda) = \\lambda^{1/2}`: :math:`K_{ij} = 1 / (s_i + s_j)`, i.e. the solution
  of the Lyapunov equation :math:`X \\bar A + \\bar A X = \\bar X` in the eigenbasis;
* :math:`f(\\lambda) = \\lambda^{-1/2}`: :math:`K_{ij} = -1 / (s_i s_j (s_i + s_j))`,

where :math:`s = \\lambda^{1/2}`. Inputs are symmetrised first, so the functions (and
their gradients) are well defined for every square matrix and gradients are symmetric.
"""

from __future__ import annotations

import torch

__all__ = ["inv_sqrtm_psd", "sqrtm_psd", "symmetrise"]


def symmetrise(a: torch.Tensor) -> torch.Tensor:
    """Return the symmetric part :math:`(A + A^\\top) / 2` of a batch of matrices.

    Parameters
    ----------
    a : Tensor, shape (..., d, d)

    Returns
    -------
    Tensor, shape (..., d, d)
    """
    return 0.5 * (a + a.mT)


def _eig_floor(eigenvalues: torch.Tensor) -> torch.Tensor:
    # Round-off can push eigenvalues of a PSD matrix slightly below zero; the floor keeps
    # the roots real and the divided differences finite.
    return eigenvalues.clamp_min(torch.finfo(eigenvalues.dtype).tiny)


class _SymmetricRoot(torch.autograd.Function):
    """``A -> A^{power}`` for ``power`` in {1/2, -1/2}, with the closed-form backward."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, inverse: bool) -> torch.Tensor:
        eigenvalues, vectors = torch.linalg.eigh(symmetrise(a))
        roots = _eig_floor(eigenvalues).sqrt()
        spectrum = roots.reciprocal() if inverse else roots
        ctx.save_for_backward(roots, vectors)
        ctx.inverse = inverse
        return (vectors * spectrum.unsqueeze(-2)) @ vectors.mT

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        roots, vectors = ctx.saved_tensors
        kernel = (roots.unsqueeze(-1) + roots.unsqueeze(-2)).reciprocal()
        if ctx.inverse:
            kernel = -kernel / (roots.unsqueeze(-1) * roots.unsqueeze(-2))
        inner = vectors.mT @ symmetrise(grad) @ vectors
        return vectors @ (inner * kernel) @ vectors.mT, None


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Principal square root :math:`A^{1/2}` of symmetric positive semi-definite matrices.

    Computed from the eigendecomposition of :math:`(A + A^\\top)/2`; eigenvalues below the
    dtype's smallest normal number (round-off) are raised to it. The backward pass solves
    the Lyapunov equation :math:`A^{1/2} \\bar A + \\bar A A^{1/2} = \\bar X` in the
    eigenbasis, which stays finite for repeated eigenvalues.

    Parameters
    ----------
    a : Tensor, shape (..., d, d)
        Symmetric positive semi-definite matrices; any batch shape, dtype and device.

    Returns
    -------
    Tensor, shape (..., d, d)
        The symmetric positive semi-definite root :math:`X` with :math:`X X = A`.

    Examples
    --------
    >>> import torch, barycentric as bc
    >>> bc.linalg.sqrtm_psd(torch.tensor([[4.0, 0.0], [0.0, 9.0]]))
    tensor([[2., 0.],
            [0., 3.]])
    """
    return _SymmetricRoot.apply(a, False)


def inv_sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Inverse principal square root :math:`A^{-1/2}` of symmetric positive definite matrices.

    Parameters
    ----------
    a : Tensor, shape (..., d, d)
        Symmetric positive definite matrices.

    Returns
    -------
    Tensor, shape (..., d, d)
        :math:`A^{-1/2}`, symmetric positive definite. Its backward pass uses the divided
        difference :math:`-1 / (s_i s_j (s_i + s_j))` of :math:`\\lambda^{-1/2}`.

    Examples
    --------
    >>> import torch, barycentric as bc
    >>> bc.linalg.inv_sqrtm_psd(torch.tensor([[4.0, 0.0], [0.0, 16.0]]))
    tensor([[0.5000, 0.0000],
            [0.0000, 0.2500]])
    """
    return _SymmetricRoot.apply(a, True)
