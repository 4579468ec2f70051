"""Subsets of experts as boolean membership matrices."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from barycentric.functional import subset_masks
from barycentric.functional import subsets as subsets_module


def _enumeration_forbidden(*args: object) -> None:
    raise AssertionError("the subsets were enumerated")


@pytest.mark.parametrize("m", [1, 2, 3, 5, 10])
def test_all_lists_every_nonempty_subset_once_in_size_major_order(m) -> None:
    masks = subset_masks("all", m)
    assert masks.dtype == torch.bool
    assert masks.shape == (2**m - 1, m)
    assert len({tuple(row.tolist()) for row in masks}) == 2**m - 1
    sizes = masks.sum(-1)
    assert bool((sizes[1:] >= sizes[:-1]).all())
    assert bool(masks[-1].all())


def test_all_for_three_experts_explicitly() -> None:
    expected = [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [1, 0, 1],
        [0, 1, 1],
        [1, 1, 1],
    ]
    assert subset_masks("all", 3).int().tolist() == expected


@pytest.mark.parametrize("m", [1, 4])
def test_singletons_are_the_identity(m) -> None:
    assert torch.equal(subset_masks("singletons", m), torch.eye(m, dtype=torch.bool))


@pytest.mark.parametrize(("m", "k"), [(4, 1), (4, 2), (4, 3), (4, 4), (6, 3)])
def test_size_k_gives_every_combination(m, k) -> None:
    masks = subset_masks(k, m)
    assert masks.shape == (math.comb(m, k), m)
    assert bool((masks.sum(-1) == k).all())
    chosen = [tuple(row.nonzero().squeeze(-1).tolist()) for row in masks]
    assert chosen == list(itertools.combinations(range(m), k))


@pytest.mark.parametrize("k", [np.int64(2), np.int32(2), np.uint8(2)])
def test_numpy_integer_size_is_an_int(k) -> None:
    assert torch.equal(subset_masks(k, 4), subset_masks(2, 4))


def test_bool_tensor_is_returned_as_given() -> None:
    members = torch.tensor([[True, False, True], [False, True, False]])
    assert torch.equal(subset_masks(members, 3), members)


def test_device_is_respected() -> None:
    assert subset_masks("all", 3, device="cpu").device.type == "cpu"
    assert subset_masks(torch.ones(1, 3, dtype=torch.bool), 3, device="meta").device.type == "meta"


@pytest.mark.parametrize(
    "subsets",
    [
        "pairs",
        0,
        4,
        -1,
        True,
        np.True_,
        2.0,
        np.float64(2.0),
        np.int64(4),
        torch.ones(2, 3),
        torch.ones(2, 4, dtype=torch.bool),
        torch.ones(3, dtype=torch.bool),
        torch.zeros(0, 3, dtype=torch.bool),
        torch.tensor([[True, False, False], [False, False, False]]),
    ],
)
def test_bad_subsets_raise(subsets) -> None:
    with pytest.raises(ValueError, match="subsets"):
        subset_masks(subsets, 3)


def test_too_many_subsets_are_refused_before_any_enumeration(monkeypatch) -> None:
    # "all" of 40 experts (2^40 - 1 subsets) ran a 24 GB machine out of memory; the
    # enumeration is replaced by a failure, so that this test cannot allocate either way
    monkeypatch.setattr(subsets_module, "_combinations", _enumeration_forbidden)
    with pytest.raises(
        ValueError,
        match=r"`subsets`='all' asks for 1099511627775 subsets of 40 experts, more than "
        r"MAX_SUBSETS = 65536; pass the subsets you need as a bool tensor of shape \(S, 40\)",
    ):
        subset_masks("all", 40)
    with pytest.raises(ValueError, match=r"`subsets`=20 asks for 137846528820 subsets of 40"):
        subset_masks(20, 40)
    with pytest.raises(ValueError, match="`subsets`='singletons' asks for 100000 subsets"):
        subset_masks("singletons", 100_000)


@pytest.mark.parametrize(("spec", "m", "count"), [("all", 3, 7), ("singletons", 5, 5), (2, 4, 6)])
def test_the_limit_is_max_subsets_and_spares_explicit_subsets(monkeypatch, spec, m, count) -> None:
    monkeypatch.setattr(subsets_module, "MAX_SUBSETS", count - 1)
    with pytest.raises(ValueError, match=f"asks for {count} subsets of {m} experts"):
        subset_masks(spec, m)
    explicit = torch.ones(count, m, dtype=torch.bool)
    assert torch.equal(subset_masks(explicit, m), explicit)
    monkeypatch.setattr(subsets_module, "MAX_SUBSETS", count)
    assert subset_masks(spec, m).shape == (count, m)


def test_nested_list_and_numpy_array_are_the_tensor() -> None:
    members = [[True, False, True], [False, True, False]]
    expected = torch.tensor(members)
    assert torch.equal(subset_masks(members, 3), expected)
    assert torch.equal(subset_masks(np.array(members), 3), expected)
    assert torch.equal(subset_masks(tuple(map(tuple, members)), 3), expected)


@pytest.mark.parametrize(
    "subsets",
    [[[True, False, True], [True]], [[1, 0, 1]], np.ones((2, 3)), [[True, True]], [], [[]]],
)
def test_bad_nested_lists_and_arrays_raise(subsets) -> None:
    with pytest.raises(ValueError, match="subsets"):
        subset_masks(subsets, 3)
