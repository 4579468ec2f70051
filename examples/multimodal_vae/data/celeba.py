"""CelebA: a 64x64 face image, its 18 binary attributes and, optionally, the MoPoE text.

Images are centre-cropped to 148x148 and resized to 64x64, as in MoPoE. The attribute
modality (and the evaluation label) keeps the 18 visually distinctive attributes of
Perarnau et al. (2016) that MVAE (Wu & Goodman, 2018) used: :data:`ATTRIBUTES`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import DEFAULT_DATA_DIR, ModalitySpec, MultimodalDataset, to_float_tensor
from .mnist_svhn_text import ALPHABET, encode_text

ATTRIBUTES = (
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Eyeglasses",
    "Gray_Hair",
    "Heavy_Makeup",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Pale_Skin",
    "Receding_Hairline",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Hat",
)
IMAGE_DIR = "img_align_celeba"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
#: MoPoE's text file (its defaults: ``len_sequence`` 256, attributes in fixed order, random start).
TEXT_FILE = "list_attr_text_256_False_True_celeba.csv"
TEXT_LENGTH = 256
SPLITS = {"train": 0, "valid": 1, "test": 2}
CROP_SIZE = 148
IMAGE_SIZE = 64


def read_attributes(
    path: str | os.PathLike, attributes: Sequence[str] = ATTRIBUTES
) -> tuple[list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``: a count, the attribute names, then rows of ±1.

    Parameters
    ----------
    path : path
    attributes : sequence of str
        The columns to keep, in this order (default: MVAE's 18, :data:`ATTRIBUTES`).

    Returns
    -------
    image_names : list of str
        ``N`` file names, e.g. ``"000001.jpg"``.
    attributes : numpy.ndarray
        ``(N, A)`` float32 in ``{0, 1}``, columns in the order of ``attributes``.
    """
    path = Path(path)
    with open(path) as f:
        lines = f.read().splitlines()
    try:
        count = int(lines[0])
        header = lines[1].split()
    except (IndexError, ValueError) as error:
        raise ValueError(f"{path}: expected a count, then attribute names") from error
    missing = [a for a in attributes if a not in header]
    if missing:
        raise ValueError(f"{path}: attributes {missing} missing from the header")
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != count or any(len(row) != len(header) + 1 for row in rows):
        raise ValueError(
            f"{path}: header declares {count} rows of {len(header)} attributes; "
            f"found {len(rows)} rows, not all of that width"
        )
    columns = [header.index(a) + 1 for a in attributes]
    values = np.array([[row[c] for c in columns] for row in rows], dtype=np.int64)
    if not np.isin(values, (-1, 1)).all():
        raise ValueError(f"{path}: attribute values must be -1 or 1")
    return [row[0] for row in rows], (values > 0).astype(np.float32)


def read_partition(path: str | os.PathLike) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` into ``{image_name: 0 | 1 | 2}`` (train/valid/test)."""
    partition = {}
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}, line {number}: expected '<image> <0|1|2>'")
            partition[fields[0]] = int(fields[1])
    return partition


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Open a CelebA image, centre-crop 148x148 (or its shorter side) and resize to 64x64.

    Returns
    -------
    numpy.ndarray
        ``(3, 64, 64)`` uint8.
    """
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        crop = min(CROP_SIZE, width, height)
        left, top = (width - crop) // 2, (height - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(image).transpose(2, 0, 1)


class CelebA(MultimodalDataset):
    """CelebA image ``(3, 64, 64)``, attributes ``(18,)`` and optionally text ``(256, 71)``.

    The label is the attribute vector (float32 ``(18,)``) and ``num_classes`` is 18.

    Parameters
    ----------
    root : path
        Holds ``img_align_celeba/``, ``list_attr_celeba.txt``, ``list_eval_partition.txt``
        and, for ``with_text``, MoPoE's ``list_attr_text_256_False_True_celeba.csv``.
    split : {"train", "valid", "test"}
    with_text : bool
        Add the text modality (MoPoE's bimodal CelebA).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *, with_text: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        root = Path(root)
        needed = [IMAGE_DIR + "/", ATTRIBUTE_FILE, PARTITION_FILE] + ([TEXT_FILE] * with_text)
        missing = [name for name in needed if not (root / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"CelebA files not found: download {', '.join(missing)} (the aligned-and-"
                f"cropped images, unzipped, and the annotation files from "
                f"https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) into {root}"
            )
        names, attributes = read_attributes(root / ATTRIBUTE_FILE)
        partition = read_partition(root / PARTITION_FILE)
        keep = np.array([partition.get(name) == SPLITS[split] for name in names], dtype=bool)
        self.image_paths = [root / IMAGE_DIR / n for n, k in zip(names, keep, strict=True) if k]
        self.labels = torch.from_numpy(attributes[keep])
        self.num_classes = len(ATTRIBUTES)
        self.specs = (
            ModalitySpec("image", "image", (3, IMAGE_SIZE, IMAGE_SIZE), "laplace"),
            ModalitySpec("attributes", "attributes", (len(ATTRIBUTES),), "bernoulli"),
        )
        self.texts: list[str] | None = None
        if with_text:
            texts = _read_texts(root / TEXT_FILE)
            kept_names = [n for n, k in zip(names, keep, strict=True) if k]
            missing_text = [n for n in kept_names if n not in texts]
            if missing_text:
                raise ValueError(f"{root / TEXT_FILE}: no text for {missing_text[:3]}...")
            self.texts = [texts[n] for n in kept_names]
            text_spec = ModalitySpec("text", "text", (TEXT_LENGTH, len(ALPHABET)), "categorical")
            self.specs += (text_spec,)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        attributes = self.labels[index]
        modalities = (to_float_tensor(load_image(self.image_paths[index])), attributes)
        if self.texts is not None:
            modalities += (torch.from_numpy(encode_text(self.texts[index], TEXT_LENGTH)),)
        return modalities, attributes


def _read_texts(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"image_id", "text"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns 'image_id' and 'text'")
        return {row["image_id"]: row["text"] for row in reader}


def get_celeba(
    split: str = "train", root: str | os.PathLike | None = None, *, with_text: bool = False
) -> CelebA:
    """CelebA from ``root`` (default ``<repo>/.data/celeba``); see :class:`CelebA`."""
    root = root if root is not None else DEFAULT_DATA_DIR / "celeba"
    return CelebA(root, split, with_text=with_text)
