"""The tensor layer: barycenters of Gaussians given as raw parameter tensors.

Experts are stacked along the axis before the event axes: ``loc (..., M, d)``,
``scale (..., M, d)`` (standard deviations) or ``cov (..., M, d, d)``; ``weights`` are
non-negative, broadcastable to ``(..., M)``, and normalised to sum to one. Results drop the
``M`` axis. The distribution-level functions of :mod:`barycentric` are thin adapters over
these.

Parameters are tensors, or numpy arrays and nested sequences of numbers, converted as
:func:`torch.as_tensor` converts them (onto the device of the tensors among them). The
barycenter kernels compute in the promoted dtype of ``loc`` and ``scale``/``cov``
(float32 with float64 gives float64); integer or bool parameters are promoted to the
default float dtype, as :func:`torch.sqrt` promotes them, and complex ones, or values
that are not numbers, raise ``ValueError`` naming the argument. The event size ``d``
must be at least 1.
"""

from barycentric.functional.gaussian_kl import (
    forward_kl_moments_diag,
    forward_kl_moments_full,
    reverse_kl_barycenter_diag,
    reverse_kl_barycenter_full,
)
from barycentric.functional.gaussian_wasserstein import (
    FixedPointInfo,
    default_tolerance,
    wasserstein_barycenter_diag,
    wasserstein_barycenter_full,
    wasserstein_distance_diag,
    wasserstein_distance_full,
)
from barycentric.functional.subsets import MAX_SUBSETS, subset_masks

__all__ = [
    "MAX_SUBSETS",
    "FixedPointInfo",
    "default_tolerance",
    "forward_kl_moments_diag",
    "forward_kl_moments_full",
    "reverse_kl_barycenter_diag",
    "reverse_kl_barycenter_full",
    "subset_masks",
    "wasserstein_barycenter_diag",
    "wasserstein_barycenter_full",
    "wasserstein_distance_diag",
    "wasserstein_distance_full",
]
