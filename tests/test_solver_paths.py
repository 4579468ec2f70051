"""No silent wrong number on any path of the full-covariance W2 barycenter.

The paths: one expert; two experts by McCann's geodesic (2 × 2 closed form in Python floats
or on tensors, Cholesky form, polar form); diagonal covariances in closed form; the fixed
point (2 × 2 in Python floats or on tensors, one small problem, warm-started, robust); and
their derivatives (implicit, unrolled, second and third order). Each is held to an answer
computed independently: the commuting closed form :math:`\\Sigma^{1/2} = \\sum_m \\lambda_m
\\Sigma_m^{1/2}` in float64 from the spectra, the fixed-point residual from singular values,
a block-diagonal embedding into three dimensions, central differences, ``gradcheck`` and
``gradgradcheck``; and a row that cannot be solved must say so in its own row and warn.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import pytest
import torch
from helpers import wasserstein_residual
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import random_spd
from torch.distributions import Distribution, Independent, Normal

import barycentric as bc
from barycentric.functional import _two_by_two as two
from barycentric.functional import wasserstein_barycenter_full
from barycentric.linalg import symmetrise

F32, F64 = torch.float32, torch.float64
SEEDS = st.integers(0, 2**32 - 1)
#: Batch sizes that reach the 2 × 2 solvers in Python floats, and on tensors.
BATCHES = [1, two.MAX_PROBLEMS + 1]


def _rotations(generator: torch.Generator, batch: int, d: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(batch, d, d, dtype=F64, generator=generator))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def _mixed_scales(
    seed: int, dtype: torch.dtype, m: int, d: int, batch: int, commuting: bool, rotate: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Experts ``(batch, m, d, d)`` whose scales differ by up to the promised range of
    ``dtype`` (1e-30 to 1e30 in float32, 1e-150 to 1e150 in float64) within a problem, each
    with eigenvalues in a decade of its own scale; weights ``(batch, m)`` spread over up to
    30 (float32) or 250 (float64) orders of magnitude, normalised; and, where ``commuting``,
    the barycenter :math:`Q \\operatorname{diag}((\\sum_m \\lambda_m s_m^{1/2})^2) Q^\\top` in
    float64 (the experts share :math:`Q`, the identity unless ``rotate``)."""
    generator = torch.Generator().manual_seed(seed)
    span, weight_span = (30, 30) if dtype == F32 else (150, 250)
    exponents = torch.randint(-span, span + 1, (batch, m, 1), generator=generator)
    spectra = 10.0 ** (exponents + 2 * torch.rand(batch, m, d, dtype=F64, generator=generator) - 1)
    spectra = spectra.clamp(10.0**-span, 10.0**span)
    if rotate:
        q = _rotations(generator, batch if commuting else batch * m, d)
        q = q.view(batch, 1 if commuting else m, d, d)
    else:
        q = torch.eye(d, dtype=F64).expand(batch, 1, d, d)
    cov = symmetrise((q * spectra.unsqueeze(-2)) @ q.mT)
    magnitudes = torch.rand(batch, m, dtype=F64, generator=generator) * weight_span
    weights = 10.0**-magnitudes * (torch.rand(batch, m, dtype=F64, generator=generator) + 0.1)
    weights = (weights / weights.sum(-1, keepdim=True)).to(dtype)
    if not commuting:
        return cov.to(dtype), weights, None
    root = (weights.double().unsqueeze(-1) * spectra.sqrt()).sum(-2)
    return cov.to(dtype), weights, (q[:, 0] * root.square().unsqueeze(-2)) @ q[:, 0].mT


def _solve(cov, weights, backward: str | None, **options):
    """The barycenter and report, through autograd with ``backward`` (``None``: outside it)."""
    if backward is not None:
        cov = cov.clone().requires_grad_()
    loc = torch.zeros(cov.shape[:-1], dtype=cov.dtype)
    _, bary, info = wasserstein_barycenter_full(
        loc, cov, weights, backward=backward or "implicit", return_info=True, **options
    )
    return bary.detach(), info


@contextlib.contextmanager
def _validating(on: bool):
    """``torch.distributions`` validation switched ``on`` (or off), then restored."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(on)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


@pytest.fixture(params=[True, False], ids=["validated", "unvalidated"])
def validation(request):
    """The test runs with ``torch.distributions`` validation on and off."""
    with _validating(request.param):
        yield request.param


# --- mixed scales within one problem (finding 1) ------------------------------------------


def test_two_experts_twenty_three_orders_apart_in_float32(validation) -> None:
    # the reproducer: the small expert underflows to zero once the problem is
    # normalised, and the 2 × 2 closed form divided by it (ZeroDivisionError; NaN, converged)
    cov = torch.stack([1e-23 * torch.eye(2), 1e23 * torch.eye(2)])
    expected = ((math.sqrt(1e-23) + math.sqrt(1e23)) / 2) ** 2
    for batch in BATCHES:
        _, bary, info = wasserstein_barycenter_full(
            torch.zeros(batch, 2, 2), cov.expand(batch, 2, 2, 2), return_info=True
        )
        assert bool(info.converged.all())
        torch.testing.assert_close(
            bary, expected * torch.eye(2).expand(batch, 2, 2), rtol=1e-6, atol=0
        )
    experts = bc.wasserstein_barycenter(
        torch.distributions.MultivariateNormal(torch.zeros(2, 2), cov)
    )
    torch.testing.assert_close(
        experts.covariance_matrix, expected * torch.eye(2), rtol=1e-6, atol=0
    )
    mixture = bc.mixture_of_barycenters(
        torch.distributions.MultivariateNormal(torch.zeros(2, 2), cov)
    )
    covariances = mixture.component_distribution.covariance_matrix
    torch.testing.assert_close(covariances[-1], expected * torch.eye(2), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("scales", "weights"),
    [
        ((1.0, 1e200), (1.0, 1e-250)),
        ((1e-150, 1e150), (1.0, 1e-250)),
        ((1.0, 1e200, 1.0), (1.0, 1e-20, 1e-30)),
    ],
    ids=["two, 200 orders", "two, 300 orders", "three, a weight of 1 beside 1e-20"],
)
@pytest.mark.parametrize("batch", BATCHES)
def test_float64_experts_far_apart_with_tiny_weights(scales, weights, batch, validation) -> None:
    # 1e-250 of 1e200 moves the root by 1e-150, nothing; 1e-20 of 1e200 moves it by 1e80
    # although the first weight rounds to exactly 1 (it used to return that expert alone).
    # The experts share a shape, rotated off the axes: commuting, not diagonal
    angle = 0.3
    q = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=F64
    )
    shape = symmetrise(q @ torch.diag(torch.tensor([1.0, 4.0], dtype=F64)) @ q.T)
    cov = torch.stack([s * shape for s in scales]).expand(batch, -1, 2, 2)
    w = torch.tensor(weights, dtype=F64)
    root = sum(wi * math.sqrt(s) for wi, s in zip(w / w.sum(), scales, strict=True))
    _, bary, info = wasserstein_barycenter_full(
        torch.zeros(batch, len(scales), 2, dtype=F64), cov, w, return_info=True
    )
    assert bool(info.converged.all())
    torch.testing.assert_close(bary, root**2 * shape.expand(batch, 2, 2), rtol=1e-12, atol=0)


@settings(max_examples=60, deadline=None)
@given(
    seed=SEEDS,
    dtype=st.sampled_from([F32, F64]),
    m=st.integers(1, 4),
    d=st.integers(1, 4),
    batch=st.sampled_from([*BATCHES, 2]),
    rotate=st.booleans(),
    backward=st.sampled_from([None, "implicit", "unroll"]),
    validate=st.booleans(),
)
@example(seed=0, dtype=F32, m=2, d=2, batch=1, rotate=False, backward=None, validate=True)
@example(seed=0, dtype=F64, m=3, d=2, batch=5, rotate=True, backward=None, validate=False)
def test_mixed_scales_match_the_commuting_closed_form(
    seed, dtype, m, d, batch, rotate, backward, validate
) -> None:
    cov, weights, expected = _mixed_scales(seed, dtype, m, d, batch, True, rotate)
    with warnings.catch_warnings(), _validating(validate):
        warnings.simplefilter("error")
        bary, info = _solve(cov, weights, backward)
    assert bary.dtype == dtype and bool(info.converged.all())
    error = torch.linalg.matrix_norm(bary.double() - expected) / torch.linalg.matrix_norm(expected)
    assert float(error.max()) <= (1e-4 if dtype == F32 else 1e-9)


@settings(max_examples=40, deadline=None)
@given(
    seed=SEEDS,
    dtype=st.sampled_from([F32, F64]),
    m=st.integers(2, 4),
    d=st.integers(2, 4),
    batch=st.sampled_from(BATCHES),
    backward=st.sampled_from([None, "implicit", "unroll"]),
    validate=st.booleans(),
)
def test_mixed_scales_that_do_not_commute_reach_the_fixed_point(
    seed, dtype, m, d, batch, backward, validate
) -> None:
    cov, weights, _ = _mixed_scales(seed, dtype, m, d, batch, False, True)
    with warnings.catch_warnings(), _validating(validate):
        warnings.simplefilter("error")
        bary, info = _solve(cov, weights, backward)
    assert bool(info.converged.all())
    residual = wasserstein_residual(bary.double(), cov.double(), weights.double())
    assert float(residual.max()) <= (1e-4 if dtype == F32 else 1e-9)


# --- rows that cannot be solved, with validation off (finding 6) ---------------------------


def _experts(batch: int, m: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    cov = random_spd(torch.Generator().manual_seed(7), d, (batch, m), 1e2)
    return torch.zeros(batch, m, d, dtype=F64), cov


@pytest.mark.usefixtures("validation_disabled")
@pytest.mark.parametrize("how", ["nan", "inf"])
@pytest.mark.parametrize(
    ("m", "d", "diagonal"),
    [(1, 2, False), (1, 3, False), (2, 2, False), (2, 3, False), (3, 3, True)],
    ids=["one expert 2x2", "one expert 3x3", "McCann 2x2", "McCann 3x3", "diagonal"],
)
@pytest.mark.parametrize("batch", [3, two.MAX_PROBLEMS + 2])
def test_a_row_that_is_not_finite_is_flagged_on_the_closed_forms(m, d, diagonal, how, batch):
    loc, cov = _experts(batch, m, d)
    if diagonal:
        cov = torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    cov[1, 0, 0, 0] = float(how)
    with pytest.warns(RuntimeWarning, match=f"did not converge for 1 of {batch} problems"):
        _, bary, info = wasserstein_barycenter_full(loc, cov, return_info=True)
    assert info.converged.tolist() == [row != 1 for row in range(batch)]
    assert info.residual[1] == torch.inf and not bool(torch.isfinite(bary[1]).all())
    others = [row for row in range(batch) if row != 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, alone = wasserstein_barycenter_full(loc[others], cov[others])
    torch.testing.assert_close(bary[others], alone, rtol=1e-13, atol=0)


@pytest.mark.usefixtures("validation_disabled")
def test_a_diagonal_row_that_is_not_finite_is_flagged() -> None:
    scale = torch.rand(3, 2, 4, dtype=F64, generator=torch.Generator().manual_seed(3)) + 0.5
    scale[2, 1, 3] = torch.inf
    experts = Independent(Normal(torch.zeros(3, 2, 4, dtype=F64), scale), 1)
    with pytest.warns(RuntimeWarning, match="did not converge for 1 of 3 problems"):
        q, info = bc.wasserstein_barycenter(experts, return_info=True)
    assert info.converged.tolist() == [True, True, False] and info.residual[2] == torch.inf
    torch.testing.assert_close(q.stddev[:2], scale[:2].mean(-2), rtol=1e-15, atol=0)


@pytest.mark.usefixtures("validation_disabled")
@pytest.mark.parametrize("expert", ["zero", "minus identity"])
@pytest.mark.parametrize("batch", [1, two.MAX_PROBLEMS, two.MAX_PROBLEMS + 1])
def test_a_singular_or_indefinite_expert_takes_down_no_two_by_two_problem(expert, batch) -> None:
    # ≤ 4 problems are solved in Python floats, where the root of a zero or -I expert
    # divided by zero and raised for the whole batch. The row is answered as in 3-D (the
    # problems embedded block-diagonally beside an independent unit variance), where the
    # root of -I is that of its positive part, 0: the geodesic from the heavier expert
    # towards 0 is ((1 - t) Σ₂^½)² = 0.7² Σ₂ (3-D roots of singular matrices are good to √ε)
    loc, cov = _experts(batch, 2, 2)
    cov[0, 0] = 0.0 if expert == "zero" else -torch.eye(2, dtype=F64)
    weights = torch.tensor([0.3, 0.7], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, bary, info = wasserstein_barycenter_full(loc, cov, weights, return_info=True)
        embedded = torch.eye(3, dtype=F64).repeat(batch, 2, 1, 1)
        embedded[..., :2, :2] = cov
        _, reference = wasserstein_barycenter_full(loc.new_zeros(batch, 2, 3), embedded, weights)
    assert bool(info.converged.all())
    torch.testing.assert_close(bary, reference[..., :2, :2], rtol=1e-7, atol=0)
    torch.testing.assert_close(bary[0], 0.7**2 * cov[0, 1], rtol=1e-14, atol=0)


# --- unrolled derivatives at commuting covariances (finding 4) -----------------------------


def _commuting_experts(seed: int, m: int, d: int, rotate: bool, offset: float = 0.0):
    """``m`` covariances ``(m, d, d)`` sharing their eigenvectors (the axes unless
    ``rotate``), eigenvalues log-uniform in [0.1, 10], plus ``offset`` times a symmetric
    Gaussian matrix each (near-commuting); and unnormalised weights ``(m,)``."""
    generator = torch.Generator().manual_seed(seed)
    spectra = 10 ** (2 * torch.rand(m, d, dtype=F64, generator=generator) - 1)
    q = _rotations(generator, 1, d)[0] if rotate else torch.eye(d, dtype=F64)
    cov = (q * spectra.unsqueeze(-2)) @ q.T
    noise = symmetrise(torch.randn(m, d, d, dtype=F64, generator=generator))
    weights = torch.rand(m, dtype=F64, generator=generator) + 0.2
    return symmetrise(cov + offset * noise), weights


def _barycenter(weights: torch.Tensor, backward: str, **options):
    """``cov -> Σ*`` (symmetrised, so that gradcheck's perturbations stay covariances)."""

    def barycenter(cov: torch.Tensor) -> torch.Tensor:
        loc = torch.zeros(cov.shape[:-1], dtype=F64)
        return wasserstein_barycenter_full(
            loc, symmetrise(cov), weights, backward=backward, **{"tol": 1e-13, **options}
        )[1]

    return barycenter


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
@pytest.mark.parametrize(
    ("m", "d", "rotate"), [(3, 3, False), (3, 3, True), (4, 2, False), (2, 3, False)]
)
def test_gradcheck_at_diagonal_and_commuting_covariances(m, d, rotate, backward) -> None:
    # the exact start (Σ λ Σ_m^½)² used to end the unrolled iteration at once, with the
    # derivative of the commuting closed form: 12 % off in the other directions
    cov, weights = _commuting_experts(m, m, d, rotate)
    assert torch.autograd.gradcheck(_barycenter(weights, backward), (cov.requires_grad_(),))


@settings(max_examples=25, deadline=None)
@given(
    seed=SEEDS,
    m=st.integers(3, 4),
    d=st.integers(2, 4),
    rotate=st.booleans(),
    offset=st.sampled_from([0.0, 1e-12, 1e-8, 1e-4, 1e-2]),
)
def test_both_backwards_agree_with_central_differences_near_commuting_covariances(
    seed, m, d, rotate, offset
) -> None:
    cov, weights = _commuting_experts(seed, m, d, rotate, offset)
    generator = torch.Generator().manual_seed(seed + 1)
    probe = torch.randn(d, d, dtype=F64, generator=generator)
    direction = symmetrise(torch.randn(m, d, d, dtype=F64, generator=generator))

    def loss(c: torch.Tensor, backward: str = "implicit") -> torch.Tensor:
        return (_barycenter(weights, backward)(c) * probe).sum()

    step = 1e-5
    difference = float(
        8 * (loss(cov + step * direction) - loss(cov - step * direction))
        - (loss(cov + 2 * step * direction) - loss(cov - 2 * step * direction))
    ) / (12 * step)
    gradients = {}
    for backward in ("implicit", "unroll"):
        c = cov.clone().requires_grad_()
        (gradients[backward],) = torch.autograd.grad(loss(c, backward), c)
        assert abs(float((gradients[backward] * direction).sum()) - difference) <= 1e-7 * (
            1 + abs(difference)
        )
    scale = float(torch.linalg.vector_norm(gradients["implicit"]))
    assert (
        float(torch.linalg.vector_norm(gradients["unroll"] - gradients["implicit"])) <= 1e-9 * scale
    )


# --- second and third derivatives (finding 5) ----------------------------------------------


def _sixty_degrees_apart(condition: float = 1e6) -> tuple[torch.Tensor, torch.Tensor]:
    """Three 2 × 2 experts of condition number ``condition``, their axes 60° apart: at 1e6
    the plain adjoint iteration needs far more than 100 steps, and the roots are beyond the
    closed form's rule at the default ``tol``."""

    def rotation(angle: float) -> torch.Tensor:
        c, s = math.cos(angle), math.sin(angle)
        return torch.tensor([[c, -s], [s, c]], dtype=F64)

    spectrum = torch.diag(torch.tensor([condition**0.5, condition**-0.5], dtype=F64))
    angles = (0.0, math.pi / 3, 2 * math.pi / 3)
    cov = torch.stack([rotation(a) @ spectrum @ rotation(a).T for a in angles])
    return symmetrise(cov), torch.tensor([0.2, 0.3, 0.5], dtype=F64)


def test_second_derivatives_of_an_ill_conditioned_problem_are_not_truncated() -> None:
    # under create_graph the adjoint used to be the plain iteration, stopped at max_iter
    # without a warning: the gradient itself moved by 5e-3 and the Hessian-vector product
    # was 0.8 % off
    cov, weights = _sixty_degrees_apart()
    probe = torch.tensor([[1.0, 0.3], [0.3, 2.0]], dtype=F64)
    direction = symmetrise(
        torch.randn(3, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    )
    barycenter = _barycenter(weights, "implicit", tol=1e-12)

    def gradient(c: torch.Tensor, create_graph: bool) -> torch.Tensor:
        c = c if create_graph else c.detach().requires_grad_()
        return torch.autograd.grad((barycenter(c) * probe).sum(), c, create_graph=create_graph)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = cov.clone().requires_grad_()
        with_graph = gradient(x, True)
        (hvp,) = torch.autograd.grad((with_graph * direction).sum(), x)
        plain = gradient(cov, False)
        torch.testing.assert_close(with_graph.detach(), plain, rtol=1e-10, atol=0)
        step = 1e-6

        def shifted(k: int) -> torch.Tensor:
            return gradient(cov + k * step * direction, False)

        difference = (8 * (shifted(1) - shifted(-1)) - (shifted(2) - shifted(-2))) / (12 * step)
    error = torch.linalg.vector_norm(hvp - difference) / torch.linalg.vector_norm(difference)
    assert float(error) <= 1e-6


@settings(max_examples=6, deadline=None)
@given(
    seed=SEEDS,
    backward=st.sampled_from(["implicit", "unroll"]),
    rotate=st.booleans(),
    offset=st.sampled_from([0.0, 1e-6, 1e-2]),
    tol=st.sampled_from([1e-13, 1e-12]),
)
@example(seed=1, backward="implicit", rotate=False, offset=0.0, tol=1e-12)
def test_gradgradcheck_at_and_near_commuting_covariances(seed, backward, rotate, offset, tol):
    # tol 1e-12 takes the closed-form adjoint and its transpose (these roots, of condition
    # below 17, are certified), 1e-13 autograd's products of the map. The first derivative
    # is right to about tol, and gradgradcheck's differences of it (step 1e-6) to about
    # tol / 1e-6: at tol 1e-10 they were 1e-4 off on an AMD EPYC, so atol 1e-5 with tol
    # at most 1e-12 (the unroll bug this guards against was 12.8 % off)
    cov, weights = _commuting_experts(seed, 3, 2, rotate, offset)
    barycenter = _barycenter(weights, backward, tol=tol)
    assert torch.autograd.gradgradcheck(barycenter, (cov.requires_grad_(),), atol=1e-5)


def test_third_derivative_matches_central_differences_of_the_second() -> None:
    # the derivative of the adjoint is itself implicit, so every order is right to tol; the
    # plain iteration recorded before stopped at max_iter here, 1e-3 off
    cov, weights = _sixty_degrees_apart()
    generator = torch.Generator().manual_seed(5)
    probe = symmetrise(torch.randn(2, 2, dtype=F64, generator=generator))
    direction = symmetrise(torch.randn(3, 2, 2, dtype=F64, generator=generator))
    barycenter = _barycenter(weights, "implicit", tol=1e-12)

    def second(c: torch.Tensor, create_graph: bool) -> torch.Tensor:
        c = c if create_graph else c.detach().requires_grad_()
        (first,) = torch.autograd.grad((barycenter(c) * probe).sum(), c, create_graph=True)
        (hvp,) = torch.autograd.grad((first * direction).sum(), c, create_graph=create_graph)
        return (hvp * direction).sum()

    x = cov.clone().requires_grad_()
    (third,) = torch.autograd.grad(second(x, True), x)
    step = 1e-5  # the five-point difference's truncation is about 2e-7 of it here

    def shifted(k: int) -> float:
        return float(second(cov + k * step * direction, False))

    difference = (8 * (shifted(1) - shifted(-1)) - (shifted(2) - shifted(-2))) / (12 * step)
    assert abs(float((third * direction).sum()) - difference) <= 1e-5 * abs(difference)


@pytest.mark.parametrize("create_graph", [False, True])
def test_an_adjoint_that_stops_short_of_tol_warns(create_graph: bool) -> None:
    # commuting experts: the forward ends at its first step, the adjoint needs several
    cov, weights = _commuting_experts(1, 3, 3, True)
    c = cov.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bary = _barycenter(weights, "implicit", max_iter=2, tol=1e-12)(c)
    with pytest.warns(RuntimeWarning, match="adjoint iteration did not reach tol 1.0e-12 in 2"):
        torch.autograd.grad(bary.sum(), c, create_graph=create_graph)
