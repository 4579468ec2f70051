"""McCann's interpolant from a Cholesky factor (``functional._geodesic``).

Against the polar form (an independent formula: roots of each covariance and a polar
factor, no Cholesky factor), the closed form of commuting covariances, the optimal map's
defining property, and which problems it leaves to the polar form.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import random_spd

import barycentric.functional.gaussian_wasserstein as gw
from barycentric.functional import wasserstein_barycenter_full
from barycentric.functional._geodesic import mccann_cholesky

F32, F64 = torch.float32, torch.float64


def _pairs(seed: int, batch: int, d: int, condition: float = 1e2):
    generator = torch.Generator().manual_seed(seed)
    first, second = random_spd(generator, d, (2, batch), condition)
    t = torch.rand(batch, 1, 1, generator=generator, dtype=F64) * 0.5
    return first, second, t


def _relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(1, 12),
    log_condition=st.floats(0.0, 4.0),
)
def test_agrees_with_the_polar_form(seed: int, d: int, log_condition: float) -> None:
    first, second, t = _pairs(seed, 4, d, 10**log_condition)
    # κ(H) ≤ √(κ(Σ₁) κ(Σ₂)) ≤ 1e4 here, inside 16 ε κ(H) ≤ 1e-10
    found, accepted = mccann_cholesky(first, second, t, 1e-10)
    assert bool(accepted.all())
    reference = gw._mccann_polar(first, second, t)
    # the root's round-off, ε κ(H), bounds the difference
    bound = 16 * torch.finfo(F64).eps * 10**log_condition
    assert float(_relative(found, reference).max()) <= bound


def test_the_end_point_is_the_second_covariance_and_the_map_is_optimal() -> None:
    first, second, _ = _pairs(1, 5, 6, 1e3)
    end, accepted = mccann_cholesky(first, second, torch.ones(5, 1, 1, dtype=F64), 1e-10)
    assert bool(accepted.all())
    assert float(_relative(end, second).max()) <= 16 * torch.finfo(F64).eps * 1e3


def test_commuting_covariances_follow_the_roots_linearly() -> None:
    generator = torch.Generator().manual_seed(2)
    basis, _ = torch.linalg.qr(torch.randn(5, 5, generator=generator, dtype=F64))
    a = torch.rand(5, generator=generator, dtype=F64) * 9 + 0.1
    b = torch.rand(5, generator=generator, dtype=F64) * 9 + 0.1
    t = torch.tensor([[[0.3]]], dtype=F64)
    found, accepted = mccann_cholesky(
        (basis * a) @ basis.T[None], (basis * b) @ basis.T[None], t, 1e-12
    )
    expected = (basis * (0.7 * a.sqrt() + 0.3 * b.sqrt()).square()) @ basis.T
    assert bool(accepted.all())
    torch.testing.assert_close(found[0], expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize(("condition", "accepted"), [(1e2, True), (1e8, False)])
def test_accepts_only_roots_it_can_certify(condition: float, accepted: bool) -> None:
    # with Σ₁ = I, H = Σ₂^½: κ(Σ₂) = 1e8 gives κ(H) = 1e4 and 16 ε κ(H) = 3.6e-11 > 1e-12
    first, second, t = _pairs(3, 3, 4, condition)
    first = torch.eye(4, dtype=F64).expand(3, 4, 4)
    _, flags = mccann_cholesky(first, second, t, 1e-12)
    assert flags.tolist() == [accepted] * 3


def test_singular_first_covariances_are_left_to_the_polar_form() -> None:
    first, second, t = _pairs(4, 2, 3)
    first[1] = torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=F64))
    _, accepted = mccann_cholesky(first, second, t, 1e-12)
    assert accepted.tolist() == [True, False]


def test_float32_is_computed_in_float64_and_returned_in_float32() -> None:
    first, second, t = _pairs(5, 3, 8, 1e4)
    found, accepted = mccann_cholesky(first.float(), second.float(), t.float(), 1e-5)
    reference = gw._mccann_polar(
        first.float().double(), second.float().double(), t.float().double()
    )
    assert found.dtype == F32 and bool(accepted.all())
    assert float(_relative(found.double(), reference).max()) <= 2 * torch.finfo(F32).eps


def test_the_public_function_uses_it_outside_autograd_only(monkeypatch) -> None:
    first, second, _ = _pairs(6, 6, 3)
    cov = torch.stack([first, second], 1)
    second_ill = random_spd(torch.Generator().manual_seed(7), 3, (), 1e10)
    cov[5, 1] = second_ill  # κ(H) too large: this problem takes the polar form
    weights = torch.tensor([[0.6, 0.4]], dtype=F64).expand(6, 2)
    loc = torch.zeros(6, 2, 3, dtype=F64)
    calls: list[int] = []
    fast = mccann_cholesky

    def counting(*args):
        calls.append(args[0].shape[0])
        return fast(*args)

    monkeypatch.setattr(gw, "mccann_cholesky", counting)
    _, bary = wasserstein_barycenter_full(loc, cov, weights)
    reference = gw._mccann_polar(cov[:, 0], cov[:, 1], torch.full((6, 1, 1), 0.4, dtype=F64))
    assert calls == [6]
    assert float(_relative(bary[:5], reference[:5]).max()) <= 1e-13
    # the polar form's own answer (one problem instead of six in LAPACK's batch)
    torch.testing.assert_close(bary[5], reference[5], rtol=1e-14, atol=0)
    wasserstein_barycenter_full(loc, cov.clone().requires_grad_(), weights)
    assert calls == [6]
