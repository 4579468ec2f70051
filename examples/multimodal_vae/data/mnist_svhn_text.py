"""MNIST-SVHN-Text (Sutter et al., 2020): an MNIST digit, an SVHN digit and its English word.

MNIST and SVHN images of the same class are paired as in the original code: per class,
the first ``n = min(#MNIST, #SVHN, max_per_class)`` indices of each set are shuffled and
zipped, ``multiplicity`` times with fresh shuffles, so each image appears in up to
``multiplicity`` pairs. The text is the digit's word (``"zero"``..``"nine"``) at a random
offset in ``text_length`` spaces (offset in ``[0, text_length - len(word) - 1]``, as the
original), one-hot over :data:`ALPHABET`. Offsets are drawn once at construction from the
seed, so a dataset is deterministic, where the original draws them anew at every access.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .base import DEFAULT_DATA_DIR, ModalitySpec, MultimodalDataset
from .mnist_idx import MNIST_FILES, MNIST_SOURCE, load_mnist, missing_mnist_files

#: The original ``alphabet.json``: 71 characters, lowercase letters, digits, punctuation,
#: space and newline. ``"-"`` is listed twice there; like ``str.find``, encoding uses the
#: first, so index 59 is never hot, but it is kept so that V = 71 as in the original.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"\\/|_@#$%^&*~`+-=<>()[]{} \n"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
SVHN_SOURCE = "http://ufldl.stanford.edu/housenumbers/"


def encode_text(text: str, length: int, alphabet: str = ALPHABET) -> np.ndarray:
    """One-hot encode ``text`` padded with spaces (or cut) to ``length`` characters.

    Characters outside ``alphabet`` are all-zero rows, as in the original.

    Returns
    -------
    numpy.ndarray
        ``(length, len(alphabet))`` float32.
    """
    out = np.zeros((length, len(alphabet)), np.float32)
    for position, char in enumerate(text.ljust(length)[:length]):
        index = alphabet.find(char)
        if index >= 0:
            out[position, index] = 1.0
    return out


def pair_by_label(
    labels_a: np.ndarray,
    labels_b: np.ndarray,
    multiplicity: int,
    rng: np.random.Generator,
    max_per_class: int = 10_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Random pairs of indices into ``labels_a`` and ``labels_b`` that share a label.

    Returns
    -------
    index_a, index_b : numpy.ndarray
        ``(P,)`` int64 each, with ``labels_a[index_a] == labels_b[index_b]``.
    """
    pairs_a, pairs_b = [], []
    for label in np.unique(labels_a):
        members_a = np.flatnonzero(labels_a == label)
        members_b = np.flatnonzero(labels_b == label)
        n = min(len(members_a), len(members_b), max_per_class)
        for _ in range(multiplicity):
            pairs_a.append(rng.permutation(members_a[:n]))
            pairs_b.append(rng.permutation(members_b[:n]))
    return np.concatenate(pairs_a), np.concatenate(pairs_b)


def load_svhn(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of SVHN (cropped digits) from ``<directory>/<split>_32x32.mat``.

    Returns
    -------
    images : numpy.ndarray
        ``(N, 3, 32, 32)`` uint8.
    labels : numpy.ndarray
        ``(N,)`` int64 in ``0..9`` (the file's label 10 is the digit 0).
    """
    from scipy.io import loadmat

    if split not in SVHN_FILES:
        raise ValueError(f"split must be one of {tuple(SVHN_FILES)}, got {split!r}")
    path = Path(directory) / SVHN_FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"SVHN file not found: {path} (from {SVHN_SOURCE})")
    try:
        mat = loadmat(path)
    except Exception as error:  # scipy raises several types for a non-.mat file
        raise ValueError(f"{path}: not a readable MATLAB file ({error})") from error
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: expected variables 'X' and 'y', got {sorted(mat)}")
    images, labels = mat["X"], mat["y"].astype(np.int64).reshape(-1)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
        raise ValueError(
            f"{path}: expected X of shape (32, 32, 3, N) with N = {len(labels)} labels, "
            f"got {images.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise ValueError(f"{path}: labels must be in 0..10, got {labels.min()}..{labels.max()}")
    labels[labels == 10] = 0
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1).astype(np.uint8)), labels


class MNISTSVHNText(MultimodalDataset):
    """Triples (MNIST ``(1, 28, 28)``, SVHN ``(3, 32, 32)``, text ``(L, 71)``) of one digit.

    Parameters
    ----------
    mnist_images, mnist_labels : numpy.ndarray
        ``(N1, 28, 28)`` uint8 and ``(N1,)``.
    svhn_images, svhn_labels : numpy.ndarray
        ``(N2, 3, 32, 32)`` uint8 and ``(N2,)``.
    multiplicity : int
        Pairs per image (the original's ``data_multiplications``, 20).
    text_length : int
        Characters per text sample (the original's ``len_sequence``, 8).
    seed : int
        Seed of the pairing and the word offsets.
    image_likelihood : str
        Likelihood of both image modalities: ``"laplace"`` as MoPoE, or another of
        :data:`~data.base.LIKELIHOODS`.

    Each modality's :attr:`ModalitySpec.weight` is MoPoE's ``rec_weights``: the size of an
    SVHN image (3,072 values) over the modality's size, which MoPoE counts as 784 for MNIST
    and as ``text_length`` characters (not one-hot entries) for the text: 3.92, 1 and 384
    for the standard length 8.
    """

    def __init__(
        self,
        mnist_images: np.ndarray,
        mnist_labels: np.ndarray,
        svhn_images: np.ndarray,
        svhn_labels: np.ndarray,
        *,
        multiplicity: int = 20,
        text_length: int = 8,
        seed: int = 0,
        image_likelihood: str = "laplace",
    ) -> None:
        longest = max(map(len, DIGIT_WORDS))
        if text_length <= longest:
            raise ValueError(f"text_length must exceed {longest} (len('three')), got {text_length}")
        rng = np.random.default_rng(seed)
        self.mnist_index, self.svhn_index = pair_by_label(
            mnist_labels, svhn_labels, multiplicity, rng
        )
        self.mnist_images, self.svhn_images = mnist_images, svhn_images
        labels = np.asarray(mnist_labels)[self.mnist_index]
        word_lengths = np.array([len(w) for w in DIGIT_WORDS])[labels]
        self.text_offsets = rng.integers(0, text_length - word_lengths)
        self.text_length = text_length
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.num_classes = 10
        svhn_size = 3 * 32 * 32
        self.specs = (
            ModalitySpec("mnist", "image", (1, 28, 28), image_likelihood, svhn_size / 784),
            ModalitySpec("svhn", "image", (3, 32, 32), image_likelihood, 1.0),
            ModalitySpec(
                "text",
                "text",
                (text_length, len(ALPHABET)),
                "categorical",
                svhn_size / text_length,
            ),
        )

    def text(self, index: int) -> str:
        """The text of sample ``index`` as a string of ``text_length`` characters."""
        word = DIGIT_WORDS[int(self.labels[index])]
        offset = int(self.text_offsets[index])
        return (" " * offset + word).ljust(self.text_length)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], int]:
        mnist = torch.from_numpy(self.mnist_images[self.mnist_index[index]]).float() / 255.0
        svhn = torch.from_numpy(self.svhn_images[self.svhn_index[index]]).float() / 255.0
        text = torch.from_numpy(encode_text(self.text(index), self.text_length))
        return (mnist.unsqueeze(0), svhn, text), int(self.labels[index])


def get_mnist_svhn_text(
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    multiplicity: int = 20,
    text_length: int = 8,
    seed: int = 0,
) -> MNISTSVHNText:
    """MNIST-SVHN-Text from ``<root>/MNIST`` (the four IDX files) and ``<root>/SVHN``
    (``train_32x32.mat``, ``test_32x32.mat``); ``root`` defaults to
    ``<repo>/.data/mnist-svhn-text``. See :class:`MNISTSVHNText` for the parameters.

    Raises
    ------
    FileNotFoundError
        When a file of ``split`` is missing; the message lists those of both splits, with
        where each comes from.
    """
    root = Path(root) if root is not None else DEFAULT_DATA_DIR / "mnist-svhn-text"
    missing_svhn = [root / "SVHN" / name for name in SVHN_FILES.values()]
    missing_svhn = [path for path in missing_svhn if not path.is_file()]
    missing_mnist = missing_mnist_files(root / "MNIST")
    needed = (*MNIST_FILES[split], SVHN_FILES[split]) if split in SVHN_FILES else ()
    if any(path.name.removesuffix(".gz") in needed for path in missing_mnist + missing_svhn):
        sources = [f"MNIST from {MNIST_SOURCE}"] * bool(missing_mnist)
        sources += [f"SVHN from {SVHN_SOURCE}"] * bool(missing_svhn)
        raise FileNotFoundError(
            "MNIST-SVHN-Text files not found: "
            + ", ".join(str(path) for path in missing_mnist + missing_svhn)
            + f" ({'; '.join(sources)}). {root} must hold MNIST/ with the four MNIST IDX "
            "files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte, gzipped or not) and SVHN/ with train_32x32.mat and "
            "test_32x32.mat"
        )
    mnist_images, mnist_labels = load_mnist(root / "MNIST", split)
    svhn_images, svhn_labels = load_svhn(root / "SVHN", split)
    return MNISTSVHNText(
        mnist_images,
        mnist_labels,
        svhn_images,
        svhn_labels,
        multiplicity=multiplicity,
        text_length=text_length,
        seed=seed,
    )
