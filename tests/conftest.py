"""Shared fixtures and the hypothesis profile of the test suite."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch.distributions import Distribution

settings.register_profile(
    "barycentric",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("barycentric")


@pytest.fixture
def generator() -> torch.Generator:
    """A freshly seeded generator: each test draws the same numbers on every run."""
    return torch.Generator().manual_seed(20240917)


@pytest.fixture
def validation_disabled():
    """``torch.distributions`` validation switched off for the test, then restored."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)
