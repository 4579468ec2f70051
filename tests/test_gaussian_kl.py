"""KL barycenters of Gaussians: closed forms, the variational property, invariances, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import (
    diagonal,
    full,
    mixture_moments,
    perturbed_covariances,
    validation,  # noqa: F401 (a fixture)
    weighted_kl,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import (
    diag_gaussian_params,
    full_gaussian_params,
    random_diag_gaussian,
    random_full_gaussian,
    random_spd,
    random_weights,
    weights,
)
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import barycentric as bc
from barycentric.functional import (
    forward_kl_moments_diag,
    forward_kl_moments_full,
    reverse_kl_barycenter_diag,
    reverse_kl_barycenter_full,
)

M, D = 3, 2


# --- closed forms against hand computations -------------------------------------------


def test_reverse_diag_matches_hand_computation() -> None:
    loc = torch.tensor([[0.0], [3.0]], dtype=torch.float64)
    scale = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    mean, std = reverse_kl_barycenter_diag(loc, scale, torch.tensor([1.0, 3.0]))
    # precision 1/4·1 + 3/4·1/4 = 7/16; mean (16/7)(3/4·1/4·3) = 9/7
    torch.testing.assert_close(std, torch.tensor([4 / 7**0.5], dtype=torch.float64))
    torch.testing.assert_close(mean, torch.tensor([9 / 7], dtype=torch.float64))


def test_reverse_full_matches_hand_computation(generator) -> None:
    loc, cov = random_full_gaussian(generator, D, M, condition=1e3)
    w = np.array([0.2, 0.3, 0.5])
    precisions = [np.linalg.inv(c) for c in cov.numpy()]
    precision = sum(wi * p for wi, p in zip(w, precisions, strict=True))
    expected_cov = np.linalg.inv(precision)
    information = sum(wi * p @ mu for wi, p, mu in zip(w, precisions, loc.numpy(), strict=True))
    mean, bary = reverse_kl_barycenter_full(loc, cov, torch.from_numpy(w))
    np.testing.assert_allclose(bary.numpy(), expected_cov, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mean.numpy(), expected_cov @ information, rtol=1e-9, atol=1e-12)


def test_forward_diag_equals_torch_mixture_moments(generator) -> None:
    loc, scale = random_diag_gaussian(generator, D, (4, M))
    w = random_weights(generator, M, 4, zeros=True)
    mixture = MixtureSameFamily(Categorical(probs=w), diagonal(loc, scale))
    mean, std = forward_kl_moments_diag(loc, scale, w)
    torch.testing.assert_close(mean, mixture.mean)
    torch.testing.assert_close(std.square(), mixture.variance)


def test_forward_full_equals_total_covariance(generator) -> None:
    loc, cov = random_full_gaussian(generator, D, M, condition=1e4)
    w = random_weights(generator, M)
    expected_mean, expected_cov = mixture_moments(loc, cov, w)
    mean, bary = forward_kl_moments_full(loc, cov, w)
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(bary, expected_cov)


def test_forward_mixture_log_prob_is_weighted_logsumexp(generator) -> None:
    loc, cov = random_full_gaussian(generator, D, (2, M))
    w = random_weights(generator, M, 2, zeros=True)
    x = torch.randn(5, 2, D, generator=generator, dtype=torch.float64)
    mixture = bc.kl_barycenter(full(loc, cov), w, direction="forward")
    components = torch.stack([full(loc[:, m], cov[:, m]).log_prob(x) for m in range(M)], -1)
    expected = torch.logsumexp(components + (w / w.sum(-1, keepdim=True)).log(), -1)
    torch.testing.assert_close(mixture.log_prob(x), expected)


@pytest.mark.parametrize("kernel", ["reverse", "forward"])
def test_diagonal_kernel_equals_full_kernel_on_diagonal_covariances(kernel, generator) -> None:
    loc, scale = random_diag_gaussian(generator, D, (2, M))
    w = random_weights(generator, M, 2, zeros=True)
    diag_kernel, full_kernel = {
        "reverse": (reverse_kl_barycenter_diag, reverse_kl_barycenter_full),
        "forward": (forward_kl_moments_diag, forward_kl_moments_full),
    }[kernel]
    mean_d, std_d = diag_kernel(loc, scale, w)
    mean_f, cov_f = full_kernel(loc, torch.diag_embed(scale.square()), w)
    torch.testing.assert_close(mean_d, mean_f)
    torch.testing.assert_close(torch.diag_embed(std_d.square()), cov_f)


# --- the barycenters minimise their objectives -----------------------------------------


def _assert_minimises_diag(params, w, direction) -> None:
    loc, scale = params
    kernel = reverse_kl_barycenter_diag if direction == "reverse" else forward_kl_moments_diag
    mean, std = kernel(loc, scale, w)
    experts = diagonal(loc, scale)
    best = weighted_kl(diagonal(mean, std), experts, w, direction)
    generator = torch.Generator().manual_seed(0)
    for step in (1e-3, 1e-2, 1e-1):
        shift = step * torch.randn(8, D, generator=generator, dtype=torch.float64)
        stretch = torch.exp(step * torch.randn(8, D, generator=generator, dtype=torch.float64))
        worse = weighted_kl(diagonal(mean + shift * std, std * stretch), experts, w, direction)
        assert bool((worse >= best - 1e-12 * (1 + best.abs())).all())


@given(diag_gaussian_params(D, M), weights(M), st.sampled_from(["reverse", "forward"]))
def test_diag_barycenter_minimises_weighted_kl(params, w, direction) -> None:
    _assert_minimises_diag(params, w, direction)


@given(
    full_gaussian_params(D, M, max_condition=1e6),
    weights(M),
    st.sampled_from(["reverse", "forward"]),
)
def test_full_barycenter_minimises_weighted_kl(params, w, direction) -> None:
    loc, cov = params
    kernel = reverse_kl_barycenter_full if direction == "reverse" else forward_kl_moments_full
    mean, bary = kernel(loc, cov, w)
    experts = full(loc, cov)
    best = weighted_kl(full(mean, bary), experts, w, direction)
    generator = torch.Generator().manual_seed(0)
    chol = torch.linalg.cholesky(bary)
    for step in (1e-3, 1e-2, 1e-1):
        shift = step * torch.randn(8, D, 1, generator=generator, dtype=torch.float64)
        covs = perturbed_covariances(bary, generator, 8, step)
        worse = weighted_kl(full(mean + (chol @ shift).squeeze(-1), covs), experts, w, direction)
        assert bool((worse >= best - 1e-9 * (1 + best.abs())).all())


def test_reverse_objective_is_stationary_at_the_barycenter(generator) -> None:
    loc, cov = random_full_gaussian(generator, D, M, condition=1e3)
    w = random_weights(generator, M)
    mean, bary = reverse_kl_barycenter_full(loc, cov, w)
    mean, bary = mean.requires_grad_(), bary.clone().requires_grad_()
    objective = weighted_kl(full(mean, bary), full(loc, cov), w, "reverse")
    grad_mean, grad_cov = torch.autograd.grad(objective, (mean, bary))
    torch.testing.assert_close(grad_mean, torch.zeros_like(grad_mean), atol=1e-9, rtol=0)
    torch.testing.assert_close(grad_cov, torch.zeros_like(grad_cov), atol=1e-7, rtol=0)


# --- invariances ------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [reverse_kl_barycenter_full, forward_kl_moments_full])
def test_equal_experts_return_the_expert(kernel, generator) -> None:
    loc, cov = random_full_gaussian(generator, D, condition=1e5)
    w = random_weights(generator, M)
    mean, bary = kernel(loc.expand(M, D), cov.expand(M, D, D), w)
    torch.testing.assert_close(mean, loc)
    torch.testing.assert_close(bary, cov, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kernel", [reverse_kl_barycenter_diag, forward_kl_moments_diag])
def test_equal_diag_experts_return_the_expert(kernel, generator) -> None:
    loc, scale = random_diag_gaussian(generator, D)
    mean, std = kernel(loc.expand(M, D), scale.expand(M, D), random_weights(generator, M))
    torch.testing.assert_close(mean, loc)
    torch.testing.assert_close(std, scale)


@given(
    full_gaussian_params(D, M),
    weights(M),
    st.permutations(range(M)),
    st.sampled_from([reverse_kl_barycenter_full, forward_kl_moments_full]),
)
def test_full_permutation_invariance(params, w, order, kernel) -> None:
    loc, cov = params
    expected = kernel(loc, cov, w)
    permuted = kernel(loc[list(order)], cov[list(order)], w[list(order)])
    for got, want in zip(permuted, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


@given(
    diag_gaussian_params(D, M),
    weights(M),
    st.permutations(range(M)),
    st.sampled_from([reverse_kl_barycenter_diag, forward_kl_moments_diag]),
)
def test_diag_permutation_invariance(params, w, order, kernel) -> None:
    loc, scale = params
    expected = kernel(loc, scale, w)
    permuted = kernel(loc[list(order)], scale[list(order)], w[list(order)])
    for got, want in zip(permuted, expected, strict=True):
        torch.testing.assert_close(got, want)


@given(
    full_gaussian_params(D, M, max_condition=1e4),
    weights(M),
    st.lists(st.floats(-100, 100), min_size=D, max_size=D),
    st.sampled_from([reverse_kl_barycenter_full, forward_kl_moments_full]),
)
def test_full_translation_equivariance(params, w, shift, kernel) -> None:
    loc, cov = params
    shift = torch.tensor(shift, dtype=torch.float64)
    mean, bary = kernel(loc, cov, w)
    moved_mean, moved_bary = kernel(loc + shift, cov, w)
    torch.testing.assert_close(moved_mean, mean + shift, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(moved_bary, bary)


@given(
    diag_gaussian_params(D, M),
    weights(M),
    st.lists(st.floats(-100, 100), min_size=D, max_size=D),
    st.sampled_from([reverse_kl_barycenter_diag, forward_kl_moments_diag]),
)
def test_diag_translation_equivariance(params, w, shift, kernel) -> None:
    loc, scale = params
    shift = torch.tensor(shift, dtype=torch.float64)
    mean, std = kernel(loc, scale, w)
    moved_mean, moved_std = kernel(loc + shift, scale, w)
    torch.testing.assert_close(moved_mean, mean + shift, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(moved_std, std)


KERNELS = [
    reverse_kl_barycenter_diag,
    forward_kl_moments_diag,
    reverse_kl_barycenter_full,
    forward_kl_moments_full,
]


def _random_experts(kernel, generator, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` or ``(loc, cov)`` of random experts for ``kernel``."""
    if kernel in (reverse_kl_barycenter_diag, forward_kl_moments_diag):
        return random_diag_gaussian(generator, D, batch)
    return random_full_gaussian(generator, D, batch)


@pytest.mark.parametrize("kernel", KERNELS)
def test_batched_equals_loop_and_weights_broadcast(kernel, generator) -> None:
    batch = (2, 3)
    loc, spread = _random_experts(kernel, generator, (*batch, M))
    w = random_weights(generator, M, (3,), zeros=True)  # broadcasts over the first axis
    mean, bary = kernel(loc, spread, w)
    for i in range(batch[0]):
        for j in range(batch[1]):
            mean_ij, bary_ij = kernel(loc[i, j], spread[i, j], w[j])
            torch.testing.assert_close(mean[i, j], mean_ij)
            torch.testing.assert_close(bary[i, j], bary_ij)


@pytest.mark.parametrize("kernel", KERNELS)
def test_empty_batch_gives_empty_results(kernel, generator) -> None:
    loc, spread = _random_experts(kernel, generator, (2, M))
    w = random_weights(generator, M, 2)
    for whole, empty in zip(
        kernel(loc, spread, w), kernel(loc[:0], spread[:0], w[:0]), strict=True
    ):
        assert empty.shape == (0, *whole.shape[1:])
        torch.testing.assert_close(torch.cat([empty, whole]), whole)


def test_uniform_default_and_normalisation(generator) -> None:
    loc, cov = random_full_gaussian(generator, D, M)
    for kernel in (reverse_kl_barycenter_full, forward_kl_moments_full):
        uniform = kernel(loc, cov)
        scaled = kernel(loc, cov, torch.full((M,), 7.0, dtype=torch.float64))
        for got, want in zip(scaled, uniform, strict=True):
            torch.testing.assert_close(got, want)


# --- gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [reverse_kl_barycenter_diag, forward_kl_moments_diag])
def test_gradcheck_diag(kernel, generator) -> None:
    loc, scale = random_diag_gaussian(generator, D, M)
    w = random_weights(generator, M)
    inputs = (loc.requires_grad_(), scale.requires_grad_(), w.requires_grad_())
    assert torch.autograd.gradcheck(kernel, inputs)


@pytest.mark.parametrize("kernel", [reverse_kl_barycenter_full, forward_kl_moments_full])
def test_gradcheck_full(kernel, generator) -> None:
    loc, cov = random_full_gaussian(generator, D, M, condition=10.0)
    w = random_weights(generator, M)

    def from_factor(loc, factor, w):
        # A symmetric parametrisation: gradcheck's one-sided perturbations keep cov SPD.
        return kernel(loc, factor @ factor.mT, w)

    factor = torch.linalg.cholesky(cov)
    inputs = (loc.requires_grad_(), factor.requires_grad_(), w.requires_grad_())
    assert torch.autograd.gradcheck(from_factor, inputs)


# --- the dtype's whole range -------------------------------------------------------------


def _diag_paths(loc: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every diagonal KL path on ``loc, scale (M, d)`` (the mixtures with expert 1 masked),
    means and standard deviations stacked."""
    dist = Independent(Normal(loc, scale), 1)
    product = bc.product_of_experts(dist).base_dist
    out = {
        "reverse": reverse_kl_barycenter_diag(loc, scale, torch.tensor([1.0, 2.0, 3.0])),
        "forward": forward_kl_moments_diag(loc, scale, torch.tensor([1.0, 2.0, 3.0])),
        "product": (product.loc, product.scale),
    }
    for divergence in ("reverse_kl", "forward_kl"):
        mask = torch.tensor([True, False, True])
        mix = bc.mixture_of_barycenters(dist, "all", divergence=divergence, mask=mask)
        kept = mix.mixture_distribution.probs > 0  # not the placeholder N(0, I) of {1}
        out[divergence] = tuple(x[kept] for x in _loc_scale(mix))
    return {name: torch.stack(pair) for name, pair in out.items()}


def _loc_scale(mixture: MixtureSameFamily) -> tuple[torch.Tensor, torch.Tensor]:
    components = mixture.component_distribution.base_dist
    return components.loc, components.scale


@pytest.mark.parametrize("exponent", [-120, -100, -64, 64, 100, 120])
def test_diag_kl_paths_are_exactly_scale_equivariant_across_float32s_range(exponent) -> None:
    # σ^-2 and σ² of these standard deviations lie outside float32's range (they overflowed
    # or underflowed before the paths took them relative to a power of two)
    loc = torch.tensor([[0.0, 1.0], [3.0, -2.0], [1.0, 0.5]])
    scale = torch.tensor([[1.0, 0.5], [2.0, 4.0], [0.75, 3.0]])
    unit, factor = _diag_paths(loc, scale), 2.0**exponent
    scaled = _diag_paths(loc * factor, scale * factor)
    for name, expected in unit.items():
        assert torch.isfinite(scaled[name]).all(), name
        torch.testing.assert_close(scaled[name] / factor, expected, rtol=2e-7, atol=0, msg=name)


def test_reverse_diag_of_tiny_and_huge_standard_deviations_matches_float64() -> None:
    loc = torch.tensor([[0.0], [1.0]])
    for scale in (1e-20, 1e-30, 1e20, 1e30):
        std = torch.tensor([[1.0], [2.0]]) * scale
        mean, pooled = reverse_kl_barycenter_diag(loc, std)
        reference = reverse_kl_barycenter_diag(loc.double(), std.double() / scale)
        torch.testing.assert_close(mean, reference[0].float())
        torch.testing.assert_close(pooled / scale, reference[1].float())


@pytest.mark.parametrize("exponent", [-140, -60, 60, 126])
def test_weights_scaled_by_a_power_of_two_change_no_digit(exponent, generator) -> None:
    # the sum of the weights of 2^126 and 3·2^126 overflows float32: normalising first by a
    # power of two near the largest keeps every kernel exactly scale-invariant in its weights
    loc, scale = torch.randn(3, 2, generator=generator), torch.rand(3, 2, generator=generator) + 0.5
    cov = torch.diag_embed(scale.square()) + 0.1
    weights = torch.tensor([1.0, 3.0, 1.0])
    dist = Independent(Normal(loc, scale), 1)
    kernels = {
        "reverse diag": lambda w: reverse_kl_barycenter_diag(loc, scale, w),
        "forward diag": lambda w: forward_kl_moments_diag(loc, scale, w),
        "reverse full": lambda w: reverse_kl_barycenter_full(loc, cov, w),
        "forward full": lambda w: forward_kl_moments_full(loc, cov, w),
        "wasserstein diag": lambda w: bc.functional.wasserstein_barycenter_diag(loc, scale, w),
        "wasserstein full": lambda w: bc.functional.wasserstein_barycenter_full(loc, cov, w),
        **{
            f"mixture {d}": lambda w, d=d: _loc_scale(
                bc.mixture_of_barycenters(dist, "all", divergence=d, weights=w)
            )
            for d in ("wasserstein", "reverse_kl", "forward_kl")
        },
    }
    for name, kernel in kernels.items():
        for expected, got in zip(kernel(weights), kernel(weights * 2.0**exponent), strict=True):
            assert torch.equal(got, expected), name


# --- means and standard deviations at independent scales ---------------------------------


def _mixed_scales(seed: int, full_cov: bool) -> tuple[torch.Tensor, ...]:
    """float64 experts ``loc (2, M + 1, D)`` and standard deviations ``(2, M + 1, D)`` or
    covariances (condition 1e2), with magnitudes mixed over six decades from expert to
    expert (the last expert serves as a prior), and weights ``(2, M)`` with zeros."""
    generator = torch.Generator().manual_seed(seed)
    shape = (2, M + 1)
    magnitude = 10.0 ** (6 * torch.rand(*shape, 1, generator=generator, dtype=torch.float64) - 3)
    loc = torch.randn(*shape, D, generator=generator, dtype=torch.float64) * magnitude
    if full_cov:
        spread = random_spd(generator, D, shape) * 10.0 ** (
            4 * torch.rand(*shape, 1, 1, generator=generator, dtype=torch.float64) - 2
        )
    else:
        spread = 10.0 ** (6 * torch.rand(*shape, D, generator=generator, dtype=torch.float64) - 3)
    return loc, spread, random_weights(generator, M, 2, zeros=True)


def _pooled(loc, spread, w, full_cov: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision pooling written out in float64 from the inverses: ``Λ = Σ w Σ⁻¹``."""
    cov = spread if full_cov else torch.diag_embed(spread.square())
    precisions = torch.linalg.inv(cov)
    precision = (w[..., None, None] * precisions).sum(-3)
    information = (w[..., None] * (precisions @ loc.unsqueeze(-1))[..., 0]).sum(-2)
    pooled = torch.linalg.inv(precision)
    mean = (pooled @ information.unsqueeze(-1))[..., 0]
    return mean, pooled if full_cov else torch.diagonal(pooled, dim1=-2, dim2=-1).sqrt()


def _moments(loc, spread, w, full_cov: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Moment matching written out in float64."""
    w = w / w.sum(-1, keepdim=True)
    mean = (w[..., None] * loc).sum(-2)
    centred = loc - mean.unsqueeze(-2)
    if full_cov:
        spread = spread + centred.unsqueeze(-1) * centred.unsqueeze(-2)
        return mean, (w[..., None, None] * spread).sum(-3)
    return mean, (w[..., None] * (spread.square() + centred.square())).sum(-2).sqrt()


def _mixed_scale_case(name: str, w: torch.Tensor, full_cov: bool):
    """``(path, reference)`` for the KL path ``name``: functions of ``(loc, spread)`` of
    ``M + 1`` experts (the last one unused, or the prior of the product of experts)."""
    if name == "reverse_kl":
        kernel = reverse_kl_barycenter_full if full_cov else reverse_kl_barycenter_diag
        return (
            lambda loc, spread: kernel(loc[:, :M], spread[:, :M], w.to(loc.dtype)),
            lambda loc, spread: _pooled(loc[:, :M], spread[:, :M], w / w.sum(-1, True), full_cov),
        )
    if name == "forward_kl":
        kernel = forward_kl_moments_full if full_cov else forward_kl_moments_diag
        return (
            lambda loc, spread: kernel(loc[:, :M], spread[:, :M], w.to(loc.dtype)),
            lambda loc, spread: _moments(loc[:, :M], spread[:, :M], w, full_cov),
        )
    present = w > 0
    build = full if full_cov else diagonal

    def product(loc, spread):
        prior = build(loc[:, M], spread[:, M])
        dist = bc.product_of_experts(build(loc[:, :M], spread[:, :M]), mask=present, prior=prior)
        return (dist.loc, dist.covariance_matrix) if full_cov else (dist.mean, dist.base_dist.scale)

    # the product's weights are 1 for the present experts and the prior
    ones = torch.cat([present, torch.ones(2, 1, dtype=torch.bool)], -1).to(w.dtype)
    return product, lambda loc, spread: _pooled(loc, spread, ones, full_cov)


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize("full_cov", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("name", ["reverse_kl", "product_of_experts", "forward_kl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@given(
    seed=st.integers(0, 2**32 - 1),
    mean_exponent=st.floats(-1.0, 1.0),
    scale_exponent=st.floats(-1.0, 1.0),
)
@example(seed=0, mean_exponent=100 / 112, scale_exponent=-21 / 112)  # σ⁻² μ above 1e40
@settings(
    max_examples=12,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_kl_paths_are_right_wherever_representable(
    name, full_cov, dtype, seed, mean_exponent, scale_exponent
) -> None:
    # the precision-weighted means σ⁻² μ overflowed (float32 means of 1e21 with standard
    # deviations of 1e-9 gave inf): checked against the float64 formulas at a moderate
    # scale and the closed-form scaling of the result, means by 2^a, deviations by 2^b
    loc, spread, w = _mixed_scales(seed, full_cov)
    path, reference = _mixed_scale_case(name, w, full_cov)
    # the largest exponents that keep every input normal and every result finite: means to
    # 2^12, deviations (and the forward moments') 2^-10 to 2^13, covariances to 2^26
    top = math.frexp(torch.finfo(dtype).max)[1]
    a = round(mean_exponent * (top - 16))
    b = round(scale_exponent * ((top - 28) // 2 if full_cov else top - 16))
    if name == "forward_kl":
        a = b  # the moments mix means and deviations: they scale only together
    moderate = (loc.to(dtype).double(), spread.to(dtype).double())
    expected_mean, expected_spread = reference(*moderate)
    spread_unit = 2.0 ** ((2 if full_cov else 1) * b)
    mean, found_spread = path(
        (moderate[0] * 2.0**a).to(dtype), (moderate[1] * spread_unit).to(dtype)
    )
    assert torch.isfinite(mean).all() and torch.isfinite(found_spread).all()
    eps = (1e3 if full_cov else 64) * torch.finfo(dtype).eps
    # a mean is a weighted average: its round-off is relative to the largest mean's
    error = (mean.double() / 2.0**a - expected_mean).abs()
    assert (error <= eps * moderate[0].abs().amax((-2, -1)).unsqueeze(-1)).all()
    torch.testing.assert_close(
        found_spread.double() / spread_unit,
        expected_spread,
        rtol=eps,
        atol=eps * expected_spread.abs().amax().item(),
    )


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize("full_cov", [False, True], ids=["diag", "full"])
def test_huge_means_of_tiny_scales_pool_to_their_mean(full_cov) -> None:
    # the report: float32 means of 1e21 with standard deviations of 1e-9 gave inf
    loc = torch.full((M, D), 1e21)
    scale = torch.full((M, D), 1e-9)
    experts = full(loc, torch.diag_embed(scale.square())) if full_cov else diagonal(loc, scale)
    prior = full(torch.zeros(D), torch.eye(D)) if full_cov else diagonal(_zeros(D), _ones(D))
    for pooled in (
        bc.kl_barycenter(experts),
        bc.product_of_experts(experts),
        bc.product_of_experts(experts, prior=prior),
    ):
        torch.testing.assert_close(pooled.mean, torch.full((D,), 1e21))


def _zeros(*shape):
    return torch.zeros(*shape)


def _ones(*shape):
    return torch.ones(*shape)
