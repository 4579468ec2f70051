"""A synthetic stand-in for SVHN: street-number crops rendered from fonts on photos.

SVHN (Netzer et al., 2011) crops house numbers from Street View photos to 32x32 around
one digit, so that parts of the neighbouring digits show at the edges. SynDigits (Ganin &
Lempitsky, 2015) made a synthetic SVHN the same way: digits rendered from fonts, with
varied position, orientation, colours, blur and backgrounds. This module follows that
recipe with what installs offline: matplotlib's DejaVu fonts (Sans, Serif and Sans Mono,
each regular, bold, slanted and bold slanted) and scikit-image's sample photos. It is a
stand-in, not SVHN: the fonts are few and clean, the backgrounds are crops of a handful of
photos, and classes are balanced (SVHN's are not).

Each crop is rendered at twice its size and downsampled (antialiasing): a string of the
digit with, on each side, a random neighbouring digit (probability
:data:`NEIGHBOUR_PROBABILITY`), at a random font size, in a colour that contrasts with the
background, rotated by up to :data:`MAX_ROTATION` degrees around the centre digit, cropped
around that digit with a random shift, then blurred and overlaid with Gaussian noise.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SIZE = 32
_SCALE = 2  # rendered at this multiple of SIZE, then downsampled
FONT_STYLES = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSans-BoldOblique",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique",
)
#: scikit-image sample photos whose crops serve as walls, doors and plates.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "brick", "grass", "gravel", "camera")
NEIGHBOUR_PROBABILITY = 0.7
#: Probability that a digit is lighter than its background (else darker). One polarity
#: (1) keeps the digit in the mean of its class's crops: with both equally likely, light
#: and dark digits cancel, and a decoder that knows only the digit draws a grey crop.
LIGHT_DIGIT_PROBABILITY = 1.0
MAX_ROTATION = 12.0  # degrees
#: Digit height as a fraction of the crop's height (SVHN's digits fill about half to most).
HEIGHT_RANGE = (0.55, 0.85)
MIN_CONTRAST = 0.4  # least difference of luminance between digit and background
MAX_SHIFT = 0.1  # of the crop's size, each direction
MAX_BLUR = 1.0  # Gaussian blur's largest standard deviation, in output pixels
MAX_NOISE = 0.04  # Gaussian noise's largest standard deviation, on [0, 1]


@functools.cache
def _font_paths() -> tuple[Path, ...]:
    import matplotlib

    directory = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return tuple(directory / f"{style}.ttf" for style in FONT_STYLES)


@functools.cache
def _font(index: int, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(_font_paths()[index]), size)


@functools.cache
def _photos(short_side: int = 160) -> tuple[np.ndarray, ...]:
    """The photos of :data:`PHOTOS` as float RGB in ``[0, 1]``, shorter side ``short_side``."""
    from PIL import Image
    from skimage import data

    photos = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        scale = short_side / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        photos.append(np.asarray(image.resize(size, Image.Resampling.LANCZOS)) / 255.0)
    return tuple(photos)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _background(rng: np.random.Generator, size: int, light_digit: bool) -> np.ndarray:
    """A ``size``-square crop of a photo blended with a flat random colour, ``(size, size, 3)``;
    the colour is dark (channels in ``[0, 0.5)``) behind a light digit, else light."""
    photo = _photos()[rng.integers(len(PHOTOS))]
    top = rng.integers(photo.shape[0] - size + 1)
    left = rng.integers(photo.shape[1] - size + 1)
    crop = photo[top : top + size, left : left + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    flat = 0.5 * rng.random(3) + (0.0 if light_digit else 0.5)
    share = rng.uniform(0.1, 0.6)  # how much of the photo shows through
    return share * crop + (1 - share) * flat


def _digit_colour(rng: np.random.Generator, background: np.ndarray, light: bool) -> np.ndarray:
    """A random colour whose luminance exceeds the background's by ``MIN_CONTRAST`` (``light``)
    or falls short of it by as much."""
    level = float(_luminance(background.reshape(-1, 3)).mean())
    sign = 1.0 if light else -1.0
    for _ in range(100):
        colour = rng.random(3)
        if sign * (float(_luminance(colour)) - level) >= MIN_CONTRAST:
            return colour
    return np.full(3, 1.0 if light else 0.0)


def _digit_mask(rng: np.random.Generator, digit: int, size: int) -> np.ndarray:
    """Coverage in ``[0, 1]``, ``(size, size)``, of the digit with neighbours, rotated, cropped."""
    from PIL import Image, ImageDraw

    height = rng.uniform(*HEIGHT_RANGE) * size
    font = _font(int(rng.integers(len(FONT_STYLES))), max(8, round(height * 1.35)))
    left_digit = str(rng.integers(10)) if rng.random() < NEIGHBOUR_PROBABILITY else ""
    right_digit = str(rng.integers(10)) if rng.random() < NEIGHBOUR_PROBABILITY else ""
    gap = " " * int(rng.random() < 0.15)
    text = left_digit + gap + str(digit) + gap + right_digit
    canvas = Image.new("L", (4 * size, 2 * size), 0)
    draw = ImageDraw.Draw(canvas)
    # Place the text so that the centre digit's box is centred on the canvas point (2s, s).
    prefix = draw.textlength(left_digit + gap, font=font)
    centre_width = draw.textlength(str(digit), font=font)
    x = 2 * size - prefix - centre_width / 2
    box = draw.textbbox((0, 0), str(digit), font=font)
    y = size - (box[1] + box[3]) / 2
    draw.text((x, y), text, fill=255, font=font)
    canvas = canvas.crop((size, 0, 3 * size, 2 * size))  # the digit at the centre (s, s)
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR)
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2) * size
    left, top = round(size / 2 + shift[0]), round(size / 2 + shift[1])
    return np.asarray(canvas.crop((left, top, left + size, top + size))) / 255.0


def render_street_digits(labels: np.ndarray, seed: int | tuple[int, ...] = 0) -> np.ndarray:
    """One street-number crop per label.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N,)`` digits ``0..9``: the digit at the centre of each crop.
    seed : int or tuple of int
        Seed of every random choice; the same labels and seed give the same images.

    Returns
    -------
    numpy.ndarray
        ``(N, 3, 32, 32)`` uint8.
    """
    from PIL import Image, ImageFilter

    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"labels must be digits 0..9, got {labels.min()}..{labels.max()}")
    rng = np.random.default_rng(seed)
    big = SIZE * _SCALE
    out = np.empty((len(labels), 3, SIZE, SIZE), np.uint8)
    for i, digit in enumerate(labels):
        light = bool(rng.random() < LIGHT_DIGIT_PROBABILITY)
        background = _background(rng, big, light)
        coverage = _digit_mask(rng, int(digit), big)[..., None]
        colour = _digit_colour(rng, background, light)
        image = (1 - coverage) * background + coverage * colour
        pil = Image.fromarray(np.round(255 * image).astype(np.uint8))
        pil = pil.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0, MAX_BLUR)))
        noisy = np.asarray(pil) / 255.0 + rng.normal(0, rng.uniform(0, MAX_NOISE), (SIZE, SIZE, 3))
        out[i] = np.round(255 * np.clip(noisy, 0, 1)).astype(np.uint8).transpose(2, 0, 1)
    return out
