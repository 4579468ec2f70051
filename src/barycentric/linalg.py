"""Stable, differentiable square roots and polar factors of matrices.

The roots are spectral functions :math:`f(A) = U f(\\Lambda) U^\\top` of the
eigendecomposition :math:`A = U \\Lambda U^\\top` of the symmetric part of :math:`A`; the
polar decomposition :math:`X = Q H`, :math:`H = (X^\\top X)^{1/2}`, comes from the SVD of
:math:`X`, so roots of Gram matrices are taken without forming them (:func:`polar`).

Round-off. ``eigh`` resolves an eigenvalue only to about :math:`\\varepsilon \\lambda_{\\max}`
(:math:`\\varepsilon` the dtype's machine epsilon), so eigenvalues below that level, negative
ones included, are raised to it (singular values likewise, below
:math:`\\varepsilon \\sigma_{\\max}`): the roots are real, the inverse root is bounded by
:math:`(\\varepsilon \\lambda_{\\max})^{-1/2}`, and the floor scales with the matrix. Each
matrix is divided by a power of two near its largest entry before LAPACK sees it (which
would otherwise rescale very large or small matrices by other factors), so
:math:`(cA)^{1/2} = c^{1/2} A^{1/2}` holds exactly for :math:`c = 4^k` and to round-off for
every positive :math:`c` the dtype holds. A matrix that is not finite, or on which LAPACK
fails, gets NaN in its own slot of the batch and leaves the others untouched. On a CUDA
device, matrices with :math:`32 < d \\le 128`, which cuSOLVER decomposes one per call, are
decomposed on the host in one batched call and their factors copied back
(``barycentric._host``).

Derivatives. With :math:`X = A^{1/2}`, the Daleckii–Krein formula for the root is the
solution of the Lyapunov equation

.. math::

    X \\bar A + \\bar A X = \\bar X, \\qquad
    \\bar A = U \\big( (U^\\top \\bar X U) \\circ K \\big) U^\\top,\\quad
    K_{ij} = \\frac{1}{s_i + s_j},

with :math:`s = \\lambda^{1/2}`, finite for repeated eigenvalues (where differentiating
:func:`torch.linalg.eigh` divides by zero). The inverse root :math:`Y = X^{-1}` adds
:math:`\\bar X \\mathrel{-}= Y \\bar Y Y`, i.e. :math:`K_{ij} = -1 / (s_i s_j (s_i + s_j))`.
The Lyapunov solve :math:`Z = L_X(G)` is itself differentiable, by

.. math::

    \\bar G = L_X(\\bar Z), \\qquad \\bar X = -(\\bar G Z^\\top + Z^\\top \\bar G),

(the solution map is self-adjoint, and :math:`dX\\,Z + X\\,dZ + dZ\\,X + Z\\,dX = 0`), written
with the same solve: derivatives of every order come from the one eigendecomposition of the
forward pass, with the same closed-form kernel, so second derivatives (Hessian-vector
products, gradient penalties) are as exact and as stable as first ones. The polar factors
use the same solve with :math:`H` in place of :math:`X` (see :func:`polar`).
"""

from __future__ import annotations

import torch

from barycentric._entry import entry_point
from barycentric._host import decompose_on_host, run_on_host
from barycentric._validation import all_finite, check_decomposable

__all__ = [
    "eigh_psd",
    "inv_sqrtm_psd",
    "polar",
    "power_of_two_scale",
    "sqrtm_psd",
    "symmetrise",
]


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


def power_of_two_scale(value: torch.Tensor) -> torch.Tensor:
    """The power of two :math:`2^{e-1} \\le v < 2^e` of a positive ``value``, detached.

    Dividing by a power of two is exact, so normalising by it changes no digit (outside
    the subnormal range) and makes whatever follows exactly equivariant under scaling by
    powers of two; the largest finite ``value`` cannot overflow it. 0, inf and NaN give 1/2.

    Parameters
    ----------
    value : Tensor, shape (...)

    Returns
    -------
    Tensor, shape (...)
    """
    # v = m 2^e with 1/2 <= |m| < 1, so v / 2m = 2^{e-1} exactly; 0, inf and NaN give NaN
    # there (frexp and a division: half the time of ldexp, which computes a power)
    value = value.detach()
    mantissa, _ = torch.frexp(value)
    return (value / (mantissa + mantissa)).nan_to_num(0.5)


def _matrix_scale(a: torch.Tensor) -> torch.Tensor:
    """A power of two near the largest entry of each matrix ``(..., d, d) -> (..., 1)``:
    LAPACK rescales matrices far from 1 by factors that are not powers of two."""
    return power_of_two_scale(a.detach().abs().amax((-2, -1))).unsqueeze(-1)


def _skew(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a - a.mT)


def _decompose(decomposition, a: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``decomposition(a)`` of a batch of matrices, isolated matrix by matrix.

    A matrix that is not finite, or on which LAPACK fails, gets NaN factors in its own
    slot: the batched LAPACK call stops at the first failure, so on failure the batch is
    decomposed again one matrix at a time. The callers scale their matrices to entries of
    order one, so one finite sum over the batch says that every entry is finite (a sum that
    overflows only sends a finite batch down the careful path). Mid-sized matrices on a CUDA
    device are decomposed on the host (``barycentric._host``).
    """
    if decompose_on_host(a):
        return run_on_host(_decompose_here, a.device, decomposition, a)
    return _decompose_here(decomposition, a)


def _decompose_here(decomposition, a: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """:func:`_decompose` on ``a``'s own device."""
    if bool(torch.isfinite(a.sum())):
        try:
            return tuple(decomposition(a))
        except torch.linalg.LinAlgError:
            pass
    finite = all_finite(a, (-2, -1))
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    clean = torch.where(finite[..., None, None], a, eye)
    try:
        factors = tuple(decomposition(clean))
    except torch.linalg.LinAlgError:
        nan = tuple(torch.full_like(f, torch.nan) for f in decomposition(eye))
        rows = []
        for matrix in clean.reshape(-1, *a.shape[-2:]):
            try:
                rows.append(tuple(decomposition(matrix)))
            except torch.linalg.LinAlgError:
                rows.append(nan)
        factors = tuple(
            torch.stack(parts).reshape(*a.shape[:-2], *parts[0].shape)
            for parts in zip(*rows, strict=True)
        )
    return tuple(
        torch.where(finite.reshape(*finite.shape, *(1,) * (f.ndim - finite.ndim)), f, torch.nan)
        for f in factors
    )


def _resolution_floor(values: torch.Tensor, largest: torch.Tensor) -> torch.Tensor:
    """``values`` raised to ``ε · largest`` (and at least the smallest normal number): the
    resolution of LAPACK's eigen- and singular values (module docstring)."""
    info = torch.finfo(values.dtype)
    return torch.maximum(values, (info.eps * largest).clamp_min(info.tiny))


@entry_point
def eigh_psd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigendecomposition of positive semi-definite matrices, floored and isolated per matrix.

    Eigenvalues of :math:`(A + A^\\top)/2` below :math:`\\varepsilon \\lambda_{\\max}` (the
    resolution of ``eigh``; :math:`\\varepsilon` the dtype's machine epsilon, and at least the
    smallest normal number) are raised to it. The matrix is divided by a power of two near
    its largest entry first (and the eigenvalues multiplied back), so the result is exactly
    equivariant under scaling by powers of two. Not differentiable: the functions built on
    it (:func:`sqrtm_psd`, :func:`inv_sqrtm_psd`) carry the derivatives.

    Parameters
    ----------
    a : Tensor, shape (..., d, d)

    Returns
    -------
    eigenvalues : Tensor, shape (..., d)
        Ascending, positive. NaN for a matrix that is not finite or on which ``eigh`` fails.
    eigenvectors : Tensor, shape (..., d, d)
        Orthonormal columns; NaN where the eigenvalues are.
    """
    check_decomposable(a, "a")
    # divided first by a power of two (exact, and for subnormal entries 1/scale would
    # overflow), then symmetrised (so entries near the dtype's largest do not overflow)
    scale = _matrix_scale(a)
    scaled = a / scale.unsqueeze(-1)
    values, vectors = _decompose(torch.linalg.eigh, (scaled + scaled.mT).mul_(0.5))
    values = values * scale
    return _resolution_floor(values, values[..., -1:]), vectors


def _batched(function, axis: int | None, matrices: torch.Tensor, *options):
    """The vmap rule of an autograd function of a batch of matrices: the mapped ``axis`` of
    ``matrices`` moved to the front is one more batch dimension (:func:`torch.func.vmap`
    then never sees the decompositions' isolation of failed matrices, which reads values)."""
    outputs = function.apply(matrices if axis is None else matrices.movedim(axis, 0), *options)
    return outputs, (None if axis is None else 0,) * len(outputs)


class _Lyapunov(torch.autograd.Function):
    """``Z`` with ``X Z + Z X = G`` for ``X = U diag(s) Uᵀ``, differentiable in ``X`` and ``G``.

    ``s`` and ``U`` only solve the equation fast; the derivatives flow through ``X`` (an
    output of the function whose backward calls this, :class:`_PsdRoots` or
    :class:`_Polar`, so they reach its input) and ``G``. Matrix products only, so
    :func:`torch.func.vmap` batches it by running it on batched tensors, which lets
    :func:`torch.func.jacrev` map the backward passes that call it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, g, roots, vectors):
        kernel = (roots.unsqueeze(-1) + roots.unsqueeze(-2)).reciprocal()
        return vectors @ ((vectors.mT @ g @ vectors) * kernel) @ vectors.mT

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, roots, vectors = inputs
        ctx.save_for_backward(x, output, roots, vectors)

    @staticmethod
    @entry_point(name="the derivative of a matrix square root")
    def backward(ctx, grad):
        x, z, roots, vectors = ctx.saved_tensors
        grad_g = _Lyapunov.apply(x, grad, roots, vectors)
        grad_x = -(grad_g @ z.mT + z.mT @ grad_g) if ctx.needs_input_grad[0] else None
        return grad_x, grad_g, None, None


class _PsdRoots(torch.autograd.Function):
    """``A -> A^{1/2}`` (and ``A^{-1/2}`` with ``inverse``) with a differentiable backward.

    The eigenvalues' roots and the eigenvectors, which the backward pass solves with, are
    returned as outputs that are not differentiable (as :mod:`torch.func` needs of what a
    backward pass keeps).
    """

    @staticmethod
    def forward(a, inverse):
        values, vectors = eigh_psd(a)
        roots = values.sqrt()
        root = (vectors * roots.unsqueeze(-2)) @ vectors.mT
        if not inverse:
            return root, roots, vectors
        return root, (vectors / roots.unsqueeze(-2)) @ vectors.mT, roots, vectors

    @staticmethod
    def vmap(info, in_dims, a, inverse):
        return _batched(_PsdRoots, in_dims[0], a, inverse)

    @staticmethod
    def setup_context(ctx, inputs, output):
        root, *inverse, roots, vectors = output
        ctx.mark_non_differentiable(roots, vectors)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(root, roots, vectors, *inverse)

    @staticmethod
    @entry_point(name="the derivative of a matrix square root")
    def backward(ctx, grad_root, *grads):
        root, roots, vectors, *inverse = ctx.saved_tensors
        # d(A^{-1/2}) = -A^{-1/2} d(A^{1/2}) A^{-1/2}: the inverse's cotangent joins the root's
        terms = [] if grad_root is None else [grad_root]
        if inverse and grads[0] is not None:
            (inv_root,) = inverse
            terms.append(-inv_root.mT @ grads[0] @ inv_root.mT)
        if not terms:
            return None, None
        return _Lyapunov.apply(root, symmetrise(sum(terms)), roots, vectors), None


@entry_point
def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Principal square root :math:`A^{1/2}` of symmetric positive semi-definite matrices.

    Computed from the eigendecomposition of :math:`(A + A^\\top)/2`; eigenvalues below
    :math:`\\varepsilon \\lambda_{\\max}` (round-off) are raised to it (see the module
    docstring), so the root is finite, symmetric positive definite and
    scale-equivariant, :math:`(cA)^{1/2} = c^{1/2} A^{1/2}`. The backward pass solves the
    Lyapunov equation :math:`A^{1/2} \\bar A + \\bar A A^{1/2} = \\bar X` in the eigenbasis,
    which stays finite for repeated eigenvalues and is itself differentiable (second
    derivatives are exact). A matrix that is not finite gives NaN in its own slot only.

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
    return _PsdRoots.apply(a, False)[0]


@entry_point
def inv_sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Inverse principal square root :math:`A^{-1/2}` of symmetric positive definite matrices.

    Eigenvalues below :math:`\\varepsilon \\lambda_{\\max}` are raised to it (see the module
    docstring), so the result is finite, at most :math:`(\\varepsilon \\lambda_{\\max})^{-1/2}`
    in norm, even for a singular or slightly indefinite input.

    Parameters
    ----------
    a : Tensor, shape (..., d, d)
        Symmetric positive definite matrices.

    Returns
    -------
    Tensor, shape (..., d, d)
        :math:`A^{-1/2}`, symmetric positive definite. Its backward pass uses the divided
        difference :math:`-1 / (s_i s_j (s_i + s_j))` of :math:`\\lambda^{-1/2}` and is
        itself differentiable.

    Examples
    --------
    >>> import torch, barycentric as bc
    >>> bc.linalg.inv_sqrtm_psd(torch.tensor([[4.0, 0.0], [0.0, 16.0]]))
    tensor([[0.5000, 0.0000],
            [0.0000, 0.2500]])
    """
    return _PsdRoots.apply(a, True)[1]


class _Polar(torch.autograd.Function):
    """``X -> (Q, H)``, ``X = Q H``, from one SVD, with a differentiable backward (the
    singular values and right singular vectors are returned too, not differentiable)."""

    @staticmethod
    def forward(x):
        check_decomposable(x, "x")
        scale = _matrix_scale(x)
        u, singular, vh = _decompose(torch.linalg.svd, x / scale.unsqueeze(-1))
        singular = singular * scale
        singular = _resolution_floor(singular, singular[..., :1])
        return u @ vh, (vh.mT * singular.unsqueeze(-2)) @ vh, singular, vh.mT

    @staticmethod
    def vmap(info, in_dims, x):
        return _batched(_Polar, in_dims[0], x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, h, singular, vectors = output
        ctx.mark_non_differentiable(singular, vectors)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(inputs[0], q, h, singular, vectors)

    @staticmethod
    @entry_point(name="the derivative of a polar decomposition")
    def backward(ctx, grad_q, grad_h, *_):
        x, q, h, singular, vectors = ctx.saved_tensors
        # H dH + dH H = dXᵀX + XᵀdX, and dQ = QΩ with HΩ + ΩH = QᵀdX - dXᵀQ (Ω skew): both
        # adjoints solve with L_H, which keeps symmetric and skew parts apart, so one solve
        # of their sum serves both
        terms = [] if grad_h is None else [symmetrise(grad_h)]
        if grad_q is not None:
            terms.append(_skew(q.mT @ grad_q))
        if not terms:
            return None
        z = _Lyapunov.apply(h, sum(terms), singular, vectors)
        return 2 * (x @ symmetrise(z) + q @ _skew(z))


@entry_point
def polar(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Polar decomposition :math:`X = Q H` of square matrices.

    :math:`H = (X^\\top X)^{1/2}` is symmetric positive semi-definite and :math:`Q` orthogonal,
    both from the SVD :math:`X = U \\operatorname{diag}(\\sigma) V^\\top`: :math:`Q = U V^\\top`,
    :math:`H = V \\operatorname{diag}(\\sigma) V^\\top`. Taking the root of
    :math:`X^\\top X` from the singular values of :math:`X`, never forming :math:`X^\\top X`,
    keeps its round-off at :math:`\\varepsilon \\|X\\|` instead of
    :math:`\\varepsilon \\kappa(X) \\|X\\|`. Singular values below
    :math:`\\varepsilon \\sigma_{\\max}` are raised to it.

    The backward pass solves, with :math:`L_H(G)` the solution :math:`Z` of
    :math:`H Z + Z H = G` (kernel :math:`1 / (\\sigma_i + \\sigma_j)`, finite for repeated
    singular values, unlike differentiating the SVD),

    .. math::

        \\bar X = 2 X L_H(\\operatorname{sym} \\bar H)
            + 2 Q L_H(\\operatorname{skew}(Q^\\top \\bar Q)),

    and is itself differentiable (derivatives of every order).

    Parameters
    ----------
    x : Tensor, shape (..., d, d)

    Returns
    -------
    q : Tensor, shape (..., d, d)
        Orthogonal polar factor.
    h : Tensor, shape (..., d, d)
        :math:`(X^\\top X)^{1/2}`. A matrix that is not finite gives NaN factors in its own
        slot only.

    Examples
    --------
    >>> import torch, barycentric as bc
    >>> q, h = bc.linalg.polar(torch.tensor([[0.0, -2.0], [3.0, 0.0]]))
    >>> q, h
    (tensor([[ 0., -1.],
            [ 1.,  0.]]), tensor([[3., 0.],
            [0., 2.]]))
    """
    q, h, _, _ = _Polar.apply(x)
    return q, h
