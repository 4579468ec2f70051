"""MNIST from the standard IDX files (LeCun et al.), gzipped or not, parsed with numpy."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

#: IDX type codes (third magic byte) to big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_SOURCE = "http://yann.lecun.com/exdb/mnist/ or a mirror"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into an array of the shape its header declares.

    The header is two zero bytes, a type code, the number of dims ``d``, then ``d``
    big-endian uint32 sizes; the data follows in C order.

    Raises
    ------
    ValueError
        If the magic number or the data size does not match the format; the message names
        the file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()!r})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: IDX header truncated")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise ValueError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header_size}"
        )
    data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def missing_mnist_files(directory: str | os.PathLike) -> list[Path]:
    """The MNIST IDX files of both splits that ``directory`` lacks (as ``.gz`` names)."""
    directory = Path(directory)
    stems = [stem for split in MNIST_FILES.values() for stem in split]
    return [directory / f"{stem}.gz" for stem in stems if _find(directory, stem) is None]


def load_mnist(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split from ``directory``.

    Parameters
    ----------
    directory : path
        Holds ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.
    split : {"train", "test"}

    Returns
    -------
    images : numpy.ndarray
        ``(N, 28, 28)`` uint8.
    labels : numpy.ndarray
        ``(N,)`` int64.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {tuple(MNIST_FILES)}, got {split!r}")
    directory = Path(directory)
    paths = [_find(directory, stem) for stem in MNIST_FILES[split]]
    if None in paths:
        missing = ", ".join(str(path) for path in missing_mnist_files(directory))
        raise FileNotFoundError(
            f"MNIST files not found: {missing} (gzipped or not; from {MNIST_SOURCE})"
        )
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{paths[0]}: expected uint8 images (N, 28, 28), got {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(
            f"{paths[1]}: expected {len(images)} labels to match {paths[0]}, got {labels.shape}"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{paths[1]}: labels must be digits 0-9, got {labels.max()}")
    return images, labels.astype(np.int64)
