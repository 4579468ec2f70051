"""Helpers shared by the test modules: distribution builders, KL objectives, perturbations."""

from __future__ import annotations

import pytest
import torch
from strategies import random_diag_gaussian, random_full_gaussian, random_spd, random_weights
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from barycentric.linalg import polar, sqrtm_psd

FAMILIES = ["diag", "full"]


def diagonal(loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None):
    """``Independent(Normal(loc, scale), 1)``."""
    return Independent(Normal(loc, scale, validate_args=validate_args), 1)


def full(loc: torch.Tensor, cov: torch.Tensor, validate_args: bool | None = None):
    """``MultivariateNormal(loc, covariance_matrix=cov)``."""
    return MultivariateNormal(loc, covariance_matrix=cov, validate_args=validate_args)


def random_experts(
    generator: torch.Generator,
    family: str,
    d: int,
    batch: int | tuple[int, ...],
    dtype: torch.dtype = torch.float64,
):
    """Random ``"diag"`` or ``"full"`` (condition number 1e3) Gaussians of batch ``batch``."""
    if family == "diag":
        return diagonal(*random_diag_gaussian(generator, d, batch, dtype=dtype))
    return full(*random_full_gaussian(generator, d, batch, condition=1e3, dtype=dtype))


def params(dist) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` of a diagonal Gaussian, ``(loc, covariance_matrix)`` of a full one."""
    if isinstance(dist, MultivariateNormal):
        return dist.loc, dist.covariance_matrix
    return dist.base_dist.loc, dist.base_dist.scale


def rebuild(dist, loc: torch.Tensor, spread: torch.Tensor, validate_args: bool | None = None):
    """A Gaussian of ``dist``'s family with parameters ``loc`` and ``spread`` (see ``params``)."""
    build = full if isinstance(dist, MultivariateNormal) else diagonal
    return build(loc, spread, validate_args)


def as_full(dist: Independent) -> MultivariateNormal:
    """The full-covariance twin of a diagonal Gaussian."""
    return full(dist.mean, torch.diag_embed(dist.variance))


def weighted_kl(q, experts, weights: torch.Tensor, direction: str) -> torch.Tensor:
    """``Σ_m λ_m KL(q ‖ q_m)`` (``"reverse"``) or ``Σ_m λ_m KL(q_m ‖ q)`` (``"forward"``).

    ``q`` (batch ``(...)``) is compared with every expert of ``experts`` (batch ``(M,)``
    or ``(..., M)``); ``weights (M,)`` are normalised here.
    """
    if isinstance(q, MultivariateNormal):
        q = full(q.mean.unsqueeze(-2), q.covariance_matrix.unsqueeze(-3))
    else:
        q = diagonal(q.mean.unsqueeze(-2), q.stddev.unsqueeze(-2))
    kl = kl_divergence(q, experts) if direction == "reverse" else kl_divergence(experts, q)
    return (weights / weights.sum(-1, keepdim=True) * kl).sum(-1)


def perturbed_covariances(
    cov: torch.Tensor, generator: torch.Generator, count: int, size: float
) -> torch.Tensor:
    """``count`` SPD perturbations ``L (I + size·S) Lᵀ`` of ``cov (d, d)``, ``S`` symmetric of
    unit spectral norm: relative steps that stay positive definite however ill-conditioned."""
    d = cov.shape[-1]
    chol = torch.linalg.cholesky(cov)
    noise = torch.randn(count, d, d, generator=generator, dtype=cov.dtype)
    sym = noise + noise.mT
    sym = sym / torch.linalg.matrix_norm(sym, ord=2)[:, None, None]
    eye = torch.eye(d, dtype=cov.dtype)
    return chol @ (eye + size * sym) @ chol.mT


def mixture_moments(
    loc: torch.Tensor, cov: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of ``Σ λ_m N(μ_m, Σ_m)`` by the law of total covariance, as an
    explicit loop over the experts of ``loc (M, d)``, ``cov (M, d, d)``."""
    weights = weights / weights.sum()
    mean = sum(w * mu for w, mu in zip(weights, loc, strict=True))
    second = sum(w * (c + torch.outer(mu, mu)) for w, mu, c in zip(weights, loc, cov, strict=True))
    return mean, second - torch.outer(mean, mean)


def rows(dist, index: slice):
    """The rows ``index`` of ``dist``'s first batch dimension, rebuilt without torch's
    argument checks, which cannot handle an empty batch of vectors or matrices (torch 2.13)."""
    loc, spread = params(dist)
    return rebuild(dist, loc[index], spread[index], validate_args=False)


@pytest.fixture(params=[True, False], ids=["validated", "unvalidated"])
def validation(request) -> bool:
    """Run a test with torch.distributions validation on, then off: import it, then
    ``@pytest.mark.usefixtures("validation")``."""
    if not request.param:
        request.getfixturevalue("validation_disabled")
    return request.param


def _defining_tensors(dist) -> list[torch.Tensor]:
    """The parameters of a Gaussian, or the mixing probabilities and components' parameters
    of a mixture of Gaussians."""
    if hasattr(dist, "mixture_distribution"):
        components = _defining_tensors(dist.component_distribution)
        return [dist.mixture_distribution.probs, *components]
    return list(params(dist))


def assert_empty_concatenates(empty, whole) -> None:
    """``empty`` has an empty first batch dimension and otherwise ``whole``'s shapes, and
    concatenating it in front of ``whole`` leaves ``whole``: f(cat(∅, X)) = cat(f(∅), f(X))."""
    assert type(empty) is type(whole)
    assert empty.batch_shape == (0, *whole.batch_shape[1:])
    assert empty.event_shape == whole.event_shape
    for e, w in zip(_defining_tensors(empty), _defining_tensors(whole), strict=True):
        assert e.shape == (0, *w.shape[1:])
        assert e.dtype == w.dtype
        torch.testing.assert_close(torch.cat([e, w]), w)


def wasserstein_residual(
    bary: torch.Tensor, cov: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """‖Σ − Σ_m λ_m (Σ^½ Σ_m Σ^½)^½‖_F / ‖Σ‖_F in float64, from singular values (no squared
    products): an oracle for the solvers' own residuals."""
    root = sqrtm_psd(bary.double()).unsqueeze(-3)
    roots = polar(sqrtm_psd(cov.double()) @ root)[1]
    image = (weights.double()[..., None, None] * roots).sum(-3)
    return torch.linalg.matrix_norm(bary - image) / torch.linalg.matrix_norm(bary)


def fixed_point_problems(seed: int, batch: int, m: int, d: int, condition: float = 1e2):
    """Covariances ``(batch, m, d, d)`` of roughly the given condition number and normalised
    weights ``(batch, m)``, the inputs of the Wasserstein fixed point's solvers."""
    generator = torch.Generator().manual_seed(seed)
    cov = random_spd(generator, d, (batch, m), condition)
    weights = random_weights(generator, m, batch)
    return cov, weights / weights.sum(-1, keepdim=True)


def record_solver_calls(monkeypatch, module, names: tuple[str, ...]) -> list[tuple[str, int]]:
    """Wrap the solvers ``names`` of ``module`` so that each call appends ``(name, batch)``
    (the first argument's leading size) to the list returned, then solves as before."""
    calls: list[tuple[str, int]] = []
    for name in names:
        solve = getattr(module, name)

        def recording(*args, solve=solve, name=name):
            calls.append((name, args[0].shape[0]))
            return solve(*args)

        monkeypatch.setattr(module, name, recording)
    return calls


def assert_equal_up_to_rounding(
    actual: torch.Tensor, expected: torch.Tensor, ulps: int = 64, scale: float | None = None
) -> None:
    """``actual`` equals ``expected`` to ``ulps`` units of round-off of ``scale`` (default: the
    largest finite entry of ``expected``).

    What the library promises for the same arithmetic run with other kernels: a BLAS, or
    torch's vectorised reductions, may pick other kernels (and so another order of the same
    additions) for another batch size or on another CPU, so answers computed in batches of
    different sizes agree to round-off, not bitwise.
    """
    eps = torch.finfo(expected.dtype).eps
    if scale is None:
        finite = expected[torch.isfinite(expected)]
        scale = float(finite.abs().max()) if finite.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=ulps * eps, atol=ulps * eps * scale)
