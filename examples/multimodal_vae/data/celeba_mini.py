"""Bimodal CelebA built offline: drawn faces and MoPoE's captions of their attributes.

A stand-in for MoPoE's bimodal CelebA (:mod:`data.celeba_text`) that a CPU learns in
minutes. Each face is drawn with PIL on a 52x52 canvas that it nearly fills and
downsampled to 32x32 RGB; it shows :data:`MINI_ATTRIBUTES`, 13 CelebA attributes that a
drawing of this size shows at a glance (a goatee or rosy cheeks would be a few pixels),
each drawn at about its frequency in CelebA (:data:`FREQUENCIES`), and varies in what no
attribute names: position, size, skin tone (pale skin is its own attribute), a light
background's tint, the colour of hair that is none of black, blond, brown or gray, hair
length, eye colour. Hair colours are exclusive, and bald faces have no hair colour and no
bangs. The caption is MoPoE's, :func:`~data.celeba_text.attributes_to_text` over these
attributes in CelebA's order (``length`` :data:`TEXT_LENGTH`, ``*`` padding from a random
start, fixed per image), scored by the ``shifted-categorical`` likelihood
(:mod:`shifted_text`), which sums the start out; the label is the attribute vector, scored
by mean average precision.

Generated once into ``<root>/<split>-n<size>-seed<seed>-L<text length>-v<drawing>.npz``
(``root``
defaults to ``<repo>/.data/celeba-mini``) and read from there afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .base import DEFAULT_DATA_DIR, ModalitySpec, MultimodalDataset, save_npz
from .celeba_text import attributes_to_text
from .mnist_svhn_text import ALPHABET, encode_text

#: Attributes drawn, in CelebA's order, with their approximate frequency in CelebA's
#: ``list_attr_celeba.txt`` (the share of images where the attribute is 1).
FREQUENCIES = {
    "Bald": 0.022,
    "Bangs": 0.152,
    "Black_Hair": 0.239,
    "Blond_Hair": 0.148,
    "Brown_Hair": 0.205,
    "Eyeglasses": 0.065,
    "Gray_Hair": 0.042,
    "Mouth_Slightly_Open": 0.483,
    "Mustache": 0.042,
    "Pale_Skin": 0.043,
    "Smiling": 0.482,
    "Wearing_Hat": 0.048,
    "Wearing_Lipstick": 0.472,
}
MINI_ATTRIBUTES = tuple(FREQUENCIES)
HAIR_COLOURS = {
    "Black_Hair": (30, 24, 22),
    "Blond_Hair": (232, 200, 110),
    "Brown_Hair": (112, 70, 38),
    "Gray_Hair": (175, 175, 172),
}
#: Hair that is none of the named colours: auburn, dark auburn, red, sandy.
OTHER_HAIR = ((140, 62, 30), (90, 40, 25), (170, 80, 40), (160, 120, 80))
SKIN = ((224, 172, 140), (198, 140, 100), (160, 105, 75), (120, 80, 55), (235, 190, 160))
PALE_SKIN = (250, 232, 222)
IMAGE_SIZE = 32
#: Caption length: 128, not MoPoE's 256, since the longest caption of these 15 attributes
#: has 94 characters (none is cut), and the text networks, which dominate a step's cost,
#: take 0.18 CPU-s for a step of batch 64 at 128 against 0.31 at 256 (one thread).
TEXT_LENGTH = 128
_SPLITS = ("train", "test")
CANVAS = 52  # drawn on this square, then downsampled to IMAGE_SIZE
_VERSION = 4  # of the drawing, in the cache's name: a new drawing never reads an old cache


def sample_attributes(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, A)`` float32 attributes in the order of :data:`MINI_ATTRIBUTES`.

    Each is drawn with its CelebA frequency, under the constraints a face obeys: one hair
    colour at most (drawn as one categorical), bald only with none of them, bangs never on
    a bald head; a mustache only without lipstick (with their frequency kept).
    """
    index = {name: a for a, name in enumerate(MINI_ATTRIBUTES)}
    out = np.zeros((n, len(MINI_ATTRIBUTES)), np.float32)
    colours = list(HAIR_COLOURS)
    shares = np.array([FREQUENCIES[c] for c in colours])
    hair = rng.choice(len(colours) + 1, size=n, p=[*shares, 1 - shares.sum()])
    for c, name in enumerate(colours):
        out[hair == c, index[name]] = 1
    no_colour = hair == len(colours)
    out[:, index["Bald"]] = no_colour & (rng.random(n) < FREQUENCIES["Bald"] / no_colour.mean())
    has_hair = out[:, index["Bald"]] == 0
    out[:, index["Bangs"]] = has_hair & (rng.random(n) < FREQUENCIES["Bangs"] / has_hair.mean())
    independent = ("Eyeglasses", "Mouth_Slightly_Open", "Pale_Skin", "Smiling")
    for name in (*independent, "Wearing_Hat", "Wearing_Lipstick"):
        out[:, index[name]] = rng.random(n) < FREQUENCIES[name]
    bare = out[:, index["Wearing_Lipstick"]] == 0
    out[:, index["Mustache"]] = bare & (rng.random(n) < FREQUENCIES["Mustache"] / bare.mean())
    return out


def draw_face(attributes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A face showing ``attributes`` (``(A,)``, order of :data:`MINI_ATTRIBUTES`).

    Returns
    -------
    numpy.ndarray
        ``(3, 32, 32)`` uint8.
    """
    from PIL import Image, ImageDraw

    on = {name: bool(attributes[a]) for a, name in enumerate(MINI_ATTRIBUTES)}
    size = CANVAS
    background = tuple(int(v) for v in rng.integers(150, 230) + rng.integers(-15, 16, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cx, cy = size / 2 + rng.uniform(-3, 3), size / 2 + 2 + rng.uniform(-3, 3)
    rx, ry = rng.uniform(14, 17), rng.uniform(18, 21)
    skin = PALE_SKIN if on["Pale_Skin"] else SKIN[rng.integers(len(SKIN))]
    named = [c for c in HAIR_COLOURS if on[c]]
    hair = HAIR_COLOURS[named[0]] if named else OTHER_HAIR[rng.integers(len(OTHER_HAIR))]
    if not on["Bald"]:  # hair behind the head, long or short
        bottom = cy + (ry * rng.uniform(0.9, 1.6) if rng.random() < 0.5 else ry * 0.3)
        draw.rounded_rectangle((cx - rx - 4, cy - ry - 5, cx + rx + 4, bottom), 10, fill=hair)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    if not on["Bald"]:  # the top of the head
        draw.chord((cx - rx - 2, cy - ry - 5, cx + rx + 2, cy + ry * 0.2), 180, 360, fill=hair)
    if on["Bangs"]:
        draw.rectangle((cx - rx * 0.85, cy - ry * 0.75, cx + rx * 0.85, cy - ry * 0.3), fill=hair)
    eye_y, eye_dx = cy - ry * 0.15, rx * 0.42
    eye_colour = tuple(int(v) for v in rng.integers(10, 90, 3))
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse((ex - 2.5, eye_y - 1.8, ex + 2.5, eye_y + 1.8), fill=eye_colour)
        if on["Eyeglasses"]:
            draw.ellipse((ex - 6, eye_y - 5, ex + 6, eye_y + 5), outline=(15, 15, 15), width=3)
    if on["Eyeglasses"]:
        draw.line((cx - eye_dx + 6, eye_y, cx + eye_dx - 6, eye_y), fill=(15, 15, 15), width=2)
    draw.line((cx, cy, cx - 1.5, cy + ry * 0.22), fill=tuple(int(0.7 * v) for v in skin), width=2)
    lips = (200, 25, 60) if on["Wearing_Lipstick"] else tuple(int(0.65 * v) for v in skin)
    mouth_y, half_width = cy + ry * 0.5, rx * 0.5
    if on["Mustache"]:
        beard = tuple(int(0.45 * v) for v in hair)
        draw.rectangle((cx - half_width, mouth_y - 8, cx + half_width, mouth_y - 2.5), fill=beard)
    if on["Mouth_Slightly_Open"]:
        draw.ellipse(
            (cx - half_width * 0.8, mouth_y - 3.5, cx + half_width * 0.8, mouth_y + 4.5),
            fill=(60, 10, 20),
            outline=lips,
            width=2,
        )
    if on["Smiling"]:  # teeth: over the open mouth's upper half, or a grin's crescent
        teeth = (245, 245, 238)
        if on["Mouth_Slightly_Open"]:
            box = (cx - half_width * 0.8, mouth_y - 3.5, cx + half_width * 0.8, mouth_y + 4.5)
            draw.chord(box, 180, 360, fill=teeth)
        else:
            box = (cx - half_width, mouth_y - 6, cx + half_width, mouth_y + 5)
            draw.chord(box, 0, 180, fill=teeth, outline=lips, width=2)
        box = (cx - half_width * 1.1, mouth_y - 8, cx + half_width * 1.1, mouth_y + 6)
        draw.arc(box, 15, 165, lips, width=3)
    elif not on["Mouth_Slightly_Open"]:
        draw.line((cx - half_width, mouth_y, cx + half_width, mouth_y), fill=lips, width=3)
    if on["Wearing_Hat"]:
        hat = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.rectangle((cx - rx - 7, cy - ry * 0.62, cx + rx + 7, cy - ry * 0.48), fill=hat)
        draw.rectangle((cx - rx * 0.85, cy - ry - 9, cx + rx * 0.85, cy - ry * 0.55), fill=hat)
    image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(image).transpose(2, 0, 1).copy()


def generate_celeba_mini(n: int, seed: int | tuple[int, ...]) -> dict[str, np.ndarray]:
    """``n`` faces: ``images`` ``(n, 3, 32, 32)`` uint8, ``attributes`` ``(n, A)`` float32 and
    ``texts`` ``(n,)`` captions of :data:`TEXT_LENGTH` characters."""
    rng = np.random.default_rng(seed)
    attributes = sample_attributes(n, rng)
    images = np.stack([draw_face(row, rng) for row in attributes])
    texts = np.array(
        [attributes_to_text(MINI_ATTRIBUTES, row, rng, TEXT_LENGTH) for row in attributes]
    )
    return {"images": images, "attributes": attributes, "texts": texts}


class CelebAMini(MultimodalDataset):
    """Drawn face ``(3, 32, 32)`` and caption ``(128, 71)``; label: the attributes ``(A,)``.

    Likelihood weights as MoPoE's CelebA (``rec_weights``: image pixels per channel over
    each modality's size): ``1/3`` for the image, ``32 * 32 / 128 = 8`` for the text.
    """

    def __init__(
        self, images: np.ndarray, attributes: np.ndarray, texts: np.ndarray, image_likelihood: str
    ) -> None:
        self.images, self.texts = images, texts
        self.labels = torch.as_tensor(attributes, dtype=torch.float32)
        self.num_classes = len(MINI_ATTRIBUTES)
        self.specs = (
            ModalitySpec("image", "image", (3, IMAGE_SIZE, IMAGE_SIZE), image_likelihood, 1 / 3),
            ModalitySpec(
                "text",
                "text",
                (TEXT_LENGTH, len(ALPHABET)),
                "shifted-categorical",
                IMAGE_SIZE * IMAGE_SIZE / TEXT_LENGTH,
            ),
        )

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        image = torch.from_numpy(self.images[index]).float() / 255.0
        text = torch.from_numpy(encode_text(str(self.texts[index]), TEXT_LENGTH))
        return (image, text), self.labels[index]


def get_celeba_mini(
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    n_train: int = 8000,
    n_test: int = 2000,
    image_likelihood: str = "bernoulli",
    seed: int = 0,
) -> CelebAMini:
    """The built-in bimodal CelebA (see the module's docstring).

    Parameters
    ----------
    split : {"train", "test"}
    root : path, optional
    n_train, n_test : int
        Faces per split.
    image_likelihood : str
        Likelihood of the image modality.
    seed : int
        Seed of the attributes, drawings and captions.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    n = n_train if split == "train" else n_test
    if n < 1:
        raise ValueError(f"n_{split} must be positive, got {n}")
    root = Path(root) if root is not None else DEFAULT_DATA_DIR / "celeba-mini"
    cache = root / f"{split}-n{n}-seed{seed}-L{TEXT_LENGTH}-v{_VERSION}.npz"
    if not cache.is_file():
        save_npz(cache, **generate_celeba_mini(n, (seed, _SPLITS.index(split))))
    with np.load(cache) as npz:
        return CelebAMini(npz["images"], npz["attributes"], npz["texts"], image_likelihood)
