"""Every public function under torch's modes and transforms: autocast, torch.func, torch.compile.

Autocast must change nothing (float32 in, float32 out, the values and gradients computed
outside autocast); torch.func's grad, vjp and jacrev must give autograd's derivatives,
and vmap either the batched result or an error that says why; a training step on
diagonal Gaussians must compile into one graph.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from helpers import diagonal, full, validation  # noqa: F401 (a fixture)
from strategies import random_diag_gaussian, random_full_gaussian
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

import barycentric as bc
from barycentric import functional as F

B, M, D = 3, 3, 3
LOW_PRECISION = [torch.bfloat16, torch.float16]

#: Public callables with nothing for autocast to change (no matrix product) or no tensors.
NOT_ENTRY_POINTS = {"default_tolerance", "power_of_two_scale", "subset_masks", "symmetrise"}


def _inputs(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """``loc, scale (B, M, D)`` and ``cov (B, M, D, D)`` (condition 1e2), leaves with grad."""
    generator = torch.Generator().manual_seed(7)
    loc, scale = random_diag_gaussian(generator, D, (B, M), dtype=dtype)
    _, cov = random_full_gaussian(generator, D, (B, M), dtype=dtype)
    return [t.clone().requires_grad_() for t in (loc, scale, cov)]


def _params(dist) -> tuple[torch.Tensor, ...]:
    if isinstance(dist, MixtureSameFamily):
        return (dist.mixture_distribution.logits, *_params(dist.component_distribution))
    if isinstance(dist, MultivariateNormal):
        return dist.loc, dist.covariance_matrix
    return dist.mean, dist.stddev


def _seeded(call):
    """``call`` with the global generator seeded: the same draws on every run."""

    def seeded(*args):
        torch.manual_seed(0)
        return call(*args)

    return seeded


def _gmm(loc, scale, cov):
    mixtures = [
        MixtureSameFamily(Categorical(logits=torch.zeros(M)), diagonal(loc[b], scale[b]))
        for b in range(2)
    ]
    return _params(bc.gmm_barycenter(mixtures))


CALLS = {
    "barycenter": lambda loc, scale, cov: _params(bc.barycenter(full(loc, cov))),
    "wasserstein_barycenter diag": lambda loc, scale, cov: _params(
        bc.wasserstein_barycenter(diagonal(loc, scale), mask=torch.tensor([True, False, True]))
    ),
    "wasserstein_barycenter full, two experts": lambda loc, scale, cov: _params(
        bc.wasserstein_barycenter(full(loc[:, :2], cov[:, :2]))
    ),
    "wasserstein_barycenter full": lambda loc, scale, cov: _params(
        bc.wasserstein_barycenter(full(loc, cov))
    ),
    "kl_barycenter diag": lambda loc, scale, cov: _params(bc.kl_barycenter(diagonal(loc, scale))),
    "kl_barycenter full": lambda loc, scale, cov: _params(bc.kl_barycenter(full(loc, cov))),
    "kl_barycenter forward": lambda loc, scale, cov: _params(
        bc.kl_barycenter(diagonal(loc, scale), direction="forward")
    ),
    "kl_barycenter forward projected diag": lambda loc, scale, cov: _params(
        bc.kl_barycenter(diagonal(loc, scale), direction="forward", project=True)
    ),
    "kl_barycenter forward projected full": lambda loc, scale, cov: _params(
        bc.kl_barycenter(full(loc, cov), direction="forward", project=True)
    ),
    "product_of_experts diag": lambda loc, scale, cov: _params(
        bc.product_of_experts(
            diagonal(loc, scale),
            mask=torch.tensor([True, False, True]),
            prior=diagonal(torch.zeros(D), torch.ones(D)),
        )
    ),
    "product_of_experts full": lambda loc, scale, cov: _params(
        bc.product_of_experts(full(loc, cov))
    ),
    "mixture_of_barycenters diag": lambda loc, scale, cov: _params(
        bc.mixture_of_barycenters(diagonal(loc, scale), divergence="reverse_kl")
    ),
    "mixture_of_barycenters full": lambda loc, scale, cov: _params(
        bc.mixture_of_barycenters(full(loc, cov))
    ),
    "mixture_of_products diag": lambda loc, scale, cov: _params(
        bc.mixture_of_products(
            diagonal(loc, scale),
            mask=torch.tensor([True, False, True]),
            prior=diagonal(torch.zeros(D), torch.ones(D)),
        )
    ),
    "mixture_of_products full": lambda loc, scale, cov: _params(
        bc.mixture_of_products(full(loc, cov), mask=torch.tensor([True, False, True]))
    ),
    "split_rsample": _seeded(
        lambda loc, scale, cov: bc.split_rsample(bc.mixture_of_products(diagonal(loc, scale)))[:1]
    ),
    "stratified_rsample": _seeded(
        lambda loc, scale, cov: (
            bc.stratified_rsample(bc.mixture_of_barycenters(diagonal(loc, scale)), 2),
        )
    ),
    "wasserstein_distance diag": lambda loc, scale, cov: (
        bc.wasserstein_distance(diagonal(loc, scale), diagonal(loc.flip(1), scale.flip(1))),
    ),
    "wasserstein_distance full": lambda loc, scale, cov: (
        bc.wasserstein_distance(full(loc, cov), full(loc.flip(1), cov.flip(1))),
    ),
    "wasserstein_distance mixed": lambda loc, scale, cov: (
        bc.wasserstein_distance(diagonal(loc, scale), full(loc, cov)),
    ),
    "gmm_barycenter": _gmm,
    "empirical_barycenter": _seeded(
        lambda loc, scale, cov: bc.empirical_barycenter([loc[0], loc[1] * scale[1]])
    ),
    "functional.wasserstein_barycenter_diag": lambda loc, scale, cov: F.wasserstein_barycenter_diag(
        loc, scale
    ),
    "functional.wasserstein_barycenter_full": lambda loc, scale, cov: F.wasserstein_barycenter_full(
        loc, cov
    ),
    "functional.wasserstein_distance_diag": lambda loc, scale, cov: (
        F.wasserstein_distance_diag(loc, scale, loc.flip(1), scale.flip(1)),
    ),
    "functional.wasserstein_distance_full": lambda loc, scale, cov: (
        F.wasserstein_distance_full(loc, cov, loc.flip(1), cov.flip(1)),
    ),
    "functional.reverse_kl_barycenter_diag": lambda loc, scale, cov: F.reverse_kl_barycenter_diag(
        loc, scale
    ),
    "functional.reverse_kl_barycenter_full": lambda loc, scale, cov: F.reverse_kl_barycenter_full(
        loc, cov
    ),
    "functional.forward_kl_moments_diag": lambda loc, scale, cov: F.forward_kl_moments_diag(
        loc, scale
    ),
    "functional.forward_kl_moments_full": lambda loc, scale, cov: F.forward_kl_moments_full(
        loc, cov
    ),
    "linalg.sqrtm_psd": lambda loc, scale, cov: (bc.linalg.sqrtm_psd(cov),),
    "linalg.inv_sqrtm_psd": lambda loc, scale, cov: (bc.linalg.inv_sqrtm_psd(cov),),
    "linalg.polar": lambda loc, scale, cov: bc.linalg.polar(cov - 2 * torch.eye(D)),
    "linalg.eigh_psd": lambda loc, scale, cov: bc.linalg.eigh_psd(cov),
}


def test_every_public_function_is_an_entry_point() -> None:
    names = [
        (module, name)
        for module in (bc, bc.functional, bc.linalg)
        for name in module.__all__
        if inspect.isfunction(getattr(module, name)) and name not in NOT_ENTRY_POINTS
    ]
    missing = [name for module, name in names if not hasattr(getattr(module, name), "__wrapped__")]
    assert missing == []
    covered = {name.split(" ")[0].split(".")[-1] for name in CALLS}
    assert {name for _, name in names} <= covered


def _loss(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
    """A fixed random linear function of the differentiable outputs (``None`` if none)."""
    generator = torch.Generator().manual_seed(3)
    differentiable = [o for o in outputs if o.requires_grad]
    if not differentiable:
        return None
    return sum(
        (o * torch.randn(o.shape, generator=generator, dtype=o.dtype)).sum() for o in differentiable
    )


def _gradients(loss: torch.Tensor | None, inputs: list[torch.Tensor]):
    return () if loss is None else torch.autograd.grad(loss, inputs, allow_unused=True)


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize("low", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("name", sorted(CALLS))
def test_autocast_changes_no_value_and_no_gradient(name, low) -> None:
    # the backward pass runs after the region, as PyTorch recommends (its own backward
    # formulas would run in low precision inside it)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unconverged solvers warn alike in both runs
        inputs = _inputs()
        expected = CALLS[name](*inputs)
        expected_grads = _gradients(_loss(expected), inputs)
        inputs = _inputs()
        with torch.autocast("cpu", dtype=low):
            found = CALLS[name](*inputs)
            loss = _loss(found)
        found_grads = _gradients(loss, inputs)
    for ours, theirs in zip(found, expected, strict=True):
        assert ours.dtype == theirs.dtype == torch.float32
        torch.testing.assert_close(ours, theirs)
    for ours, theirs in zip(found_grads, expected_grads, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert ours.dtype == torch.float32
            torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("low", LOW_PRECISION, ids=str)
def test_backward_passes_of_the_roots_ignore_autocast(low) -> None:
    # the library's own backward passes run without autocast wherever they are called
    cov = _inputs(torch.float64)[2].detach().float()
    direction = torch.randn(cov.shape, generator=torch.Generator().manual_seed(5))

    def gradient():
        leaf = cov.clone().requires_grad_()
        (grad,) = torch.autograd.grad((bc.linalg.sqrtm_psd(leaf) * direction).sum(), leaf)
        return grad

    expected = gradient()
    with torch.autocast("cpu", dtype=low):
        found = gradient()
    assert found.dtype == torch.float32
    torch.testing.assert_close(found, expected)


def _float64_case(name: str):
    """``(f, x)``: a float64 function of one tensor through a public function."""
    loc, scale, cov = (t.detach().double() for t in _inputs())
    cases = {
        "wasserstein_distance full": (
            lambda c: bc.wasserstein_distance(full(loc, c), full(loc.flip(1), cov.flip(1))),
            cov,
        ),
        "wasserstein_distance diag": (
            lambda s: bc.wasserstein_distance(diagonal(loc, s), diagonal(loc.flip(1), scale)),
            scale,
        ),
        "wasserstein_barycenter full, two experts": (
            lambda c: F.wasserstein_barycenter_full(loc[:, :2], c)[1],
            cov[:, :2],
        ),
        "wasserstein_barycenter full, implicit": (
            lambda c: F.wasserstein_barycenter_full(loc, c)[1],
            cov,
        ),
        "wasserstein_barycenter full, unrolled": (
            lambda c: F.wasserstein_barycenter_full(loc, c, backward="unroll")[1],
            cov,
        ),
        "wasserstein_barycenter diag": (
            lambda s: _params(bc.wasserstein_barycenter(diagonal(loc, s)))[1],
            scale,
        ),
        "product_of_experts diag": (
            lambda s: _params(bc.product_of_experts(diagonal(loc, s)))[0],
            scale,
        ),
        "product_of_experts full": (
            lambda c: _params(bc.product_of_experts(full(loc, c)))[0],
            cov,
        ),
        "forward_kl_moments_diag": (lambda s: F.forward_kl_moments_diag(loc, s)[1], scale),
        "sqrtm_psd": (bc.linalg.sqrtm_psd, cov),
        "inv_sqrtm_psd": (bc.linalg.inv_sqrtm_psd, cov),
        "polar": (lambda x: bc.linalg.polar(x - 2 * torch.eye(D, dtype=x.dtype))[0], cov),
    }
    return cases[name]


FUNC_CASES = [
    "wasserstein_distance full",
    "wasserstein_distance diag",
    "wasserstein_barycenter full, two experts",
    "wasserstein_barycenter full, implicit",
    "wasserstein_barycenter full, unrolled",
    "wasserstein_barycenter diag",
    "product_of_experts diag",
    "product_of_experts full",
    "forward_kl_moments_diag",
    "sqrtm_psd",
    "inv_sqrtm_psd",
    "polar",
]


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize("name", FUNC_CASES)
def test_torch_func_grad_and_vjp_are_autograds_derivatives(name) -> None:
    f, x = _float64_case(name)
    leaf = x.clone().requires_grad_()
    y = f(leaf)
    cotangent = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    (expected,) = torch.autograd.grad(y, leaf, cotangent)
    grad = torch.func.grad(lambda z: (f(z) * cotangent).sum())(x)
    value, pull = torch.func.vjp(f, x)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(pull(cotangent)[0], expected, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(value, y.detach())


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize("name", [n for n in FUNC_CASES if n.endswith("implicit")])
def test_torch_func_jacrev_of_the_implicit_derivative_says_to_unroll(name) -> None:
    f, x = _float64_case(name)
    with pytest.raises(RuntimeError, match=r"cannot run under torch.func.vmap.*'unroll'"):
        torch.func.jacrev(f)(x)


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize("name", [n for n in FUNC_CASES if not n.endswith("implicit")])
def test_torch_func_jacrev_is_autograds_jacobian(name) -> None:
    f, x = _float64_case(name)
    expected = torch.autograd.functional.jacobian(f, x)
    torch.testing.assert_close(torch.func.jacrev(f)(x), expected, rtol=1e-9, atol=1e-11)


#: What vmap batches with validation off: the closed forms and the roots (not the solvers).
VMAPPED = [
    "wasserstein_distance full",
    "wasserstein_distance diag",
    "wasserstein_barycenter diag",
    "product_of_experts diag",
    "product_of_experts full",
    "forward_kl_moments_diag",
    "sqrtm_psd",
    "inv_sqrtm_psd",
    "polar",
]


@pytest.mark.parametrize("name", VMAPPED)
def test_vmap_of_a_closed_form_is_the_batched_call(name, validation_disabled) -> None:
    f, x = _float64_case(name)
    batch = torch.stack([x, 2 * x, x.flip(0)])
    expected = torch.stack([f(item) for item in batch])
    torch.testing.assert_close(torch.func.vmap(f)(batch), expected, rtol=1e-12, atol=1e-12)


def test_vmap_of_the_fixed_point_says_why(validation_disabled) -> None:
    f, x = _float64_case("wasserstein_barycenter full, implicit")
    with pytest.raises(RuntimeError, match=r"cannot run under torch.func.vmap.*depend on the val"):
        torch.func.vmap(f)(torch.stack([x, x]))


def test_vmap_with_validation_on_says_how_to_switch_it_off() -> None:
    f, x = _float64_case("wasserstein_barycenter diag")
    with pytest.raises(RuntimeError, match=r"set_default_validate_args\(False\)"):
        torch.func.vmap(f)(torch.stack([x, x]))


def test_compiled_diagonal_step_is_one_graph_equal_to_eager(validation_disabled) -> None:
    # what a VAE step calls: barycenters and products of diagonal experts, a distance
    loc, scale, _ = _inputs()
    mask = torch.tensor([[True, False, True], [True, True, True], [False, True, False]])
    prior = diagonal(torch.zeros(D), torch.ones(D))

    def step(loc, scale):
        experts = diagonal(loc, scale)
        wb = bc.wasserstein_barycenter(experts, mask=mask)
        poe = bc.product_of_experts(experts, mask=mask, prior=prior)
        kl = bc.kl_barycenter(experts, mask=mask)
        tensors = F.wasserstein_barycenter_diag(loc, scale, mask.to(loc.dtype))
        distance = bc.wasserstein_distance(wb, poe)
        return (*_params(wb), *_params(poe), *_params(kl), *tensors, distance)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="eager")  # raises on a graph break
    found = compiled(loc, scale)
    expected = step(loc, scale)
    for ours, theirs in zip(found, expected, strict=True):
        torch.testing.assert_close(ours, theirs)
    grads = torch.autograd.grad(sum(o.sum() for o in found), (loc, scale))
    expected_grads = torch.autograd.grad(sum(o.sum() for o in expected), (loc, scale))
    for ours, theirs in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(ours, theirs)
    torch._dynamo.reset()


@pytest.mark.parametrize("autocast", [False, True], ids=["plain", "autocast"])
def test_a_solver_warns_at_the_callers_line_through_the_entry_points(autocast) -> None:
    # the entry points add frames (more under autocast): a fixed stacklevel pointed into them
    loc, _, cov = (t.detach() for t in _inputs())
    with warnings.catch_warnings(record=True) as caught, torch.autocast("cpu", enabled=autocast):
        warnings.simplefilter("always")
        bc.wasserstein_barycenter(full(loc, cov), max_iter=1, tol=0.0)
    assert [w.category for w in caught] == [RuntimeWarning]
    assert caught[0].filename == __file__
