"""The torch.distributions adapters: expert layout, weights and masks, dispatch, distances."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from helpers import (
    FAMILIES,
    as_full,
    assert_empty_concatenates,
    diagonal,
    full,
    params,
    random_experts,
    rebuild,
    rows,
    validation,  # noqa: F401 (a fixture)
)
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    diag_gaussian_params,
    random_diag_gaussian,
    random_full_gaussian,
    random_weights,
    weights,
)
from torch.distributions import MixtureSameFamily, Normal

import barycentric as bc
from barycentric.functional import (
    forward_kl_moments_diag,
    forward_kl_moments_full,
    reverse_kl_barycenter_diag,
    reverse_kl_barycenter_full,
    wasserstein_barycenter_diag,
    wasserstein_barycenter_full,
)

M, D, B = 3, 2, 4

# Each (divergence, options) of `bc.barycenter` whose result is a Gaussian.
GAUSSIAN_DIVERGENCES = [
    ("wasserstein", {}),
    ("reverse_kl", {}),
    ("forward_kl", {"project": True}),
]
KERNELS = {
    ("wasserstein", "diag"): wasserstein_barycenter_diag,
    ("wasserstein", "full"): wasserstein_barycenter_full,
    ("reverse_kl", "diag"): reverse_kl_barycenter_diag,
    ("reverse_kl", "full"): reverse_kl_barycenter_full,
    ("forward_kl", "diag"): forward_kl_moments_diag,
    ("forward_kl", "full"): forward_kl_moments_full,
}


def _assert_same_gaussian(p, q, **tolerances) -> None:
    assert type(p) is type(q)
    assert p.batch_shape == q.batch_shape
    torch.testing.assert_close(p.mean, q.mean, **tolerances)
    if isinstance(p, MixtureSameFamily):
        torch.testing.assert_close(
            p.mixture_distribution.probs, q.mixture_distribution.probs, **tolerances
        )
        _assert_same_gaussian(p.component_distribution, q.component_distribution, **tolerances)
    else:
        torch.testing.assert_close(params(p)[1], params(q)[1], **tolerances)


ALL_DIVERGENCES = [*GAUSSIAN_DIVERGENCES, ("forward_kl", {})]


# --- dispatch: the adapters compute what the tensor kernels compute ---------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("divergence", "options"), GAUSSIAN_DIVERGENCES)
def test_barycenter_equals_tensor_kernel(divergence, options, family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    w = random_weights(generator, M, B, zeros=True)
    result = bc.barycenter(experts, w, divergence=divergence, **options)
    loc, spread = KERNELS[divergence, family](*params(experts), w)
    torch.testing.assert_close(result.mean, loc)
    torch.testing.assert_close(params(result)[1], spread)


@pytest.mark.parametrize("family", FAMILIES)
def test_barycenter_dispatches_to_the_direct_calls(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    w = random_weights(generator, M, B)
    pairs = [
        (bc.barycenter(experts, w), bc.wasserstein_barycenter(experts, w)),
        (bc.barycenter(experts, w, divergence="reverse_kl"), bc.kl_barycenter(experts, w)),
        (
            bc.barycenter(experts, w, divergence="forward_kl"),
            bc.kl_barycenter(experts, w, direction="forward"),
        ),
        (
            bc.barycenter(experts, w, divergence="forward_kl", project=True),
            bc.kl_barycenter(experts, w, direction="forward", project=True),
        ),
    ]
    for got, want in pairs:
        _assert_same_gaussian(got, want)
    q, info = bc.barycenter(experts, w, return_info=True)
    _assert_same_gaussian(q, pairs[0][1])
    assert bool(info.converged.all())


def test_wasserstein_return_info_for_diagonal_experts(generator) -> None:
    _, info = bc.wasserstein_barycenter(
        random_experts(generator, "diag", D, (B, M)), return_info=True
    )
    assert info.iterations == 0
    assert info.residual.shape == (B,)
    assert bool(info.converged.all())


# --- layout of the experts ------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("divergence", "options"), ALL_DIVERGENCES)
def test_experts_along_dim_0_equal_experts_along_last_dim(
    divergence, options, family, generator
) -> None:
    experts = random_experts(generator, family, D, (B, M))
    w = random_weights(generator, M, B, zeros=True)
    mask = torch.rand(B, M, generator=generator) < 0.7
    mask[:, 0] = True
    loc, spread = params(experts)
    spread_axis = -2 if family == "diag" else -3
    front = rebuild(experts, loc.movedim(-2, 0), spread.movedim(spread_axis, 0))
    last = bc.barycenter(experts, w, divergence=divergence, mask=mask, **options)
    first = bc.barycenter(front, w.T, divergence=divergence, dim=0, mask=mask.T, **options)
    _assert_same_gaussian(first, last)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("divergence", "options"), ALL_DIVERGENCES)
def test_sequence_of_experts_equals_stacked_experts(divergence, options, family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    loc, spread = params(experts)
    sequence = [rebuild(experts, loc[:, m], spread[:, m]) for m in range(M)]
    w = random_weights(generator, M)
    _assert_same_gaussian(
        bc.barycenter(sequence, w, divergence=divergence, **options),
        bc.barycenter(experts, w, divergence=divergence, **options),
    )


def test_sequence_broadcasts_batch_shapes(generator) -> None:
    loc, scale = random_diag_gaussian(generator, D, (B, M))
    shared = diagonal(loc[0, 0], scale[0, 0])  # batch shape (): shared by every row
    sequence = [shared, diagonal(loc[:, 1], scale[:, 1])]
    stacked = diagonal(
        torch.stack([loc[0, 0].expand(B, D), loc[:, 1]], 1),
        torch.stack([scale[0, 0].expand(B, D), scale[:, 1]], 1),
    )
    _assert_same_gaussian(bc.kl_barycenter(sequence), bc.kl_barycenter(stacked))


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2, -3])
def test_one_dimensional_weights_index_the_experts_along_any_dim(dim, generator) -> None:
    loc, scale = random_diag_gaussian(generator, D, (M, M + 1, M + 2))
    loc, scale = loc.movedim(0, dim % 3), scale.movedim(0, dim % 3)
    experts = diagonal(loc, scale)
    w = random_weights(generator, M, zeros=True)
    full_w = w.reshape([-1 if i == dim % 3 else 1 for i in range(3)]).expand(experts.batch_shape)
    _assert_same_gaussian(
        bc.kl_barycenter(experts, w, dim=dim), bc.kl_barycenter(experts, full_w, dim=dim)
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("divergence", "options"), GAUSSIAN_DIVERGENCES)
def test_batched_equals_one_by_one(divergence, options, family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    w = random_weights(generator, M, B, zeros=True)
    loc, spread = params(experts)
    batched = bc.barycenter(experts, w, divergence=divergence, **options)
    for row in range(B):
        alone = bc.barycenter(
            rebuild(experts, loc[row], spread[row]), w[row], divergence=divergence, **options
        )
        torch.testing.assert_close(batched.mean[row], alone.mean)
        torch.testing.assert_close(params(batched)[1][row], params(alone)[1])


# --- masks, zero weights and missing experts ------------------------------------------


@given(
    diag_gaussian_params(D, M),
    weights(M, zeros=False),
    st.integers(0, M - 1),
    st.sampled_from(ALL_DIVERGENCES),
)
def test_masked_equals_dropped_equals_zero_weight(params, w, drop, divergence_options) -> None:
    divergence, options = divergence_options
    loc, scale = params
    keep = [m for m in range(M) if m != drop]
    mask = torch.ones(M, dtype=torch.bool)
    mask[drop] = False
    zeroed = w.clone()
    zeroed[drop] = 0.0
    masked = bc.barycenter(diagonal(loc, scale), w, divergence=divergence, mask=mask, **options)
    weighted = bc.barycenter(diagonal(loc, scale), zeroed, divergence=divergence, **options)
    dropped = bc.barycenter(
        diagonal(loc[keep], scale[keep]), w[keep], divergence=divergence, **options
    )
    _assert_same_gaussian(masked, weighted)
    if isinstance(masked, MixtureSameFamily):
        # (log_prob is checked by test_zero_weight_component_does_not_leak_into_log_prob)
        torch.testing.assert_close(masked.mixture_distribution.probs[drop], w.new_zeros(()))
        torch.testing.assert_close(
            masked.mixture_distribution.probs[keep], dropped.mixture_distribution.probs
        )
        torch.testing.assert_close(
            masked.component_distribution.mean[keep], dropped.component_distribution.mean
        )
        torch.testing.assert_close(
            masked.component_distribution.stddev[keep], dropped.component_distribution.stddev
        )
    else:
        _assert_same_gaussian(masked, dropped)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("divergence", "options"), ALL_DIVERGENCES)
def test_nan_in_a_masked_expert_does_not_leak(divergence, options, family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    loc, spread = params(experts)
    poisoned_loc = loc.clone()
    poisoned_loc[:, 1] = torch.nan
    if family == "diag":
        poisoned_spread = spread.clone()
        poisoned_spread[:, 1] = torch.nan
    else:
        # A MultivariateNormal cannot be built on a NaN covariance (torch factorises it).
        poisoned_spread = spread.clone()
    poisoned_loc.requires_grad_()
    poisoned_spread.requires_grad_()
    mask = torch.tensor([True, False, True])
    result = bc.barycenter(
        rebuild(experts, poisoned_loc, poisoned_spread, validate_args=False),
        divergence=divergence,
        mask=mask,
        **options,
    )
    keep = [0, 2]
    dropped = bc.barycenter(
        rebuild(experts, loc[:, keep], spread[:, keep]), divergence=divergence, **options
    )
    x = torch.zeros(B, D, dtype=torch.float64)
    value = result.log_prob(x)
    torch.testing.assert_close(value, dropped.log_prob(x))
    grad_loc, grad_spread = torch.autograd.grad(value.sum(), (poisoned_loc, poisoned_spread))
    assert bool(torch.isfinite(grad_loc).all()) and bool(torch.isfinite(grad_spread).all())
    assert bool((grad_loc[:, 1] == 0).all()) and bool((grad_spread[:, 1] == 0).all())
    assert bool((grad_loc[:, keep] != 0).any())


def test_weights_as_python_list_keep_float64_precision(generator) -> None:
    experts = random_experts(generator, "diag", D, (M,))
    w = [0.1, 0.3, 0.6]
    torch.testing.assert_close(
        bc.wasserstein_barycenter(experts, w).mean,
        bc.wasserstein_barycenter(experts, torch.tensor(w, dtype=torch.float64)).mean,
        rtol=1e-14,
        atol=1e-15,
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("divergence", "options"), ALL_DIVERGENCES)
def test_float32_in_float32_out(divergence, options, family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M), dtype=torch.float32)
    w = random_weights(generator, M, dtype=torch.float32)
    result = bc.barycenter(experts, w, divergence=divergence, **options)
    assert result.mean.dtype == torch.float32
    assert result.mean.device == experts.mean.device
    reference = bc.barycenter(
        random_experts(generator.manual_seed(20240917), family, D, (B, M)),
        w.double(),
        divergence=divergence,
        **options,
    )
    torch.testing.assert_close(result.mean.double(), reference.mean, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("removal", ["mask", "zero weight"])
def test_zero_weight_component_does_not_leak_into_log_prob(removal) -> None:
    experts = diagonal(
        torch.tensor([[100.0], [0.0]], dtype=torch.float64),
        torch.tensor([[0.1], [1.0]], dtype=torch.float64),
    )
    if removal == "mask":
        mixture = bc.kl_barycenter(experts, direction="forward", mask=torch.tensor([True, False]))
    else:
        mixture = bc.kl_barycenter(experts, torch.tensor([1.0, 0.0]), direction="forward")
    x = torch.zeros(1, dtype=torch.float64)
    alone = diagonal(experts.mean[0], experts.stddev[0])
    torch.testing.assert_close(mixture.log_prob(x), alone.log_prob(x))


# --- product of experts --------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_product_of_experts_sums_precisions(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    product = bc.product_of_experts(experts)
    cov = as_full(experts).covariance_matrix if family == "diag" else experts.covariance_matrix
    precision = torch.linalg.inv(cov).sum(-3)
    information = (torch.linalg.inv(cov) @ experts.mean.unsqueeze(-1)).sum(-3)
    expected_cov = torch.linalg.inv(precision)
    product_cov = (
        as_full(product).covariance_matrix if family == "diag" else product.covariance_matrix
    )
    torch.testing.assert_close(product_cov, expected_cov)
    torch.testing.assert_close(product.mean, (expected_cov @ information).squeeze(-1))
    # Un-normalised: the reverse-KL barycenter with the same mean and M times the precision.
    normalised = bc.kl_barycenter(experts)
    torch.testing.assert_close(product.mean, normalised.mean)
    torch.testing.assert_close(product.variance * M, normalised.variance)


@pytest.mark.parametrize("family", FAMILIES)
def test_product_of_experts_with_standard_normal_prior(family, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    loc, spread = params(experts)
    if family == "diag":
        prior = diagonal(torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64))
        unit = torch.ones(B, 1, D, dtype=torch.float64)
        with_prior = diagonal(torch.cat([loc, 0 * unit], 1), torch.cat([spread, unit], 1))
    else:
        prior = full(torch.zeros(D, dtype=torch.float64), torch.eye(D, dtype=torch.float64))
        unit = torch.eye(D, dtype=torch.float64).expand(B, 1, D, D)
        with_prior = full(
            torch.cat([loc, torch.zeros(B, 1, D, dtype=torch.float64)], 1),
            torch.cat([spread, unit], 1),
        )
    _assert_same_gaussian(
        bc.product_of_experts(experts, prior=prior), bc.product_of_experts(with_prior)
    )


def test_product_of_experts_mask_drops_experts_and_empty_rows_return_the_prior(
    generator,
) -> None:
    experts = random_experts(generator, "full", D, (B, M))
    loc, cov = params(experts)
    prior = full(*random_full_gaussian(generator, D))
    mask = torch.tensor(
        [[True, True, True], [True, False, True], [False, False, True], [False, False, False]]
    )
    product = bc.product_of_experts(experts, mask=mask, prior=prior)
    for row in range(B):
        keep = mask[row]
        alone = full(
            torch.cat([loc[row, keep], prior.loc[None]]),
            torch.cat([cov[row, keep], prior.covariance_matrix[None]]),
        )
        torch.testing.assert_close(product.mean[row], bc.product_of_experts(alone).mean)
        torch.testing.assert_close(
            product.covariance_matrix[row], bc.product_of_experts(alone).covariance_matrix
        )
    torch.testing.assert_close(product.mean[-1], prior.loc)
    torch.testing.assert_close(product.covariance_matrix[-1], prior.covariance_matrix)


# --- wasserstein_distance ------------------------------------------------------------


def _pot_distance(p, q) -> np.ndarray:
    return np.array(
        [
            ot.gaussian.bures_wasserstein_distance(mp, mq, cp, cq)
            for mp, mq, cp, cq in zip(
                p.mean.numpy(),
                q.mean.numpy(),
                p.covariance_matrix.numpy(),
                q.covariance_matrix.numpy(),
                strict=True,
            )
        ]
    )


@pytest.mark.parametrize(
    ("family_p", "family_q"),
    [("diag", "diag"), ("full", "full"), ("diag", "full"), ("full", "diag")],
)
def test_wasserstein_distance_matches_pot(family_p, family_q, generator) -> None:
    p, q = random_experts(generator, family_p, D, B), random_experts(generator, family_q, D, B)
    expected = _pot_distance(
        as_full(p) if family_p == "diag" else p, as_full(q) if family_q == "diag" else q
    )
    distance = bc.wasserstein_distance(p, q)
    np.testing.assert_allclose(distance.numpy(), expected, rtol=1e-8)
    torch.testing.assert_close(bc.wasserstein_distance(p, q, squared=True), distance.square())
    torch.testing.assert_close(bc.wasserstein_distance(q, p), distance)


def test_wasserstein_distance_diagonal_closed_form(generator) -> None:
    (loc_p, scale_p), (loc_q, scale_q) = (random_diag_gaussian(generator, D, B) for _ in range(2))
    squared = bc.wasserstein_distance(
        diagonal(loc_p, scale_p), diagonal(loc_q, scale_q), squared=True
    )
    expected = (loc_p - loc_q).square().sum(-1) + (scale_p - scale_q).square().sum(-1)
    torch.testing.assert_close(squared, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_wasserstein_distance_zero_for_identical(family, generator) -> None:
    p = random_experts(generator, family, D, B)
    squared = bc.wasserstein_distance(p, p, squared=True)
    # Round-off of tr(2Σ - 2(Σ^½ Σ Σ^½)^½) only: W2 itself is its square root, O(√eps).
    assert bool((squared <= 1e-12 * p.variance.sum(-1)).all())


@pytest.mark.parametrize("family", ["diag", "full"])
def test_wasserstein_distance_has_the_subgradient_0_where_it_is_0(family) -> None:
    loc = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    spread = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    make = diagonal if family == "diag" else lambda m, s: full(m, torch.diag_embed(s))
    with torch.no_grad():
        loc[1, 0] = 1.0  # row 0 is q itself, row 1 is q shifted by 1
    q = make(torch.zeros(3, dtype=torch.float64), spread.detach())
    distance = bc.wasserstein_distance(make(loc, spread.expand(2, 3)), q)
    torch.testing.assert_close(distance, torch.tensor([0.0, 1.0], dtype=torch.float64))
    grad_loc, grad_spread = torch.autograd.grad(distance.sum(), (loc, spread))
    # row 0 contributes 0; row 1 is the unit vector along the shift, W2 = |shift| there
    expected = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(grad_loc, expected)
    torch.testing.assert_close(grad_spread, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("family_p", "family_q"), [("diag", "diag"), ("full", "full"), ("diag", "full")]
)
def test_wasserstein_distance_is_right_where_its_square_is_out_of_float32s_range(
    family_p, family_q
) -> None:
    def make(family, loc, std):
        loc, std = torch.tensor(loc), torch.tensor(std)
        return diagonal(loc, std) if family == "diag" else full(loc, torch.diag_embed(std**2))

    # means 1e20 apart: W2² = 1e40 overflows float32, W2 does not
    p, q = make(family_p, [1e20, 0.0], [1.0, 2.0]), make(family_q, [0.0, 0.0], [1.0, 2.0])
    torch.testing.assert_close(bc.wasserstein_distance(p, q), torch.tensor(1e20))
    if family_p == family_q == "diag":  # covariances of 1e-50 are not float32s
        p, q = make("diag", [0.0, 0.0], [1e-25, 2e-25]), make("diag", [0.0, 0.0], [3e-25, 2e-25])
        torch.testing.assert_close(bc.wasserstein_distance(p, q), torch.tensor(2e-25))


def test_wasserstein_distance_broadcasts_batch_shapes(generator) -> None:
    p = random_experts(generator, "full", D, (B, 1))
    q = random_experts(generator, "diag", D, (1, M))
    distance = bc.wasserstein_distance(p, q)
    assert distance.shape == (B, M)
    loop = torch.stack(
        [
            torch.stack(
                [
                    bc.wasserstein_distance(
                        full(p.loc[i, 0], p.covariance_matrix[i, 0]),
                        diagonal(q.mean[0, j], q.stddev[0, j]),
                    )
                    for j in range(M)
                ]
            )
            for i in range(B)
        ]
    )
    torch.testing.assert_close(distance, loop)


@pytest.mark.parametrize(
    ("family_p", "family_q"),
    [("diag", "diag"), ("full", "full"), ("diag", "full"), ("full", "diag")],
)
def test_wasserstein_distance_promotes_float32_and_float64(family_p, family_q, generator) -> None:
    p = random_experts(generator, family_p, D, B, dtype=torch.float32)
    q = random_experts(generator, family_q, D, B)
    reference = bc.wasserstein_distance(rebuild(p, *(t.double() for t in params(p))), q)
    for distance in (bc.wasserstein_distance(p, q), bc.wasserstein_distance(q, p)):
        assert distance.dtype == torch.float64
        torch.testing.assert_close(distance, reference)


def test_wasserstein_barycenter_minimises_mean_squared_distance(generator) -> None:
    experts = random_experts(generator, "full", D, M)
    w = random_weights(generator, M)
    bary = bc.wasserstein_barycenter(experts, w)

    def objective(loc, cov):
        return (w / w.sum() * bc.wasserstein_distance(full(loc, cov), experts, squared=True)).sum()

    best = objective(bary.loc, bary.covariance_matrix)
    chol = torch.linalg.cholesky(bary.covariance_matrix)
    for _ in range(8):
        noise = 0.05 * torch.randn(D, D, generator=generator, dtype=torch.float64)
        step = torch.eye(D, dtype=torch.float64) + noise + noise.T
        shift = 0.05 * torch.randn(D, generator=generator, dtype=torch.float64)
        assert objective(bary.loc + shift, chol @ step @ step.T @ chol.T) > best


@pytest.mark.parametrize(
    ("family_p", "family_q"), [("diag", "diag"), ("full", "full"), ("diag", "full")]
)
def test_gradcheck_wasserstein_distance(family_p, family_q, generator) -> None:
    p, q = random_experts(generator, family_p, D, 2), random_experts(generator, family_q, D, 2)
    loc_p, spread_p = (t.clone().requires_grad_() for t in params(p))
    loc_q, spread_q = (t.clone().requires_grad_() for t in params(q))
    build_p = diagonal if family_p == "diag" else lambda loc, f: full(loc, f @ f.mT)
    build_q = diagonal if family_q == "diag" else lambda loc, f: full(loc, f @ f.mT)
    if family_p == "full":
        spread_p = torch.linalg.cholesky(spread_p.detach()).requires_grad_()
    if family_q == "full":
        spread_q = torch.linalg.cholesky(spread_q.detach()).requires_grad_()

    def distance(loc_p, spread_p, loc_q, spread_q):
        return bc.wasserstein_distance(
            build_p(loc_p, spread_p), build_q(loc_q, spread_q), squared=True
        )

    assert torch.autograd.gradcheck(distance, (loc_p, spread_p, loc_q, spread_q))


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck_product_of_experts(family, generator) -> None:
    experts = random_experts(generator, family, D, M)
    loc, spread = (t.clone().requires_grad_() for t in params(experts))
    prior = (
        full(torch.zeros(D, dtype=torch.float64), torch.eye(D, dtype=torch.float64))
        if family == "full"
        else diagonal(torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64))
    )
    mask = torch.tensor([True, False, True])
    if family == "full":
        spread = torch.linalg.cholesky(spread.detach()).requires_grad_()

    def product(loc, spread):
        build = diagonal(loc, spread) if family == "diag" else full(loc, spread @ spread.mT)
        result = bc.product_of_experts(build, mask=mask, prior=prior)
        return result.mean, result.variance

    assert torch.autograd.gradcheck(product, (loc, spread))


# --- empty batches ----------------------------------------------------------------------


def _standard_normal(like):
    """N(0, I) of the family of ``like``, batch shape ()."""
    loc, spread = params(like)
    unit = torch.eye(D, dtype=loc.dtype) if spread.ndim > loc.ndim else loc.new_ones(D)
    return rebuild(like, loc.new_zeros(D), unit)


EMPTY_BATCH_CALLS = {
    "wasserstein": lambda experts, w, mask: bc.wasserstein_barycenter(experts, w, mask=mask),
    "wasserstein_unroll": lambda experts, w, mask: bc.wasserstein_barycenter(
        experts, w, mask=mask, backward="unroll"
    ),
    "reverse_kl": lambda experts, w, mask: bc.kl_barycenter(experts, w, mask=mask),
    "forward_kl": lambda experts, w, mask: bc.kl_barycenter(
        experts, w, direction="forward", mask=mask
    ),
    "forward_kl_projected": lambda experts, w, mask: bc.kl_barycenter(
        experts, w, direction="forward", mask=mask, project=True
    ),
    "product": lambda experts, w, mask: bc.product_of_experts(experts, mask=mask),
    "product_with_prior": lambda experts, w, mask: bc.product_of_experts(
        experts, mask=mask, prior=_standard_normal(experts)
    ),
    "barycenter_forward_kl": lambda experts, w, mask: bc.barycenter(
        experts, w, divergence="forward_kl", mask=mask
    ),
}


@pytest.mark.parametrize("call", EMPTY_BATCH_CALLS.values(), ids=EMPTY_BATCH_CALLS.keys())
@pytest.mark.parametrize("num_experts", [2, M])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.usefixtures("validation")
def test_empty_batch_gives_an_empty_result(call, num_experts, family, generator) -> None:
    experts = random_experts(generator, family, D, (B, num_experts))
    w = random_weights(generator, num_experts, B)
    mask = torch.ones(B, num_experts, dtype=torch.bool)
    whole = call(experts, w, mask)
    empty = call(rows(experts, slice(0, 0)), w[:0], mask[:0])
    assert_empty_concatenates(empty, whole)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.usefixtures("validation")
def test_empty_batch_reports_an_empty_solve(family, generator) -> None:
    empty = rows(random_experts(generator, family, D, (B, M)), slice(0, 0))
    _, info = bc.wasserstein_barycenter(empty, return_info=True)
    assert info.residual.shape == info.converged.shape == (0,)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.usefixtures("validation")
def test_empty_batch_with_experts_along_dim_0(family, generator) -> None:
    experts = random_experts(generator, family, D, (M, B))
    empty = rebuild(experts, *(t[:, :0] for t in params(experts)), False)
    for divergence, options in ALL_DIVERGENCES:
        whole = bc.barycenter(experts, divergence=divergence, dim=0, **options)
        q = bc.barycenter(empty, divergence=divergence, dim=0, **options)
        assert_empty_concatenates(q, whole)


@pytest.mark.parametrize(
    ("family", "backward"),
    [
        ("diag", "implicit"),
        ("diag", "unroll"),
        ("full", "unroll"),
        ("full", "implicit"),
    ],
)
def test_empty_batch_backward(family, backward, generator) -> None:
    experts = random_experts(generator, family, D, (B, M))
    loc, spread = (t[:0].clone().requires_grad_() for t in params(experts))
    q = bc.wasserstein_barycenter(rebuild(experts, loc, spread, False), backward=backward)
    (q.mean.sum() + params(q)[1].sum()).backward()
    assert loc.grad.shape == loc.shape
    assert spread.grad.shape == spread.shape


@pytest.mark.parametrize(
    ("family_p", "family_q"),
    [("diag", "diag"), ("full", "full"), ("diag", "full")],
)
@pytest.mark.usefixtures("validation")
def test_empty_batch_wasserstein_distance(family_p, family_q, generator) -> None:
    p = random_experts(generator, family_p, D, (B, M))
    q = random_experts(generator, family_q, D, (B, M))
    whole = bc.wasserstein_distance(p, q)
    empty = bc.wasserstein_distance(rows(p, slice(0, 0)), rows(q, slice(0, 0)))
    assert empty.shape == (0, M)
    assert empty.dtype == whole.dtype
    torch.testing.assert_close(torch.cat([empty, whole]), whole)
    broadcast = bc.wasserstein_distance(rows(p, slice(0, 0)), rows(q, slice(0, 1)))
    assert broadcast.shape == (0, M)


# --- univariate experts ------------------------------------------------------------------

#: Each public call on experts of one family, with their mask (a Gaussian or a mixture).
UNIVARIATE_CALLS = {
    "wasserstein_barycenter": lambda e, mask: bc.wasserstein_barycenter(e, mask=mask),
    "kl_barycenter": lambda e, mask: bc.kl_barycenter(e, mask=mask),
    "kl_barycenter forward": lambda e, mask: bc.kl_barycenter(e, direction="forward", mask=mask),
    "kl_barycenter projected": lambda e, mask: bc.kl_barycenter(
        e, direction="forward", mask=mask, project=True
    ),
    "product_of_experts": lambda e, mask: bc.product_of_experts(e, mask=mask),
    "barycenter": lambda e, mask: bc.barycenter(e, divergence="reverse_kl", mask=mask),
    "mixture_of_barycenters": lambda e, mask: bc.mixture_of_barycenters(e, mask=mask),
}


def _as_univariate(dist):
    """The ``Normal`` (or mixture of ``Normal``) of a diagonal Gaussian of event size 1."""
    if isinstance(dist, MixtureSameFamily):
        return MixtureSameFamily(
            dist.mixture_distribution, _as_univariate(dist.component_distribution)
        )
    return Normal(dist.base_dist.loc[..., 0], dist.base_dist.scale[..., 0])


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize("name", sorted(UNIVARIATE_CALLS))
@given(params=diag_gaussian_params(1, (B, M)), w=weights(M, B))
def test_univariate_experts_give_a_univariate_result(name, params, w) -> None:
    # a Normal was refused; it is the diagonal family of event size 1, returned as a Normal
    loc, scale = params
    call = UNIVARIATE_CALLS[name]
    found = call(Normal(loc[..., 0], scale[..., 0]), w > 0)
    expected = _as_univariate(call(diagonal(loc, scale), w > 0))
    assert type(found) is type(expected) and found.event_shape == ()
    assert found.batch_shape == expected.batch_shape
    if isinstance(found, MixtureSameFamily):
        torch.testing.assert_close(
            found.mixture_distribution.probs, expected.mixture_distribution.probs
        )
        found, expected = found.component_distribution, expected.component_distribution
    assert type(found) is Normal
    torch.testing.assert_close((found.loc, found.scale), (expected.loc, expected.scale))


def test_univariate_sequences_priors_and_distances() -> None:
    experts = [Normal(0.0, 1.0), Normal(4.0, 3.0)]
    wb = bc.wasserstein_barycenter(experts)
    assert type(wb) is Normal and wb.batch_shape == ()
    torch.testing.assert_close((wb.mean, wb.stddev), (torch.tensor(2.0), torch.tensor(2.0)))
    # precisions 1 + 1/9 + 1 (the prior), mean (4/9) / (19/9)
    poe = bc.product_of_experts(experts, prior=Normal(0.0, 1.0))
    torch.testing.assert_close(poe.variance, torch.tensor(9 / 19))
    torch.testing.assert_close(poe.mean, torch.tensor(4 / 19))
    distance = bc.wasserstein_distance(Normal(0.0, 1.0), Normal(torch.tensor([3.0, 0.0]), 5.0))
    torch.testing.assert_close(distance, torch.tensor([5.0, 4.0]))


@pytest.mark.parametrize(
    ("name", "call"),
    [
        (
            "prior",
            lambda: bc.product_of_experts(Normal(_z(M), _o(M)), prior=diagonal(_z(1), _o(1))),
        ),
        ("event shapes", lambda: bc.wasserstein_distance(Normal(0.0, 1.0), diagonal(_z(1), _o(1)))),
        ("experts", lambda: bc.kl_barycenter([Normal(0.0, 1.0), diagonal(_z(1), _o(1))])),
    ],
)
def test_univariate_and_diagonal_experts_do_not_mix(name, call) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def _z(*shape):
    return torch.zeros(*shape)


def _o(*shape):
    return torch.ones(*shape)
