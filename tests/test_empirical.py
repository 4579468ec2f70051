"""Tests of the POT-backed empirical barycenters: oracles, closed forms, invariances."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from barycentric.empirical import empirical_barycenter


def _clouds(seed: int, sizes: tuple[int, ...], dim: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n, dim, generator=generator, dtype=torch.float64) + 3 * i
        for i, n in enumerate(sizes)
    ]


def _simplex(seed: int, *shape: int) -> torch.Tensor:
    """Random positive entries normalised along dim 0."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=generator, dtype=torch.float64) + 0.1
    return x / x.sum(0)


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows sorted by their first coordinate: compares point clouds as sets."""
    return x[x[:, 0].argsort()]


def _grid(n: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, n, dtype=torch.float64).unsqueeze(1)


# --- free support -------------------------------------------------------------------


def test_free_support_matches_pot_numpy() -> None:
    clouds = _clouds(0, (5, 7, 6), dim=2)
    masses = [_simplex(i + 1, len(c)) for i, c in enumerate(clouds)]
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    init = _clouds(9, (4,), dim=2)[0]

    atoms, b = empirical_barycenter(clouds, weights, init=init, sample_weights=masses)
    expected = ot.lp.free_support_barycenter(
        [c.numpy() for c in clouds],
        [m.numpy() for m in masses],
        init.numpy(),
        weights=weights.numpy(),
    )
    np.testing.assert_allclose(atoms.numpy(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b, torch.full((4,), 0.25, dtype=torch.float64))


def test_free_support_default_init_is_reproducible_with_max_size() -> None:
    clouds = _clouds(1, (5, 8, 3), dim=2)
    first, _ = empirical_barycenter(clouds)
    torch.manual_seed(1234)  # the default init ignores the global random state
    second, b = empirical_barycenter(clouds)
    assert first.shape == (8, 2) and b.shape == (8,)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    atoms, b = empirical_barycenter(clouds, support_size=11)
    assert atoms.shape == (11, 2) and b.shape == (11,)
    same, _ = empirical_barycenter(clouds, support_size=np.int64(11))
    torch.testing.assert_close(same, atoms, rtol=0, atol=0)


def test_free_support_of_identical_clouds_is_the_cloud() -> None:
    (cloud,) = _clouds(2, (9,), dim=3)
    atoms, b = empirical_barycenter([cloud, cloud, cloud], torch.tensor([0.1, 0.6, 0.3]))
    torch.testing.assert_close(_sorted_rows(atoms), _sorted_rows(cloud))
    torch.testing.assert_close(b, torch.full((9,), 1 / 9, dtype=torch.float64))


@pytest.mark.parametrize("lam", [0.5, 0.25, 0.9])
def test_free_support_of_two_diracs_is_the_weighted_midpoint(lam: float) -> None:
    a, c = torch.tensor([[0.0, 1.0]]), torch.tensor([[4.0, -3.0]])
    atoms, b = empirical_barycenter([a, c], [lam, 1 - lam])
    torch.testing.assert_close(atoms, lam * a + (1 - lam) * c)
    torch.testing.assert_close(b, torch.ones(1))


def test_free_support_in_one_dimension_averages_quantile_functions() -> None:
    # The 1-D W2 barycenter has quantile function Σ λ_k F_k⁻¹; for clouds of n equally
    # weighted points that is the λ-average of the sorted clouds.
    clouds = _clouds(3, (8, 8, 8), dim=1)
    weights = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)
    atoms, _ = empirical_barycenter(clouds, weights)
    expected = sum(w * c.sort(dim=0).values for w, c in zip(weights, clouds, strict=True))
    torch.testing.assert_close(atoms.sort(dim=0).values, expected)


def test_free_support_gradient_of_one_dimensional_barycenter() -> None:
    # Σ atoms = Σ_k λ_k Σ y_k in 1-D, so the gradient w.r.t. cloud k's points is λ_k
    # and w.r.t. λ_k (before normalisation to the simplex) is Σ y_k - Σ atoms.
    clouds = [c.requires_grad_() for c in _clouds(4, (6, 6), dim=1)]
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)
    atoms, _ = empirical_barycenter(clouds, weights)
    atoms.sum().backward()
    for cloud, lam in zip(clouds, weights.detach(), strict=True):
        torch.testing.assert_close(cloud.grad, torch.full_like(cloud, lam.item()))
    total = atoms.sum().detach()
    torch.testing.assert_close(
        weights.grad, torch.stack([c.sum() - total for c in clouds]).detach()
    )


@pytest.mark.parametrize("scale", [1e-5, 2.0**-17, 1e5, 2.0**20])
def test_free_support_is_scale_equivariant(scale: float) -> None:
    # POT's stopping threshold is absolute: at scale 1e-5 it used to stop after one step
    clouds = _clouds(0, (30, 30, 30), 2)
    atoms, _ = empirical_barycenter(clouds)
    scaled, _ = empirical_barycenter([scale * cloud for cloud in clouds])
    with pytest.warns(RuntimeWarning, match="did not converge in numItermax=1"):
        one_step, _ = empirical_barycenter([scale * cloud for cloud in clouds], numItermax=1)
    torch.testing.assert_close(scaled / scale, atoms, rtol=1e-12, atol=1e-12)
    assert (scaled - one_step).abs().max() > 1e-3 * scale
    if scale in (2.0**-17, 2.0**20):  # powers of two: every digit the same
        assert torch.equal(scaled, scale * atoms)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_free_support_half_precision_computes_in_float32(dtype: torch.dtype) -> None:
    # uniform masses 1/11 in float16 failed POT's mass check; bfloat16 POT's backend
    clouds = [cloud.to(dtype) for cloud in _clouds(1, (3, 11), 2)]
    atoms, masses = empirical_barycenter(clouds)
    reference, _ = empirical_barycenter([cloud.float() for cloud in clouds])
    assert atoms.dtype == masses.dtype == dtype
    torch.testing.assert_close(atoms, reference.to(dtype))


def test_free_support_is_translation_equivariant() -> None:
    clouds = _clouds(5, (6, 4, 5), dim=2)
    shift = torch.tensor([10.0, -7.5], dtype=torch.float64)
    atoms, _ = empirical_barycenter(clouds, [0.2, 0.3, 0.5])
    shifted, _ = empirical_barycenter([c + shift for c in clouds], [0.2, 0.3, 0.5])
    torch.testing.assert_close(shifted, atoms + shift)


@settings(max_examples=30, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]), exponent=st.floats(-30.0, 30.0))
@example(dtype=torch.float32, exponent=-25.0)
@example(dtype=torch.float32, exponent=20.0)
def test_free_support_is_scale_equivariant_in_every_dtype(
    dtype: torch.dtype, exponent: float
) -> None:
    # the clouds' spread was squared in their dtype: in float32 wrong atoms below a spread
    # of about 1e-23, and zeros with POT's "Problem infeasible" above about 1.8e19
    factor = 10.0**exponent
    clouds = _clouds(0, (6, 6), 2)
    atoms, _ = empirical_barycenter(clouds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled, masses = empirical_barycenter([(factor * cloud).to(dtype) for cloud in clouds])
    assert scaled.dtype == masses.dtype == dtype
    tolerance = 1e-5 if dtype is torch.float32 else 1e-12
    torch.testing.assert_close(
        scaled.double() / factor, atoms, rtol=tolerance, atol=tolerance * atoms.abs().max()
    )


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    dim=st.integers(1, 3),
    k=st.integers(1, 6),
    data=st.data(),
)
def test_free_support_permutation_invariance_and_hull(
    seed: int, sizes: list[int], dim: int, k: int, data: st.DataObject
) -> None:
    clouds = _clouds(seed, tuple(sizes), dim)
    masses = [_simplex(seed + i, len(c)) for i, c in enumerate(clouds)]
    weights = _simplex(seed, len(clouds))
    init = _clouds(seed + 1, (k,), dim)[0]
    atoms, b = empirical_barycenter(clouds, weights, init=init, sample_weights=masses)

    order = data.draw(st.permutations(range(len(clouds))))
    permuted, _ = empirical_barycenter(
        [clouds[i] for i in order],
        weights[order],
        init=init,
        sample_weights=[masses[i] for i in order],
    )
    torch.testing.assert_close(permuted, atoms)
    # Every atom is a λ-average of barycentric projections, so it lies in the bounding box.
    points = torch.cat(clouds)
    assert bool((atoms >= points.min(0).values - 1e-9).all())
    assert bool((atoms <= points.max(0).values + 1e-9).all())
    torch.testing.assert_close(b.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_free_support_warns_when_not_converged() -> None:
    clouds = _clouds(6, (10, 10), dim=2)
    with pytest.warns(RuntimeWarning, match="numItermax=1"):
        empirical_barycenter(clouds, numItermax=1, stopThr=0.0)


# --- sinkhorn -----------------------------------------------------------------------


def test_sinkhorn_matches_pot_numpy() -> None:
    support = _clouds(7, (10,), dim=2)[0]
    histograms = _simplex(8, 10, 3)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    returned, bary = empirical_barycenter(
        histograms, weights, method="sinkhorn", support=support, reg=0.5, stopThr=1e-10
    )
    expected = ot.bregman.barycenter(
        histograms.numpy(),
        ot.dist(support.numpy(), support.numpy()),
        0.5,
        weights=weights.numpy(),
        stopThr=1e-10,
    )
    assert returned is not None
    torch.testing.assert_close(returned, support, rtol=0, atol=0)
    np.testing.assert_allclose(bary.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_sinkhorn_with_a_cost_returns_no_support() -> None:
    support = _grid(6)
    histograms = _simplex(9, 6, 2)
    returned, bary = empirical_barycenter(
        histograms, method="sinkhorn", cost=ot.dist(support, support), reg=0.1
    )
    _, from_support = empirical_barycenter(histograms, method="sinkhorn", support=support, reg=0.1)
    assert returned is None
    torch.testing.assert_close(bary, from_support)


def test_sinkhorn_of_identical_histograms_tends_to_the_histogram() -> None:
    x = _grid(30)[:, 0]
    a = torch.exp(-((x - 0.4) ** 2) / 0.02) + 0.5 * torch.exp(-((x - 0.8) ** 2) / 0.005)
    a = a / a.sum()
    errors = []
    for reg in (1e-2, 1e-3, 3e-4):
        _, bary = empirical_barycenter(
            torch.stack([a, a, a], 1), method="sinkhorn", support=_grid(30), reg=reg
        )
        errors.append((bary - a).abs().sum().item())
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-2


def test_sinkhorn_gradcheck() -> None:
    # A fixed iteration count (stopThr=0) makes the output one smooth map of the inputs,
    # whose exact derivative autograd computes through the unrolled iterations. The
    # histograms are parametrised off the simplex so that gradcheck's perturbations stay
    # valid inputs.
    support = _grid(5)

    def barycenter(raw: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return empirical_barycenter(
            raw / raw.sum(0),
            weights,
            method="sinkhorn",
            support=support,
            reg=0.1,
            numItermax=30,
            stopThr=0.0,
        )[1]

    raw = _simplex(10, 5, 3).requires_grad_()
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="did not converge in numItermax=30"):
        assert torch.autograd.gradcheck(barycenter, (raw, weights))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sinkhorn_shows_no_third_party_warning(dtype) -> None:
    # POT's Sinkhorn barycenter transposes 1-D tensors with `.T`, which torch deprecates
    # with a UserWarning; here every warning is an error.
    filters = list(warnings.filters)
    grid = _grid(5).to(dtype)
    diracs = torch.eye(5, dtype=dtype)[:, [0, 4]]
    for geometry in ({"support": grid}, {"cost": ot.dist(grid, grid)}):
        _, histogram = empirical_barycenter(diracs, method="sinkhorn", reg=0.05, **geometry)
        # two Diracs at the ends of the grid: a symmetric histogram peaked in the middle
        assert histogram.dtype == dtype and histogram.argmax().item() == 2
        torch.testing.assert_close(histogram, histogram.flip(0))
    assert warnings.filters == filters  # the silencing does not outlive the call


def test_sinkhorn_that_does_not_converge_warns_once_at_the_caller() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        empirical_barycenter(
            _simplex(19, 5, 3),
            method="sinkhorn",
            support=_grid(5),
            reg=0.1,
            numItermax=5,
            stopThr=0.0,
        )
    assert [w.category for w in caught] == [RuntimeWarning]
    assert "numItermax=5" in str(caught[0].message)
    assert caught[0].filename == __file__


def _two_bumps(n: int) -> torch.Tensor:
    """Two histograms on the grid of ``n`` points: bumps at 0.2 and 0.8."""
    x = _grid(n).squeeze(1)
    return torch.stack(
        [torch.softmax(-(((x - 0.2) / 0.1) ** 2), 0), torch.softmax(-(((x - 0.8) / 0.15) ** 2), 0)],
        1,
    )


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from([torch.float32, torch.float64]),
    exponent=st.floats(-30.0, 30.0),
    geometry=st.sampled_from(["support", "cost"]),
)
@example(dtype=torch.float32, exponent=-25.0, geometry="support")
@example(dtype=torch.float32, exponent=-18.0, geometry="cost")
@example(dtype=torch.float32, exponent=-20.0, geometry="support")
def test_sinkhorn_is_scale_equivariant_in_every_dtype(
    dtype: torch.dtype, exponent: float, geometry: str
) -> None:
    # the cost was formed and `reg` cast in the data's dtype: in float32 `reg` underflowed
    # to 0 below a support of about 1e-22 (an error blaming `reg`), and the cost went
    # subnormal below about 1e-19 (a histogram off by 1e-4, silently)
    if dtype is torch.float32 and geometry == "cost":
        assume(abs(exponent) <= 18)  # the cost ∝ factor² within float32's normal range
    factor = 10.0**exponent
    histograms, support = _two_bumps(9), _grid(9)
    _, expected = empirical_barycenter(histograms, method="sinkhorn", support=support, reg=0.05)
    if geometry == "support":
        given_geometry = {"support": (factor * support).to(dtype)}
    else:
        given_geometry = {"cost": (factor**2 * ot.dist(support, support)).to(dtype)}
    _, histogram = empirical_barycenter(
        histograms.to(dtype), method="sinkhorn", reg=0.05 * factor**2, **given_geometry
    )
    assert histogram.dtype == dtype
    tolerance = 1e-6 if dtype is torch.float32 else 1e-13
    torch.testing.assert_close(histogram.double(), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("shift", [1e3, -1e4, 1e5])
def test_sinkhorn_is_translation_invariant_in_float32(shift: float) -> None:
    # POT's squared distances ‖x‖² + ‖y‖² − 2⟨x, y⟩ cancelled the offset in float32: a
    # histogram off by 0.03 at 1e3, 0.2 at 1e4, with no warning
    histograms, support = _two_bumps(9), _grid(9)
    _, expected = empirical_barycenter(histograms, method="sinkhorn", support=support, reg=0.05)
    _, histogram = empirical_barycenter(
        histograms.float(), method="sinkhorn", support=(support + shift).float(), reg=0.05
    )
    torch.testing.assert_close(histogram.double(), expected, rtol=0, atol=1e-6)


def test_sinkhorn_gradient_reaches_support_and_reg() -> None:
    support = _grid(6).requires_grad_()
    reg = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    _, bary = empirical_barycenter(_simplex(11, 6, 2), method="sinkhorn", support=support, reg=reg)
    (bary * torch.arange(6.0, dtype=torch.float64)).sum().backward()
    for leaf in (support, reg):
        assert leaf.grad is not None and bool(torch.isfinite(leaf.grad).all())
        assert leaf.grad.abs().sum() > 0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 8),
    count=st.integers(1, 4),
    reg=st.floats(0.05, 5.0),
    data=st.data(),
)
def test_sinkhorn_is_a_histogram_invariant_to_permuting_inputs(
    seed: int, n: int, count: int, reg: float, data: st.DataObject
) -> None:
    histograms = _simplex(seed, n, count)
    weights = _simplex(seed + 1, count)
    support = _grid(n)
    _, bary = empirical_barycenter(
        histograms, weights, method="sinkhorn", support=support, reg=reg, stopThr=1e-12
    )
    assert bool((bary >= 0).all())
    torch.testing.assert_close(bary.sum(), torch.tensor(1.0, dtype=torch.float64))

    order = list(data.draw(st.permutations(range(count))))
    _, permuted = empirical_barycenter(
        histograms[:, order],
        weights[order],
        method="sinkhorn",
        support=support,
        reg=reg,
        stopThr=1e-12,
    )
    torch.testing.assert_close(permuted, bary)


# --- dtype, device, conversions -------------------------------------------------------


def test_float32_in_float32_out() -> None:
    clouds = [c.float() for c in _clouds(12, (4, 5), dim=2)]
    atoms, b = empirical_barycenter(clouds, torch.tensor([0.4, 0.6]))
    assert atoms.dtype == b.dtype == torch.float32
    assert atoms.device == b.device == clouds[0].device

    histograms = _simplex(13, 6, 2).float()
    reg = torch.tensor(0.1, dtype=torch.float64)  # converted, not promoting the output
    support, bary = empirical_barycenter(histograms, method="sinkhorn", support=_grid(6), reg=reg)
    assert support is not None and support.dtype == torch.float32
    assert bary.dtype == torch.float32 and bary.device == histograms.device


def test_float32_masses_within_tolerance_are_accepted() -> None:
    # Off by 1e-5: inside float32's √eps tolerance, outside the 1e-6 that POT's network
    # simplex asserts, so the masses must be renormalised before reaching POT.
    clouds = [c.float() for c in _clouds(19, (5, 6), dim=2)]
    masses = [torch.full((len(c),), (1 + 1e-5) / len(c)) for c in clouds]
    atoms, _ = empirical_barycenter(clouds, sample_weights=masses)
    expected, _ = empirical_barycenter(clouds)
    torch.testing.assert_close(atoms, expected)


def test_numpy_inputs_give_tensors() -> None:
    clouds = [c.numpy() for c in _clouds(14, (3, 3), dim=2)]
    atoms, _ = empirical_barycenter(clouds, np.array([0.5, 0.5]))
    assert isinstance(atoms, torch.Tensor) and atoms.dtype == torch.float64
    support, bary = empirical_barycenter(
        _simplex(15, 4, 2).numpy(), method="sinkhorn", support=_grid(4).numpy(), reg=0.2
    )
    assert isinstance(support, torch.Tensor) and isinstance(bary, torch.Tensor)


def test_validation_flag_switches_value_checks_off() -> None:
    histograms = 2 * _simplex(16, 4, 2)
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        _, bary = empirical_barycenter(histograms, method="sinkhorn", support=_grid(4), reg=0.2)
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)
    assert bary.shape == (4,)
    with pytest.raises(ValueError, match="samples"):
        empirical_barycenter(histograms, method="sinkhorn", support=_grid(4), reg=0.2)


# --- bad input ----------------------------------------------------------------------

_CLOUDS = _clouds(17, (4, 5), dim=2)
_HISTOGRAMS = _simplex(18, 4, 2)
_GRID = _grid(4)


def _nan_cloud() -> list[torch.Tensor]:
    cloud = _CLOUDS[1].clone()
    cloud[2, 0] = float("nan")
    return [_CLOUDS[0], cloud]


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"samples": []}, "samples"),
        ({"samples": [_CLOUDS[0], torch.zeros(3, 3)]}, r"samples\[1\]"),
        ({"samples": [_CLOUDS[0], torch.zeros(0, 2)]}, r"samples\[1\]"),
        ({"samples": [torch.zeros(3)]}, r"samples\[0\]"),
        ({"samples": _nan_cloud()}, r"samples\[1\]"),
        ({"samples": _CLOUDS, "weights": [0.5, 0.3, 0.2]}, "weights"),
        ({"samples": _CLOUDS, "weights": [[0.5, 0.5]]}, "weights"),
        ({"samples": _CLOUDS, "weights": [-0.5, 1.5]}, "weights"),
        ({"samples": _CLOUDS, "weights": [0.0, 0.0]}, "weights"),
        ({"samples": _CLOUDS, "weights": [float("inf"), 1.0]}, "weights"),
        ({"samples": _CLOUDS, "sample_weights": [torch.full((4,), 0.25)]}, "sample_weights"),
        (
            {
                "samples": _CLOUDS,
                "sample_weights": [torch.full((4,), 0.25), torch.full((4,), 0.25)],
            },
            r"sample_weights\[1\]",
        ),
        (
            {"samples": _CLOUDS, "sample_weights": [torch.full((4,), 0.3), torch.full((5,), 0.2)]},
            r"sample_weights\[0\]",
        ),
        (
            {
                "samples": _CLOUDS,
                "sample_weights": [torch.tensor([0.5, 0.5, 0.5, -0.5]), torch.full((5,), 0.2)],
            },
            r"sample_weights\[0\]",
        ),
        ({"samples": _CLOUDS, "support_size": 0}, "support_size"),
        ({"samples": _CLOUDS, "support_size": 2.0}, "support_size"),
        ({"samples": _CLOUDS, "support_size": True}, "support_size"),
        ({"samples": [_CLOUDS[0].to(torch.complex128)]}, r"samples\[0\]"),
        # complex data after the first cloud used to be cast to its real part, silently
        ({"samples": [_CLOUDS[0], _CLOUDS[1].to(torch.complex128)]}, r"samples\[1\]` must be real"),
        ({"samples": _CLOUDS, "weights": torch.tensor([1 + 0j, 1 + 3j])}, "`weights` must be real"),
        ({"samples": _CLOUDS, "weights": [1.0, 1j]}, "`weights` must be real"),
        ({"samples": _CLOUDS, "init": np.zeros((3, 2), dtype=complex)}, "`init` must be real"),
        (
            {
                "samples": _CLOUDS,
                "sample_weights": [torch.full((4,), 0.25), torch.full((5,), 0.2 + 0j)],
            },
            r"sample_weights\[1\]` must be real",
        ),
        ({"samples": _CLOUDS, "numItermax": 0}, "numItermax"),
        ({"samples": _CLOUDS, "numItermax": -5}, "numItermax"),
        ({"samples": _CLOUDS, "numItermax": 2.5}, "numItermax"),
        ({"samples": _CLOUDS, "stopThr": float("nan")}, "stopThr"),
        ({"samples": _CLOUDS, "stopThr": -1.0}, "stopThr"),
        ({"samples": _CLOUDS, "init": torch.zeros(3, 3)}, "init"),
        ({"samples": _CLOUDS, "init": torch.full((3, 2), float("nan"))}, "init"),
        ({"samples": _CLOUDS, "init": torch.zeros(3, 2), "support_size": 4}, "support_size"),
        ({"samples": _CLOUDS, "reg": 0.1}, "reg"),
        ({"samples": _CLOUDS, "cost": torch.zeros(4, 4)}, "cost"),
        ({"samples": _CLOUDS, "support": _GRID}, "support"),
        ({"samples": _CLOUDS, "method": "greenkhorn"}, "method"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_free_support_bad_input(arguments: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        empirical_barycenter(**arguments)


def _sinkhorn_arguments(**overrides: object) -> dict:
    return {"samples": _HISTOGRAMS, "method": "sinkhorn", "support": _GRID, "reg": 0.1, **overrides}


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (_sinkhorn_arguments(samples=torch.zeros(4, 0)), "samples"),
        (_sinkhorn_arguments(samples=_HISTOGRAMS[:, 0]), "samples"),
        (_sinkhorn_arguments(samples=1.5 * _HISTOGRAMS), "samples"),
        (_sinkhorn_arguments(samples=_HISTOGRAMS - _HISTOGRAMS.mean()), "samples"),
        (_sinkhorn_arguments(samples=torch.full((4, 2), float("nan"))), "samples"),
        (_sinkhorn_arguments(weights=[1.0, 1.0, 1.0]), "weights"),
        (_sinkhorn_arguments(weights=[-1.0, 2.0]), "weights"),
        (_sinkhorn_arguments(reg=None), "reg"),
        (_sinkhorn_arguments(reg=0.0), "reg"),
        (_sinkhorn_arguments(reg=-1.0), "reg"),
        (_sinkhorn_arguments(reg=float("inf")), "reg"),
        (_sinkhorn_arguments(reg=torch.tensor([0.1, 0.1])), "reg"),
        (_sinkhorn_arguments(reg="0.1"), "reg"),
        (_sinkhorn_arguments(reg=float("nan")), "reg"),
        (_sinkhorn_arguments(samples=[_HISTOGRAMS[:, 0], _HISTOGRAMS[:, 1]]), "samples"),
        (_sinkhorn_arguments(support=_GRID.to(torch.complex128)), "`support` must be real"),
        (_sinkhorn_arguments(support=None, cost=torch.zeros(4, 4) + 1j), "`cost` must be real"),
        (_sinkhorn_arguments(numItermax=0), "numItermax"),
        (_sinkhorn_arguments(support=None), "cost"),
        (_sinkhorn_arguments(cost=torch.zeros(4, 4)), "cost"),
        (_sinkhorn_arguments(support=None, cost=torch.zeros(4, 3)), "cost"),
        (_sinkhorn_arguments(support=None, cost=torch.full((4, 4), float("inf"))), "cost"),
        (_sinkhorn_arguments(support=_grid(5)), "support"),
        (_sinkhorn_arguments(support=torch.zeros(4)), "support"),
        (_sinkhorn_arguments(support_size=3), "support_size"),
        (_sinkhorn_arguments(init=_GRID), "init"),
        (_sinkhorn_arguments(sample_weights=[_HISTOGRAMS[:, 0]]), "sample_weights"),
        # exp(-cost / reg) underflows: a silent NaN in POT, an error here.
        (_sinkhorn_arguments(support=100 * _GRID, reg=1e-3), "reg"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_sinkhorn_bad_input(arguments: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        empirical_barycenter(**arguments)


def test_unknown_solver_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="max_iter"):
        empirical_barycenter(_CLOUDS, max_iter=10)
