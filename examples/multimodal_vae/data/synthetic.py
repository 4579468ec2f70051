"""A tiny synthetic multimodal dataset made in memory, for tests and smoke runs."""

from __future__ import annotations

import numpy as np

from .base import ArrayDataset, ModalitySpec

_SPLIT_OFFSETS = {"train": 0, "test": 1}


def make_synthetic(
    split: str = "train",
    *,
    n: int = 512,
    num_modalities: int = 2,
    num_classes: int = 4,
    shape: tuple[int, int, int] = (1, 8, 8),
    noise: float = 0.1,
    seed: int = 0,
) -> ArrayDataset:
    """Build ``n`` samples of ``num_modalities`` images that share a class.

    Each (modality, class) pair has its own random binary prototype image; a sample is its
    class's prototype plus Gaussian noise of standard deviation ``noise``, clipped to
    ``[0, 1]``. Prototypes depend only on ``seed``, so train and test share them; the
    samples of each split come from their own stream of ``seed``. Labels cycle through the
    classes, so every class is equally frequent.

    Parameters
    ----------
    split : {"train", "test"}
    n : int
        Number of samples.
    num_modalities : int
        Number of image modalities, named ``m0``, ``m1``, ...
    num_classes : int
        Number of classes.
    shape : tuple of int
        ``(C, H, W)`` of every image.
    noise : float
        Standard deviation of the pixel noise.
    seed : int
        Seed of the prototypes and samples: equal seeds give equal datasets.

    Returns
    -------
    ArrayDataset
        Modalities float32 ``(C, H, W)`` in ``[0, 1]``, integer labels in ``[0, num_classes)``.
    """
    if split not in _SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {tuple(_SPLIT_OFFSETS)}, got {split!r}")
    prototype_rng = np.random.default_rng([seed, 2])
    prototypes = prototype_rng.random((num_modalities, num_classes, *shape)) < 0.5
    rng = np.random.default_rng([seed, _SPLIT_OFFSETS[split]])
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    arrays = tuple(
        np.clip(prototypes[m, labels] + noise * rng.standard_normal((n, *shape)), 0.0, 1.0).astype(
            np.float32
        )
        for m in range(num_modalities)
    )
    specs = tuple(
        ModalitySpec(f"m{m}", "image", tuple(shape), "laplace") for m in range(num_modalities)
    )
    return ArrayDataset(specs, arrays, labels, num_classes)
