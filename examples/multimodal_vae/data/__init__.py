"""Datasets of the multimodal VAE example, all behind :func:`get_dataset`.

Every dataset yields ``((x_1, ..., x_M), label)`` with images float32 in ``[0, 1]``,
``(C, H, W)``, and text float32 one-hot ``(L, V)``; ``dataset.specs`` describes the
modalities. ``polymnist-mini``, ``mnist-svhn-text-mini``, ``celeba-mini`` and ``synthetic`` work
offline with no download; the others
read the standard files from a directory the user names.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from .base import ModalitySpec, MultimodalDataset
from .celeba import get_celeba
from .celeba_mini import get_celeba_mini
from .celeba_text import get_celeba_text
from .mnist_svhn_text import get_mnist_svhn_text
from .mnist_svhn_text_mini import get_mnist_svhn_text_mini
from .polymnist import generate_polymnist, get_polymnist, get_polymnist_mini
from .synthetic import make_synthetic

__all__ = [
    "DATASETS",
    "ModalitySpec",
    "MultimodalDataset",
    "generate_polymnist",
    "get_dataset",
]


def _synthetic(split: str, root: str | os.PathLike | None, **kwargs) -> MultimodalDataset:
    del root  # made in memory
    return make_synthetic(split, **kwargs)


_LOADERS: dict[str, Callable[..., MultimodalDataset]] = {
    "polymnist-mini": get_polymnist_mini,
    "polymnist": get_polymnist,
    "mnist-svhn-text": get_mnist_svhn_text,
    "mnist-svhn-text-mini": get_mnist_svhn_text_mini,
    "celeba-mini": get_celeba_mini,
    "celeba": get_celeba_text,
    "celeba-attributes": get_celeba,
    "synthetic": _synthetic,
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)


def get_dataset(
    name: str, split: str = "train", root: str | os.PathLike | None = None, **kwargs
) -> MultimodalDataset:
    """Load dataset ``name``'s ``split``.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    split : str
        ``"train"`` or ``"test"`` (CelebA also ``"valid"``).
    root : path, optional
        Data directory; ``None`` means ``<repo>/.data/<name>``. Ignored by ``synthetic``.
    **kwargs
        Passed to the loader (a config's ``dataset_options``):
        ``get_polymnist_mini(n_per_class, test_fraction, seed)``,
        ``get_polymnist(generate, mnist_dir, background_dir, seed)``,
        ``get_mnist_svhn_text(multiplicity, text_length, seed)``,
        ``get_mnist_svhn_text_mini(n_per_class, test_fraction, multiplicity, image_likelihood,
        seed)``, ``get_celeba_text(eval_partition, seed)`` (``"celeba"``: MoPoE's image + text),
        ``get_celeba(with_text)`` (``"celeba-attributes"``: MVAE's image + 18 attributes),
        ``get_celeba_mini(n_train, n_test, image_likelihood, seed)``,
        ``make_synthetic(n, num_modalities, num_classes, shape, noise, seed)``.

    Raises
    ------
    ValueError
        For an unknown ``name``, ``split`` or option, or a corrupt file.
    FileNotFoundError
        When files are missing; the message says which to download and where to put them.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    loader = _LOADERS[name]
    try:
        inspect.signature(loader).bind(split, root, **kwargs)
    except TypeError as error:
        options = sorted(kwargs)
        raise ValueError(f"dataset {name!r}: options {options} do not fit ({error})") from None
    return loader(split, root, **kwargs)
