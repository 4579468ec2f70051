"""Matrix roots and the polar decomposition: exactness against SciPy, round-off floors, failure
isolation, and gradients that stay finite at repeated eigenvalues."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import spd_matrices

from barycentric.linalg import (
    eigh_psd,
    inv_sqrtm_psd,
    polar,
    power_of_two_scale,
    sqrtm_psd,
    symmetrise,
)


def _with_spectrum(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """A float64 SPD matrix with the given eigenvalues in a random orthonormal basis."""
    generator = torch.Generator().manual_seed(seed)
    d = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=generator))
    return symmetrise(q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.mT)


@given(spd_matrices(d=4, batch=(3,), max_condition=1e6))
def test_sqrtm_squares_back_and_matches_scipy(a: torch.Tensor) -> None:
    root = sqrtm_psd(a)
    scale = torch.linalg.matrix_norm(a).max()
    assert torch.allclose(root @ root, a, atol=1e-10 * scale)
    assert torch.allclose(root, root.mT)
    for one, expected in zip(root, a, strict=True):
        np.testing.assert_allclose(
            one.numpy(), scipy.linalg.sqrtm(expected.numpy()).real, atol=1e-8 * float(scale)
        )


@given(spd_matrices(d=3, batch=(2,), max_condition=1e4))
def test_inverse_root_whitens(a: torch.Tensor) -> None:
    inv_root = inv_sqrtm_psd(a)
    eye = torch.eye(3, dtype=a.dtype).expand_as(a)
    assert torch.allclose(inv_root @ a @ inv_root, eye, atol=1e-8)
    assert torch.allclose(inv_root @ sqrtm_psd(a), eye, atol=1e-8)


@pytest.mark.parametrize("root", [sqrtm_psd, inv_sqrtm_psd])
@pytest.mark.parametrize(
    "spectrum", [[1.0, 2.0, 5.0], [2.0, 2.0, 2.0], [1.0, 1.0, 4.0]], ids=["distinct", "I", "pair"]
)
def test_gradcheck_including_repeated_eigenvalues(root, spectrum: list[float]) -> None:
    a = _with_spectrum(spectrum).requires_grad_()
    assert torch.autograd.gradcheck(root, (a,))


def test_sqrt_gradient_at_identity_is_half_the_symmetric_part() -> None:
    # d(A^{1/2}) at A = I in direction E is E/2, so <G, d sqrt> has gradient sym(G)/2.
    a = torch.eye(4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((sqrtm_psd(a) * g).sum(), a)
    assert torch.isfinite(grad).all()
    assert torch.allclose(grad, symmetrise(g) / 2)
    (grad_inv,) = torch.autograd.grad((inv_sqrtm_psd(a) * g).sum(), a)
    assert torch.allclose(grad_inv, -symmetrise(g) / 2)


def test_eigh_autograd_is_not_finite_where_ours_is() -> None:
    # The reason the custom backward exists: differentiating eigh at a repeated
    # eigenvalue divides by zero.
    a = torch.eye(3, dtype=torch.float64, requires_grad=True)
    values, vectors = torch.linalg.eigh(a)
    naive = (vectors * values.sqrt().unsqueeze(-2)) @ vectors.mT
    (grad,) = torch.autograd.grad(naive.sum(), a)
    assert not torch.isfinite(grad).all()
    (ours,) = torch.autograd.grad(sqrtm_psd(a).sum(), a)
    assert torch.isfinite(ours).all()


def test_input_is_symmetrised() -> None:
    a = _with_spectrum([1.0, 3.0])
    skew = torch.tensor([[0.0, 0.5], [-0.5, 0.0]], dtype=torch.float64)
    assert torch.allclose(sqrtm_psd(a + skew), sqrtm_psd(a))


def test_semidefinite_input_has_real_finite_root() -> None:
    a = _with_spectrum([0.0, 1.0, 4.0])
    root = sqrtm_psd(a)
    assert torch.isfinite(root).all()
    assert torch.allclose(root @ root, a, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_batch_shape_are_kept(dtype: torch.dtype) -> None:
    a = _with_spectrum([1.0, 4.0, 9.0]).to(dtype).expand(2, 5, 3, 3)
    for root in (sqrtm_psd(a), inv_sqrtm_psd(a)):
        assert root.dtype == dtype
        assert root.shape == (2, 5, 3, 3)
    assert torch.allclose(
        torch.linalg.eigvalsh(sqrtm_psd(a)[0, 0]).double(),
        torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        atol=1e-5,
    )


@settings(max_examples=15)
@given(seed=st.integers(0, 2**32 - 1), log_condition=st.floats(0, 10), d=st.integers(1, 5))
def test_polar_matches_scipy(seed: int, log_condition: float, d: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    # X = U diag(σ) Vᵀ with singular values spread over `log_condition` decades
    basis_u, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=generator))
    basis_v, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=generator))
    singular = 10.0 ** (log_condition * torch.rand(d, dtype=torch.float64, generator=generator))
    x = (basis_u * singular) @ basis_v.mT
    q, h = polar(x)
    expected_q, expected_h = scipy.linalg.polar(x.numpy())
    np.testing.assert_allclose(
        q.numpy(), expected_q, atol=1e-10 * float(singular.max() / singular.min())
    )
    np.testing.assert_allclose(h.numpy(), expected_h, atol=1e-12 * float(singular.max()))
    assert torch.allclose(q @ q.mT, torch.eye(d, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(h, h.mT) and torch.allclose(q @ h, x, atol=1e-12 * float(singular.max()))


def test_polar_root_is_accurate_where_squaring_is_not() -> None:
    # H = (XᵀX)^½ from the singular values of X keeps the digits that forming XᵀX loses:
    # in float32 an eigenvalue 1e-10 of XᵀX is below round-off, its singular value 1e-5 is not
    rotation = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64)
    x = (
        rotation @ torch.diag(torch.tensor([1.0, 1e-5], dtype=torch.float64)) @ rotation.mT
    ).float()
    exact = torch.linalg.svdvals(x.double())[-1]
    through_svd = torch.linalg.eigvalsh(polar(x)[1].double())[0]
    through_square = torch.linalg.eigvalsh(sqrtm_psd(x.mT @ x).double())[0]
    assert abs(through_svd - exact) <= 0.02 * exact
    assert abs(through_square - exact) >= 10 * exact


def test_eigenvalue_floor_is_relative_to_the_largest() -> None:
    a = _with_spectrum([-1e-3, 0.0, 1.0, 4.0])
    values, vectors = eigh_psd(a)
    floor = torch.finfo(torch.float64).eps * 4.0
    assert torch.allclose(values, torch.tensor([floor, floor, 1.0, 4.0], dtype=torch.float64))
    assert torch.allclose(vectors @ vectors.mT, torch.eye(4, dtype=torch.float64))
    # the inverse root of a singular or slightly indefinite matrix is bounded by the floor
    inv_root = inv_sqrtm_psd(a)
    assert torch.isfinite(inv_root).all()
    assert torch.linalg.matrix_norm(inv_root, ord=2) <= 1.0001 * floor**-0.5


@pytest.mark.parametrize("scale", [2.0**-100, 2.0**-60, 2.0**60, 2.0**120])
def test_roots_are_scale_equivariant_in_float32(scale: float) -> None:
    a = _with_spectrum([1e-6, 1e-3, 1.0]).float()
    root, inv_root = sqrtm_psd(a), inv_sqrtm_psd(a)
    assert torch.equal(sqrtm_psd(scale * a), scale**0.5 * root)
    assert torch.equal(inv_sqrtm_psd(scale * a), scale**-0.5 * inv_root)


def test_a_matrix_that_is_not_finite_only_spoils_its_own_slot() -> None:
    a = _with_spectrum([1.0, 2.0, 3.0]).expand(4, 3, 3).clone()
    a[1, 0, 2] = torch.nan
    a[3, 1, 1] = torch.inf
    for result in (sqrtm_psd(a), inv_sqrtm_psd(a), *polar(a)):
        assert torch.isnan(result[[1, 3]]).all()
        assert torch.isfinite(result[[0, 2]]).all()
    torch.testing.assert_close(sqrtm_psd(a)[[0, 2]], sqrtm_psd(a[0]).expand(2, 3, 3))


def test_a_batch_whose_sum_overflows_is_decomposed_matrix_by_matrix() -> None:
    # one finite sum over the batch lets finite batches skip the per-matrix check; finite
    # entries whose sum overflows must take the careful path and still decompose exactly
    from barycentric.linalg import _decompose

    a = _with_spectrum([1.0, 2.0, 3.0]).expand(3, 3, 3).clone() * 4e307
    assert not bool(torch.isfinite(a.sum())) and bool(torch.isfinite(a).all())
    values, vectors = _decompose(torch.linalg.eigh, a)
    expected_values, expected_vectors = torch.linalg.eigh(a)
    assert torch.equal(values, expected_values) and torch.equal(vectors, expected_vectors)
    a[1, 0, 0] = torch.nan
    values, _ = _decompose(torch.linalg.eigh, a)
    assert torch.isnan(values[1]).all() and torch.equal(values[[0, 2]], expected_values[[0, 2]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subnormal_and_near_overflow_matrices_have_finite_roots(dtype: torch.dtype) -> None:
    info = torch.finfo(dtype)
    tiny = torch.eye(2, dtype=dtype) * info.tiny * 2.0**-10  # subnormal: 1/scale overflows
    # the documented floor: eigenvalues below the smallest normal number are raised to it
    torch.testing.assert_close(sqrtm_psd(tiny), torch.eye(2, dtype=dtype) * info.tiny**0.5)
    assert torch.isfinite(inv_sqrtm_psd(tiny)).all()
    # entries near the largest float: A + Aᵀ overflows unless scaled first
    huge = _with_spectrum([0.25, 0.5, 1.0]).to(dtype) * (info.max / 2)
    root = sqrtm_psd(huge)
    assert torch.isfinite(root).all()
    torch.testing.assert_close(
        root / (info.max / 2) ** 0.5, sqrtm_psd(_with_spectrum([0.25, 0.5, 1.0]).to(dtype))
    )


@pytest.mark.parametrize(
    ("a", "message"),
    [
        (torch.ones(2, 3), "square matrices"),
        (torch.ones(3), "square matrices"),
        (torch.ones(4, 0, 0), "square matrices"),
        (torch.eye(2, dtype=torch.int64), "float32 or float64"),
        (torch.eye(2, dtype=torch.float16), "float32 or float64"),
        (torch.eye(2, dtype=torch.bfloat16), "float32 or float64"),
    ],
)
@pytest.mark.parametrize(
    "function", [sqrtm_psd, inv_sqrtm_psd, eigh_psd, polar], ids=lambda f: f.__name__
)
def test_bad_matrices_raise_a_clear_error(function, a: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        function(a)


def test_an_empty_batch_of_matrices_gives_empty_results() -> None:
    a = torch.ones(0, 3, 3)
    assert sqrtm_psd(a).shape == inv_sqrtm_psd(a).shape == (0, 3, 3)
    assert [x.shape for x in polar(a)] == [(0, 3, 3)] * 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_power_of_two_scale_is_the_power_below_every_value(dtype) -> None:
    # every binade of the dtype, subnormal ones included, at its ends and inside it
    info = torch.finfo(dtype)
    smallest = math.frexp(info.smallest_normal * info.eps)[1] - 1
    largest = math.frexp(info.max)[1] - 1
    powers = torch.tensor([2.0**k for k in range(smallest, largest + 1)], dtype=torch.float64)
    mantissas = torch.tensor([1.0, 1.25, 1.5, 2.0 - 2 * info.eps], dtype=torch.float64)
    values = (powers[:, None] * mantissas).to(dtype)  # rounded where the dtype is coarser
    expected = torch.tensor(
        [2.0 ** (math.frexp(v)[1] - 1) for v in values.double().flatten().tolist()],
        dtype=dtype,
    )
    expected = expected.reshape(values.shape)
    assert torch.equal(power_of_two_scale(values), expected)
    assert torch.equal(power_of_two_scale(-values), expected)
    special = torch.tensor([0.0, math.inf, -math.inf, math.nan], dtype=dtype)
    assert torch.equal(power_of_two_scale(special), torch.full_like(special, 0.5))
