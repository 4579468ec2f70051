"""Bimodal CelebA as MoPoE ran it: a 64x64 face image and a caption of its attributes.

The caption is MoPoE's text modality (Sutter et al., 2020 and 2021): the names of the
image's positive attributes, in the attribute file's order, joined by ``", "``, lower case
with underscores as spaces, cut (by dropping the last names) to at most ``length``
characters and padded to ``length`` with ``*`` from a random start
(:func:`attributes_to_text`). MoPoE reads it from a preprocessed CSV that the CelebA site
does not ship, ``list_attr_text_256_False_True_celeba.csv``; when that file is absent the
captions are made from ``list_attr_celeba.txt`` by the same recipe (mmjsd's
``preprocessing/mainPreprocessLabelsToTextCelebA.py``), with one seeded start per image, so
a caption is fixed per image. The label is the vector of all 40 attributes, and evaluation
is by mean average precision over them, as MoPoE's.

MoPoE trains on CelebA's training partition and evaluates on the validation partition
(its ``dataset_test`` is partition 1); here ``split="test"`` is that validation partition
too unless ``eval_partition="test"`` asks for CelebA's test partition.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import DEFAULT_DATA_DIR, ModalitySpec, MultimodalDataset, to_float_tensor
from .celeba import (
    ATTRIBUTE_FILE,
    IMAGE_DIR,
    IMAGE_SIZE,
    PARTITION_FILE,
    SPLITS,
    TEXT_FILE,
    TEXT_LENGTH,
    _read_texts,
    load_image,
    read_attributes,
    read_partition,
)
from .mnist_svhn_text import ALPHABET, encode_text

#: CelebA's 40 attributes in the order of ``list_attr_celeba.txt`` (and of MoPoE's labels).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
PAD = "*"
SEPARATOR = ", "


def attributes_to_text(
    names: Sequence[str], present: Sequence[bool], rng: np.random.Generator, length: int = 256
) -> str:
    """MoPoE's caption of one image: its positive attributes as text of ``length`` characters.

    The names of the attributes with ``present`` true, in order, are joined by ``", "``
    (the last names dropped until the text has at most ``length`` characters), lower-cased
    with ``_`` as a space; when the text is shorter than ``length - 1`` it starts at a
    random offset in ``[0, length - 2 - len(text)]`` after ``*`` characters, and ``*`` fill
    the rest. (mmjsd's recipe; a text of ``length - 1`` or ``length`` characters keeps its
    place and is ``*``-padded at the end.)

    Parameters
    ----------
    names : sequence of str
        Attribute names, e.g. :data:`CELEBA_ATTRIBUTES`.
    present : sequence of bool
        One per name.
    rng : numpy.random.Generator
        Source of the start.
    length : int
        Characters of the caption.

    Returns
    -------
    str
        ``length`` characters.
    """
    if len(names) != len(present):
        raise ValueError(f"got {len(names)} names but {len(present)} values")
    chosen = [name for name, on in zip(names, present, strict=True) if on]
    while len(SEPARATOR.join(chosen)) > length:
        chosen = chosen[:-1]
    text = SEPARATOR.join(chosen).replace("_", " ").lower()
    start = 0
    if len(text) < length - 1:
        start = int(rng.integers(0, length - 1 - len(text)))
    return (PAD * start + text).ljust(length, PAD)


def text_to_attributes(text: str, names: Sequence[str]) -> np.ndarray:
    """The attributes a caption names: ``(A,)`` float32 in ``{0, 1}`` (the inverse of
    :func:`attributes_to_text` for captions that were not cut)."""
    said = {part.strip() for part in text.strip(PAD).split(SEPARATOR.strip())}
    return np.array([name.replace("_", " ").lower() in said for name in names], np.float32)


class CelebAText(MultimodalDataset):
    """CelebA image ``(3, 64, 64)`` and caption ``(256, 71)``; label: the 40 attributes.

    Parameters
    ----------
    root : path
        Holds ``img_align_celeba/``, ``list_attr_celeba.txt``, ``list_eval_partition.txt`` and
        optionally MoPoE's ``list_attr_text_256_False_True_celeba.csv``.
    split : {"train", "test", "valid"}
        ``"test"`` is the partition ``eval_partition`` names.
    eval_partition : {"valid", "test"}
        The CelebA partition that ``split="test"`` reads: MoPoE evaluated on ``"valid"``.
    seed : int
        Seed of the generated captions' starts (unused when MoPoE's CSV is present).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        eval_partition: str = "valid",
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        if eval_partition not in ("valid", "test"):
            raise ValueError(f"eval_partition must be 'valid' or 'test', got {eval_partition!r}")
        root = Path(root)
        missing = [
            n for n in (IMAGE_DIR + "/", ATTRIBUTE_FILE, PARTITION_FILE) if not (root / n).exists()
        ]
        if missing:
            raise FileNotFoundError(
                f"CelebA files not found: download {', '.join(missing)} (the aligned-and-"
                f"cropped images, unzipped, and the annotation files from "
                f"https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) into {root}"
            )
        names, attributes = read_attributes(root / ATTRIBUTE_FILE, CELEBA_ATTRIBUTES)
        if (root / TEXT_FILE).is_file():
            texts = _read_texts(root / TEXT_FILE)
            absent = [n for n in names if n not in texts]
            if absent:
                raise ValueError(f"{root / TEXT_FILE}: no text for {absent[:3]}...")
            captions = [texts[n] for n in names]
        else:
            rng = np.random.default_rng(seed)
            captions = [attributes_to_text(CELEBA_ATTRIBUTES, row, rng) for row in attributes]
        partition = read_partition(root / PARTITION_FILE)
        wanted = SPLITS[eval_partition if split == "test" else split]
        keep = [i for i, name in enumerate(names) if partition.get(name) == wanted]
        self.image_paths = [root / IMAGE_DIR / names[i] for i in keep]
        self.texts = [captions[i] for i in keep]
        self.labels = torch.from_numpy(attributes[keep])
        self.num_classes = len(CELEBA_ATTRIBUTES)
        # MoPoE's rec_weights: 64 * 64 over each modality's size, 3 * 64 * 64 for the image
        # and 256 (characters) for the text.
        pixels = IMAGE_SIZE * IMAGE_SIZE
        self.specs = (
            ModalitySpec("image", "image", (3, IMAGE_SIZE, IMAGE_SIZE), "laplace", 1 / 3),
            ModalitySpec(
                "text", "text", (TEXT_LENGTH, len(ALPHABET)), "categorical", pixels / TEXT_LENGTH
            ),
        )

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        image = to_float_tensor(load_image(self.image_paths[index]))
        text = torch.from_numpy(encode_text(self.texts[index], TEXT_LENGTH))
        return (image, text), self.labels[index]


def get_celeba_text(
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    eval_partition: str = "valid",
    seed: int = 0,
) -> CelebAText:
    """Bimodal CelebA from ``root`` (default ``<repo>/.data/celeba``); see :class:`CelebAText`."""
    root = root if root is not None else DEFAULT_DATA_DIR / "celeba"
    return CelebAText(root, split, eval_partition=eval_partition, seed=seed)
