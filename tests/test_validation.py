"""Bad input raises a ValueError that names the argument; validation can be switched off."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from helpers import diagonal, fixed_point_problems, full, validation  # noqa: F401 (a fixture)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.distributions import (
    Categorical,
    Independent,
    Laplace,
    MixtureSameFamily,
    Normal,
)

import barycentric as bc
from barycentric import functional as F
from barycentric._validation import all_finite

M, D, B = 3, 2, 4
NAN = float("nan")


def _ones(*shape):
    return torch.ones(*shape, dtype=torch.float64)


def _zeros(*shape):
    return torch.zeros(*shape, dtype=torch.float64)


def _eyes(*batch):
    return torch.eye(D, dtype=torch.float64).expand(*batch, D, D).clone()


def _with(tensor, index, value):
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


def _diag(loc=None, scale=None):
    """Diagonal experts (B, M) built without torch's own checks, so ours are exercised."""
    loc = _zeros(B, M, D) if loc is None else loc
    scale = _ones(B, M, D) if scale is None else scale
    return diagonal(loc, scale, validate_args=False)


def _full(loc=None, cov=None):
    loc = _zeros(B, M, D) if loc is None else loc
    cov = _eyes(B, M) if cov is None else cov
    return full(loc, cov, validate_args=False)


NON_SYMMETRIC = _with(_eyes(B, M), (0, 1, 0, 1), 0.5)
NOT_POSITIVE_DEFINITE = _with(
    _eyes(B, M), (0, 1), torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)
)


def _wasserstein_distance_shapes():
    return bc.wasserstein_distance(
        diagonal(_zeros(4, D), _ones(4, D)), diagonal(_zeros(3, D), _ones(3, D))
    )


CASES = [
    # shapes
    ("weights", lambda: bc.wasserstein_barycenter(_diag(), _ones(M + 1))),
    ("weights", lambda: bc.kl_barycenter(_diag(), _ones(B + 1, M))),
    ("weights", lambda: bc.kl_barycenter(_diag(), _ones(2, B, M))),
    (
        "weights",
        lambda: F.reverse_kl_barycenter_diag(_zeros(B, M, D), _ones(B, M, D), _ones(M + 1)),
    ),
    ("mask", lambda: bc.kl_barycenter(_diag(), mask=torch.ones(B, M - 1, dtype=torch.bool))),
    ("mask", lambda: bc.mixture_of_barycenters(_diag(), mask=torch.ones(M + 1, dtype=torch.bool))),
    (
        "cov",
        lambda: F.wasserstein_barycenter_full(
            _zeros(B, M, D), torch.eye(D + 1).double().expand(B, M, D + 1, D + 1)
        ),
    ),
    (
        "cov",
        lambda: F.reverse_kl_barycenter_full(
            _zeros(B, M, D), torch.eye(D + 1).double().expand(B, M, D + 1, D + 1)
        ),
    ),
    (
        "cov",
        lambda: F.forward_kl_moments_full(_zeros(B, M, D), _eyes(B, M - 1)),
    ),
    (
        "scale",
        lambda: F.reverse_kl_barycenter_diag(_zeros(B, M, D), _ones(B, M, D + 1)),
    ),
    (
        "scale",
        lambda: F.forward_kl_moments_diag(_zeros(B, M, D), _ones(B, M, D + 1)),
    ),
    (
        "batch",
        _wasserstein_distance_shapes,
    ),
    (
        "event",
        lambda: bc.wasserstein_distance(
            diagonal(_zeros(D), _ones(D)), diagonal(_zeros(D + 1), _ones(D + 1))
        ),
    ),
    (
        "experts",
        lambda: bc.kl_barycenter(
            [diagonal(_zeros(D), _ones(D)), diagonal(_zeros(D + 1), _ones(D + 1))]
        ),
    ),
    # values
    ("weights", lambda: bc.kl_barycenter(_diag(), torch.tensor([1.0, -1.0, 1.0]))),
    (
        "weights",
        lambda: F.forward_kl_moments_diag(
            _zeros(M, D), _ones(M, D), torch.tensor([1.0, -0.5, 1.0])
        ),
    ),
    ("weights", lambda: bc.wasserstein_barycenter(_diag(), torch.tensor([1.0, NAN, 1.0]))),
    # complex weights used to lose their imaginary parts with only torch's warning
    *(
        ("`weights` must be real", lambda kernel=kernel, weights=weights: kernel(weights))
        for kernel in [
            lambda w: bc.wasserstein_barycenter(_diag(), w),
            lambda w: bc.wasserstein_barycenter(_full(), w),
            lambda w: bc.kl_barycenter(_diag(), w),
            lambda w: F.forward_kl_moments_full(_zeros(B, M, D), _eyes(B, M), w),
        ]
        for weights in [torch.tensor([1.0, 1j, 1.0]), [1.0, 1j, 1.0], np.array([1, 2, 3j])]
    ),
    (
        "weights",
        lambda: bc.mixture_of_barycenters(_diag(), weights=torch.tensor([1.0, float("inf"), 1.0])),
    ),
    ("loc", lambda: bc.kl_barycenter(_diag(loc=_with(_zeros(B, M, D), (0, 1, 0), NAN)))),
    (
        "loc",
        lambda: bc.wasserstein_barycenter(
            _full(loc=_with(_zeros(B, M, D), (0, 1, 0), float("inf")))
        ),
    ),
    ("loc", lambda: bc.product_of_experts(_diag(loc=_with(_zeros(B, M, D), (0, 1, 0), NAN)))),
    (
        "scale",
        lambda: bc.kl_barycenter(
            _diag(scale=_with(_ones(B, M, D), (0, 1, 0), NAN)), direction="forward", project=True
        ),
    ),
    (
        "scale",
        lambda: bc.wasserstein_barycenter(_diag(scale=_with(_ones(B, M, D), (0, 1, 0), 0.0))),
    ),
    (
        "scale",
        lambda: bc.mixture_of_barycenters(_diag(scale=_with(_ones(B, M, D), (0, 1, 0), -1.0))),
    ),
    (
        "scale",
        lambda: bc.kl_barycenter(
            _diag(scale=_with(_ones(B, M, D), (0, 1, 0), -1.0)), direction="forward"
        ),
    ),
    (
        "cov",
        lambda: F.forward_kl_moments_full(_zeros(B, M, D), _with(_eyes(B, M), (0, 1, 0, 0), NAN)),
    ),
    ("cov", lambda: bc.kl_barycenter(_full(cov=NON_SYMMETRIC))),
    ("cov", lambda: bc.wasserstein_barycenter(_full(cov=NON_SYMMETRIC))),
    ("cov", lambda: F.reverse_kl_barycenter_full(_zeros(B, M, D), NOT_POSITIVE_DEFINITE)),
    ("cov", lambda: F.forward_kl_moments_full(_zeros(B, M, D), NOT_POSITIVE_DEFINITE)),
    (
        "loc",
        lambda: bc.wasserstein_distance(_diag(loc=_with(_zeros(B, M, D), (0, 1, 0), NAN)), _diag()),
    ),
    (
        "scale",
        lambda: bc.wasserstein_distance(_diag(scale=-_ones(B, M, D)), _diag()),
    ),
    (
        "cov",
        lambda: bc.wasserstein_distance(_full(cov=NON_SYMMETRIC), _full()),
    ),
    # rows with no expert left
    ("mask", lambda: bc.kl_barycenter(_diag(), mask=torch.tensor([False, False, False]))),
    ("weights", lambda: bc.wasserstein_barycenter(_full(), _with(_ones(B, M), 2, 0.0))),
    (
        "mask",
        lambda: bc.product_of_experts(
            _diag(), mask=_with(torch.ones(B, M, dtype=torch.bool), 1, False)
        ),
    ),
    (
        "mask",
        lambda: bc.mixture_of_barycenters(
            _diag(), mask=_with(torch.ones(B, M, dtype=torch.bool), 0, False)
        ),
    ),
    ("mask", lambda: bc.kl_barycenter(_diag(), mask=torch.ones(M))),
    # names
    ("divergence", lambda: bc.barycenter(_diag(), divergence="kl")),
    ("divergence", lambda: bc.mixture_of_barycenters(_diag(), divergence="jensen_shannon")),
    ("direction", lambda: bc.kl_barycenter(_diag(), direction="both")),
    ("subsets", lambda: bc.mixture_of_barycenters(_diag(), "pairs")),
    ("subsets", lambda: bc.mixture_of_barycenters(_diag(), M + 1)),
    ("subsets", lambda: bc.mixture_of_barycenters(_diag(), torch.ones(2, M))),
    # families and layout
    (
        "experts",
        lambda: bc.kl_barycenter([diagonal(_zeros(D), _ones(D)), full(_zeros(D), _eyes())]),
    ),
    ("experts", lambda: bc.kl_barycenter(Laplace(_zeros(M), _ones(M)))),
    (
        "experts",
        lambda: bc.wasserstein_barycenter(Independent(Laplace(_zeros(M, D), _ones(M, D)), 1)),
    ),
    (
        "experts",
        lambda: bc.mixture_of_barycenters(Independent(Normal(_zeros(M, D, D), _ones(M, D, D)), 2)),
    ),
    ("experts", lambda: bc.kl_barycenter([])),
    ("experts", lambda: bc.kl_barycenter(diagonal(_zeros(D), _ones(D)))),
    ("p", lambda: bc.wasserstein_distance(Normal(0.0, 1.0), diagonal(_zeros(D), _ones(D)))),
    ("dim", lambda: bc.kl_barycenter(_diag(), dim=2)),
    ("dim", lambda: bc.wasserstein_barycenter(_diag(), dim=-3)),
    ("dim", lambda: bc.kl_barycenter([_diag(), _diag()], dim=0)),
    ("prior", lambda: bc.product_of_experts(_diag(), prior=full(_zeros(D), _eyes()))),
    # the prior's own event size and parameters (named `loc`, or a broadcasting error, before)
    ("prior", lambda: bc.product_of_experts(_diag(), prior=diagonal(_zeros(D + 1), _ones(D + 1)))),
    (
        "prior",
        lambda: bc.product_of_experts(
            _diag(), prior=diagonal(_with(_zeros(D), 0, NAN), _ones(D), validate_args=False)
        ),
    ),
    (
        "prior",
        lambda: bc.product_of_experts(
            _diag(), prior=diagonal(_zeros(D), -_ones(D), validate_args=False)
        ),
    ),
    (
        "prior",
        lambda: bc.product_of_experts(_diag(), prior=diagonal(_zeros(B + 1, D), _ones(B + 1, D))),
    ),
    ("n", lambda: bc.stratified_rsample(bc.mixture_of_barycenters(_diag()), 0)),
    ("n", lambda: bc.stratified_rsample(bc.mixture_of_barycenters(_diag()), True)),
    ("n", lambda: bc.stratified_rsample(bc.mixture_of_barycenters(_diag()), 2.0)),
    ("n", lambda: bc.stratified_rsample(bc.mixture_of_barycenters(_diag()), np.float64(2.0))),
    ("mixture", lambda: bc.stratified_rsample(_diag(), 2)),
    # types
    ("dim", lambda: bc.wasserstein_barycenter(_diag(), dim=1.0)),
    ("dim", lambda: bc.kl_barycenter(_diag(), dim=True)),
    ("dim", lambda: bc.mixture_of_barycenters(_diag(), dim=1.0)),
    ("dim", lambda: bc.product_of_experts(_full(), dim="1")),
    ("subsets", lambda: bc.mixture_of_barycenters(_diag(), np.float64(2.0))),
    ("loc", lambda: F.wasserstein_barycenter_diag(_zeros(M, D).to(torch.complex128), _ones(M, D))),
    ("cov", lambda: F.reverse_kl_barycenter_full(_zeros(M, D), _eyes(M).to(torch.complex128))),
    # full covariances in a dtype torch.linalg does not decompose (float16 before: torch's
    # NotImplementedError "cholesky_cpu" not implemented for 'Half')
    *(
        (
            "cov",
            lambda kernel=kernel, dtype=dtype: kernel(_zeros(M, D).to(dtype), _eyes(M).to(dtype)),
        )
        for kernel in (F.wasserstein_barycenter_full, F.reverse_kl_barycenter_full)
        for dtype in (torch.float16, torch.bfloat16)
    ),
    # broadcasting of a sequence of experts
    (
        "experts",
        lambda: bc.wasserstein_barycenter(
            [diagonal(_zeros(B, D), _ones(B, D)), diagonal(_zeros(B + 1, D), _ones(B + 1, D))]
        ),
    ),
    (
        "experts",
        lambda: bc.mixture_of_barycenters(
            [full(_zeros(B, D), _eyes(B)), full(_zeros(2, D), _eyes(2))]
        ),
    ),
    # event size 0
    *(
        ("loc", lambda kernel=kernel, spread=spread: kernel(_zeros(B, M, 0), spread))
        for kernel, spread in [
            (F.wasserstein_barycenter_diag, _ones(B, M, 0)),
            (F.reverse_kl_barycenter_diag, _ones(B, M, 0)),
            (F.forward_kl_moments_diag, _ones(B, M, 0)),
            (F.wasserstein_barycenter_full, _ones(B, M, 0, 0)),
            (F.reverse_kl_barycenter_full, _ones(B, M, 0, 0)),
            (F.forward_kl_moments_full, _ones(B, M, 0, 0)),
        ]
    ),
    ("experts", lambda: bc.wasserstein_barycenter(_diag(_zeros(B, M, 0), _ones(B, M, 0)))),
    ("experts", lambda: bc.kl_barycenter(_full(_zeros(B, M, 0), _ones(B, M, 0, 0)))),
    ("experts", lambda: bc.mixture_of_barycenters(_diag(_zeros(B, M, 0), _ones(B, M, 0)))),
    ("experts", lambda: bc.product_of_experts([full(_zeros(0), _ones(0, 0), False)] * M)),
    ("p", lambda: bc.wasserstein_distance(_diag(_zeros(B, M, 0), _ones(B, M, 0)), _diag())),
    ("q", lambda: bc.wasserstein_distance(_full(), _full(_zeros(B, M, 0), _ones(B, M, 0, 0)))),
]


@pytest.mark.parametrize(("name", "call"), CASES)
def test_bad_input_raises_value_error_naming_the_argument(name, call) -> None:
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.usefixtures("validation_disabled")
def test_validation_can_be_switched_off(monkeypatch) -> None:
    factorise = torch.linalg.cholesky_ex

    def no_check(*args, **kwargs):
        # the solvers factorise too; only the check in barycentric._validation is refused
        if sys._getframe(1).f_globals["__name__"] == "barycentric._validation":
            raise AssertionError("the positive definiteness check ran with validation off")
        return factorise(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", no_check)
    # Each of these raises with validation on; off, they compute (garbage in, garbage out).
    bc.kl_barycenter(_diag(), torch.tensor([2.0, -1.0, 1.0]))
    bc.wasserstein_barycenter(_full(cov=NON_SYMMETRIC))
    bc.kl_barycenter(_diag(scale=_with(_ones(B, M, D), (0, 1, 0), -1.0)))
    F.forward_kl_moments_full(_zeros(B, M, D), NOT_POSITIVE_DEFINITE)


def test_validation_flag_is_restored_by_the_fixture() -> None:
    assert torch.distributions.Distribution._validate_args
    with pytest.raises(ValueError, match="weights"):
        bc.kl_barycenter(_diag(), torch.tensor([2.0, -1.0, 1.0]))


# --- inputs that are accepted: numpy integers, integer and mixed-dtype tensors -----------

KERNELS = [
    (F.wasserstein_barycenter_diag, False),
    (F.reverse_kl_barycenter_diag, False),
    (F.forward_kl_moments_diag, False),
    (F.wasserstein_barycenter_full, True),
    (F.reverse_kl_barycenter_full, True),
    (F.forward_kl_moments_full, True),
]


def _integer_experts() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer means (B, M, D), scales (B, M, D) and SPD covariances (B, M, D, D)."""
    loc = torch.arange(B * M * D).reshape(B, M, D) % 5 - 2
    scale = torch.arange(B * M * D).reshape(B, M, D) % 3 + 1
    cov = torch.tensor([[2, 1], [1, 3]]).expand(B, M, D, D) * scale[..., :1, None]
    return loc, scale, cov


@pytest.mark.parametrize("default", [torch.float32, torch.float64])
@pytest.mark.parametrize(("kernel", "is_full"), KERNELS)
def test_integer_parameters_are_promoted_to_the_default_float_dtype(
    kernel, is_full, default
) -> None:
    loc, scale, cov = _integer_experts()
    spread = cov if is_full else scale
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        got = kernel(loc, spread)
    finally:
        torch.set_default_dtype(previous)
    want = kernel(loc.to(default), spread.to(default))
    for tensor, expected in zip(got, want, strict=True):
        assert tensor.dtype == default
        torch.testing.assert_close(tensor, expected)


@pytest.mark.parametrize(("kernel", "is_full"), KERNELS)
def test_mixed_float_dtypes_promote_to_the_wider(kernel, is_full) -> None:
    loc, scale, cov = (t.double() for t in _integer_experts())
    spread = cov if is_full else scale
    got = kernel(loc.float(), spread)
    want = kernel(loc.float().double(), spread)
    for tensor, expected in zip(got, want, strict=True):
        assert tensor.dtype == torch.float64
        torch.testing.assert_close(tensor, expected)


def test_numpy_integers_count_and_index_like_ints(generator) -> None:
    experts = diagonal(_zeros(B, M, D).normal_(generator=generator), _ones(B, M, D))
    torch.testing.assert_close(
        bc.wasserstein_barycenter(experts, dim=np.int64(0)).mean,
        bc.wasserstein_barycenter(experts, dim=0).mean,
    )
    mixture = bc.mixture_of_barycenters(experts, np.int64(2))
    pairs = bc.mixture_of_barycenters(experts, 2)
    torch.testing.assert_close(
        mixture.component_distribution.mean, pairs.component_distribution.mean
    )
    torch.manual_seed(0)
    drawn = bc.stratified_rsample(mixture, np.int64(2))
    torch.manual_seed(0)
    torch.testing.assert_close(drawn, bc.stratified_rsample(mixture, 2))
    assert drawn.shape == (2, B, 3, D)


@pytest.mark.parametrize("max_iter", [2.5, True, "3", 0], ids=["float", "bool", "str", "zero"])
def test_max_iter_must_be_a_positive_integer(max_iter) -> None:
    cov = torch.eye(2).expand(3, 2, 2)
    with pytest.raises(ValueError, match="`max_iter`"):
        F.wasserstein_barycenter_full(torch.zeros(3, 2), cov, max_iter=max_iter)


@pytest.mark.parametrize(
    "tol",
    [-1e-12, NAN, "1e-5", True, 1j, torch.tensor([1e-5, 1e-6])],
    ids=["negative", "nan", "str", "bool", "complex", "two-elements"],
)
def test_tol_must_be_a_real_number_of_at_least_zero(tol) -> None:
    cov = torch.eye(2).expand(3, 2, 2)
    with pytest.raises(ValueError, match="`tol`"):
        F.wasserstein_barycenter_full(torch.zeros(3, 2), cov, tol=tol)


@pytest.mark.parametrize("tol", [np.float32(1e-3), torch.tensor(1e-3), 0, float("inf")])
def test_tol_takes_any_real_number_of_at_least_zero(tol) -> None:
    cov, weights = fixed_point_problems(0, 2, 3, 3)
    loc = torch.zeros(2, 3, 3, dtype=torch.float64)
    if tol == 0:  # no residual is at most 0: every step runs, and the call says so
        with pytest.warns(RuntimeWarning, match="did not converge for 2 of 2"):
            _, _, info = F.wasserstein_barycenter_full(
                loc, cov, weights, tol=tol, max_iter=4, return_info=True
            )
        assert info.iterations == 4
        return
    info = F.wasserstein_barycenter_full(loc, cov, weights, tol=tol, return_info=True)[2]
    assert bool(info.converged.all()) and bool((info.residual <= float(tol)).all())
    # inf accepts the first step's residual; 1e-3 takes a few steps
    assert (info.iterations == 1) if tol == float("inf") else (info.iterations > 1)


def test_distance_kernels_promote_like_the_barycenters() -> None:
    # W2² between N(0, I) and N(0, 4I) in 2-D is 2 (σ: 1 → 2 in each dimension).
    zeros, ones = torch.zeros(2, dtype=torch.int64), torch.ones(2, dtype=torch.int64)
    diag = F.wasserstein_distance_diag(zeros, ones, zeros, 2 * ones)
    assert diag.dtype == torch.get_default_dtype() and diag.item() == 2.0
    mixed = F.wasserstein_distance_full(
        torch.zeros(2), torch.eye(2), torch.zeros(2, dtype=torch.float64), 4 * torch.eye(2).double()
    )
    assert mixed.dtype == torch.float64 and mixed.item() == pytest.approx(2.0, rel=1e-12)


def test_integer_covariances_get_the_float_tolerance() -> None:
    cov = torch.tensor([[[2, 1], [1, 2]], [[3, 0], [0, 1]], [[1, 0], [0, 5]]])
    _, bary, info = F.wasserstein_barycenter_full(
        torch.zeros(3, 2, dtype=torch.int64), cov, return_info=True
    )
    expected = F.wasserstein_barycenter_full(torch.zeros(3, 2), cov.float())[1]
    assert bary.dtype == torch.float32 and bool(info.converged)
    torch.testing.assert_close(bary, expected)


# entries that stress the sum of zeros: signed zeros, subnormals, the largest finite
# values (whose plain sum overflows), infinities and NaN
_EDGES = [0.0, -0.0, 5e-324, -5e-324, 1.0, -2.5, 1.7e308, -1.7e308, np.inf, -np.inf, np.nan]


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
        elements=st.one_of(st.sampled_from(_EDGES), st.floats(allow_nan=True, allow_infinity=True)),
    ),
    st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]),
    st.data(),
)
def test_all_finite_agrees_with_isfinite(values, dtype, data) -> None:
    x = torch.from_numpy(values).to(dtype)  # narrower dtypes overflow to inf here, as they would
    dims = data.draw(st.sets(st.integers(0, x.ndim - 1)), label="dims")
    dim = tuple(sorted(dims)) if dims else None
    expected = torch.isfinite(x).all() if dim is None else torch.isfinite(x).all(dim)
    assert torch.equal(all_finite(x, dim), expected)


def test_all_finite_sees_one_bad_entry_among_many() -> None:
    x = torch.full((1280, 16, 16), 1.7e308, dtype=torch.float64)
    assert bool(all_finite(x))
    for bad in (np.inf, -np.inf, np.nan):
        y = _with(x, (700, 3, 9), bad)
        rows = all_finite(y, (-2, -1))
        assert not bool(rows[700]) and int(rows.sum()) == 1279


@pytest.mark.parametrize(
    ("option", "value"),
    [("backward", "foo"), ("max_iter", -5), ("max_iter", 2.5), ("tol", -1.0), ("tol", NAN)],
)
@pytest.mark.parametrize("family", ["diag", "full"])
def test_solver_options_are_refused_alike_for_both_families(family, option, value) -> None:
    # the closed form of diagonal experts ignores the options, but a mistaken one is still
    # a mistake: before, it was accepted silently there and refused for full covariances
    experts = _diag() if family == "diag" else _full()
    with pytest.raises(ValueError, match=f"`{option}`"):
        bc.wasserstein_barycenter(experts, **{option: value})
    components = (
        diagonal(_zeros(2, D), _ones(2, D)) if family == "diag" else full(_zeros(2, D), _eyes(2))
    )
    mixture = MixtureSameFamily(Categorical(torch.ones(2)), components)
    with pytest.raises(ValueError, match=f"`{option}`"):
        bc.gmm_barycenter([mixture, mixture], **{option: value})


# --- arrays and sequences as parameters of the tensor layer ------------------------------


def _as(kind: str, x: torch.Tensor) -> object:
    """``x`` as users hold it: a numpy array (float64 or float32), nested lists or tuples."""
    if kind == "numpy":
        return x.numpy()
    if kind == "numpy32":
        return x.float().numpy()
    nested = x.tolist()
    if kind == "tuple":

        def freeze(item):
            return tuple(freeze(i) for i in item) if isinstance(item, list) else item

        nested = freeze(nested)
    return nested


KINDS = st.sampled_from(["tensor", "numpy", "numpy32", "list", "tuple"])
DISTANCES = [(F.wasserstein_distance_diag, False), (F.wasserstein_distance_full, True)]


@settings(max_examples=30, deadline=None)
@given(kinds=st.tuples(KINDS, KINDS, KINDS), index=st.integers(0, len(KERNELS) - 1))
def test_kernels_take_arrays_and_sequences_as_torch_as_tensor_makes_them(kinds, index) -> None:
    # numpy arrays failed on `.is_complex`, lists on `.ndim`, before any check named them
    kernel, is_full = KERNELS[index]
    loc, scale, cov = (t.double() for t in _integer_experts())
    weights = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    given_args = [
        x if kind == "tensor" else _as(kind, x)
        for kind, x in zip(kinds, (loc, cov if is_full else scale, weights), strict=True)
    ]
    expected = kernel(*(torch.as_tensor(x) for x in given_args))
    for got, want in zip(kernel(*given_args), expected, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("kernel", "is_full"), DISTANCES)
@pytest.mark.parametrize("kind", ["numpy", "numpy32", "list", "tuple"])
def test_distance_kernels_take_arrays_and_sequences(kernel, is_full, kind) -> None:
    loc, scale, cov = (t.double()[0] for t in _integer_experts())
    spread = cov if is_full else scale
    expected = kernel(loc, spread, torch.as_tensor(_as(kind, loc.flip(0))), spread.flip(0))
    torch.testing.assert_close(
        kernel(loc, spread, _as(kind, loc.flip(0)), spread.flip(0)), expected
    )


@pytest.mark.usefixtures("validation")
@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("loc", lambda: F.wasserstein_barycenter_diag([[0.0, 1.0], [1.0]], [[1.0], [1.0]])),
        ("scale", lambda: F.reverse_kl_barycenter_diag([[0.0], [1.0]], "ones")),
        ("cov", lambda: F.wasserstein_barycenter_full([[0.0], [1.0]], [[[1.0]], [[1.0, 2.0]]])),
        ("loc", lambda: F.forward_kl_moments_full(np.array([[1j], [0.0]]), [[[1.0]], [[1.0]]])),
        ("weights", lambda: F.forward_kl_moments_diag([[0.0], [1.0]], [[1.0], [1.0]], [1, [2]])),
        ("loc_q", lambda: F.wasserstein_distance_diag([0.0], [1.0], [[0.0], 1.0], [1.0])),
        ("cov_p", lambda: F.wasserstein_distance_full([0.0], {"a": 1}, [0.0], [[1.0]])),
    ],
)
def test_unconvertible_parameters_raise_value_error_naming_them(name, call) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        call()
