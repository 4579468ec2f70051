"""Work that a CUDA device hands to the host: which work moves, and that moving it changes
nothing a user sees (values, diagnostics, warnings, derivatives of every order).

No GPU runs the suite, so the routing is exercised with the CPU itself counted as an
accelerator: every tensor then takes the whole round trip through ``barycentric._host``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from strategies import random_full_gaussian

from barycentric import _host
from barycentric.functional import FixedPointInfo, gaussian_wasserstein
from barycentric.functional import wasserstein_barycenter_full as barycenter
from barycentric.linalg import eigh_psd, polar


@pytest.fixture
def cpu_as_accelerator(monkeypatch):
    """Route the CPU's own work as if it were a CUDA device's; counts the routed solves."""
    monkeypatch.setattr(_host, "_ACCELERATORS", frozenset({"cpu"}))
    routed = []

    def counting(function, device, *args, **kwargs):
        routed.append(args[1].shape)
        return _host.run_on_host(function, device, *args, **kwargs)

    monkeypatch.setattr(gaussian_wasserstein, "run_on_host", counting)
    return routed


def _problem(batch: int, m: int, d: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return random_full_gaussian(generator, d, (batch, m), condition=1e2, dtype=torch.float64)


def test_only_small_problems_on_one_accelerator_are_solved_on_the_host(cpu_as_accelerator):
    batch = _host.HOST_SOLVE_ELEMENTS // (2 * 16 * 16)
    loc, cov = _problem(batch, 2, 16)
    assert batch * 2 * 16 * 16 == _host.HOST_SOLVE_ELEMENTS  # exactly the limit
    assert _host.solve_on_host(loc, cov, None)
    assert _host.solve_on_host(loc, cov, torch.ones(2, dtype=torch.float64))
    more_loc, more_cov = _problem(batch + 1, 2, 16)
    assert not _host.solve_on_host(more_loc, more_cov, None)
    meta = torch.empty(5, 2, device="meta")
    assert not _host.solve_on_host(meta, cov, None)  # experts on two devices: validation says so
    assert not _host.solve_on_host(loc, cov, meta[:, 0])
    assert not _host.solve_on_host(loc.tolist(), cov, None)
    assert not _host.solve_on_host(loc[0, 0], cov[0, 0], None)  # (d,) and (d, d): invalid


def test_the_device_itself_keeps_its_work():
    loc, cov = _problem(1, 5, 2)
    assert not _host.solve_on_host(loc, cov, None)  # the CPU is not an accelerator
    assert not _host.decompose_on_host(torch.zeros(2, 64, 64))


@pytest.mark.parametrize(("d", "moved"), [(32, False), (33, True), (128, True), (129, False)])
def test_mid_sized_decompositions_move_to_the_host(cpu_as_accelerator, d, moved):
    assert _host.decompose_on_host(torch.zeros(3, d, d)) is moved


def test_results_come_back_where_the_caller_is_in_the_same_structure():
    info = FixedPointInfo(3, torch.ones(2), torch.ones(2, dtype=torch.bool))

    def function(a, *, b):
        return a + b, (info, "text"), {"tensor": a}

    meta = torch.device("meta")
    total, (moved, text), mapping = _host.run_on_host(
        function, meta, torch.ones(2, 3), b=torch.ones(3)
    )
    assert total.device == meta and total.shape == (2, 3)
    assert isinstance(moved, FixedPointInfo) and moved.iterations == 3 and text == "text"
    assert moved.residual.device == meta and moved.converged.dtype == torch.bool
    assert mapping["tensor"].device == meta


@pytest.mark.parametrize(("m", "d"), [(5, 2), (5, 6), (2, 4)])
def test_a_routed_solve_returns_what_the_device_would(cpu_as_accelerator, m, d):
    loc, cov = _problem(4, m, d)
    weights = torch.rand(4, m, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    routed = barycenter(loc, cov, weights, tol=1e-11, return_info=True)
    assert cpu_as_accelerator == [cov.shape]
    direct = gaussian_wasserstein._barycenter_full(
        loc, cov, weights, max_iter=100, tol=1e-11, backward="implicit"
    )
    for ours, expected in zip(routed[:2], direct[:2], strict=True):
        assert torch.equal(ours, expected)
    assert routed[2].iterations == direct[2].iterations > (0 if m > 2 else -1)
    assert torch.equal(routed[2].residual, direct[2].residual)
    assert bool(routed[2].converged.all())


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
def test_derivatives_of_every_order_flow_through_the_host(
    cpu_as_accelerator, monkeypatch, backward
):
    loc, cov = _problem(2, 3, 3)
    direction = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def gradient_and_curvature():
        c = cov.clone().requires_grad_()
        out = barycenter(loc, c, backward=backward)[1]
        (grad,) = torch.autograd.grad((out * direction).sum(), c, create_graph=True)
        (curvature,) = torch.autograd.grad(grad.square().sum(), c)
        return grad, curvature

    routed = gradient_and_curvature()
    assert len(cpu_as_accelerator) == 1
    monkeypatch.setattr(_host, "_ACCELERATORS", frozenset())
    direct = gradient_and_curvature()
    for ours, expected in zip(routed, direct, strict=True):
        assert torch.equal(ours, expected)
        assert float(expected.detach().abs().max()) > 0


def test_a_routed_solve_warns_at_the_callers_line(cpu_as_accelerator):
    loc, cov = _problem(3, 5, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, _, info = barycenter(loc, cov, max_iter=1, tol=1e-14, return_info=True)
    assert cpu_as_accelerator
    assert [w.category for w in caught] == [RuntimeWarning]
    assert caught[0].filename == __file__
    assert not bool(info.converged.any())


def test_routed_decompositions_keep_their_values_and_failure_isolation(cpu_as_accelerator):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 40, 40, dtype=torch.float64, generator=generator)
    a = x @ x.mT
    a[1, 0, 0] = torch.nan
    values, vectors = eigh_psd(a)
    assert bool(values[1].isnan().all()) and bool(torch.isfinite(values[[0, 2]]).all())
    good = a[[0, 2]]
    assert torch.allclose((vectors[[0, 2]] * values[[0, 2], None, :]) @ vectors[[0, 2]].mT, good)
    orthogonal, positive = polar(x)
    assert torch.allclose(orthogonal @ positive, x)
