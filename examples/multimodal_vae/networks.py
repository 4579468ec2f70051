"""Encoders and decoders per modality, chosen from the modality's kind and shape.

The architectures follow the MoPoE code (Sutter et al., 2021) where it has one:

================  =====================================================================
modality          network
================  =====================================================================
PolyMNIST         conv 3x28x28: 3 stride-2 3x3 convs (32, 64, 128), linear; mirrored
MNIST             MLP 784-400 (MoPoE's ``num_hidden_layers=1``)
SVHN              conv 3x32x32: 4 stride-2 4x4 convs (32, 64, 64, 128); mirrored
text (length 8)   conv1d over one-hot characters: 1x1 conv to 128 channels, stride-2 4-wide
                  convs down to length 1 (exactly MoPoE's for length 8); mirrored
caption (> 8)     conv1d: three 5-wide convs to 2 x latent_dim channels (the last two
                  stride 2), the maximum over positions; decoder as for text, as wide
                  (MoPoE: residual conv1d down to length 1, which must learn every start
                  of the caption apart)
CelebA image      DCGAN 3x64x64: 4 stride-2 4x4 convs (64..512), a 4x4 conv to 1x1; mirrored
(MoPoE uses a residual variant of this)
anything else     MLP with two hidden layers of 256 (attributes, the synthetic images)
================  =====================================================================

Encoders map ``x`` of shape ``(B, *spec.shape)`` to ``(loc, scale)``, each
``(B, latent_dim)``, with ``scale = softplus(·) + 1e-3``: softplus grows linearly, not
exponentially like ``exp(logvar / 2)``, and the floor keeps precisions (PoE) and square
roots (Wasserstein) finite. Decoders map ``z`` of shape ``(B, latent_dim)`` to the
likelihood's parameter: the mean, squashed into ``[0, 1]`` by a sigmoid, for ``laplace`` and
``gaussian`` (data lie in ``[0, 1]``); logits for ``bernoulli`` (``(B, *shape)``) and
``categorical`` (text: ``(B, L, V)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import torch.nn.functional as F
from data import ModalitySpec
from torch import Tensor, nn

MIN_SCALE = 1e-3
#: Width of the PolyMNIST encoder's last hidden layer: MoPoE uses the latent size (512);
#: small latents get 256 so that the features are not squeezed before the heads.
MIN_HIDDEN = 256
MLP_HIDDEN = 256
TEXT_CHANNELS = 128  # MoPoE: 2 * dim, dim = 64
#: The caption networks are this many times the latent as wide: 64 channels for the built-in
#: celeba-mini's latent of 32, which at a step's cost of 0.12 CPU-s against 0.20 at 128
#: trains 1,750 steps in the time of 1,000 and learns more (configs/celeba_mini.json);
#: 128 for the full-size CelebA's latent of 64, and for the coherence classifiers, whose
#: features are 64 wide.
CAPTION_WIDTH = 2
#: Texts longer than this (CelebA's captions) are read by :func:`_caption_trunk`.
CAPTION_LENGTH = 8

#: Output layer per likelihood: means in [0, 1] or raw logits.
_OUTPUT_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "laplace": nn.Sigmoid,
    "gaussian": nn.Sigmoid,
    "bernoulli": nn.Identity,
    "categorical": nn.Identity,
    "shifted-categorical": nn.Identity,
}


class Encoder(nn.Module):
    """A feature trunk followed by linear heads for the Gaussian posterior's loc and scale.

    Parameters
    ----------
    trunk : nn.Module
        Maps ``(B, *shape)`` to features ``(B, feature_dim)``, ending in a nonlinearity.
    feature_dim : int
    latent_dim : int
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.loc = nn.Linear(feature_dim, latent_dim)
        self.scale = nn.Linear(feature_dim, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, *shape)`` → ``(loc, scale)``, each ``(B, latent_dim)``, scale > 0."""
        h = self.trunk(x)
        return self.loc(h), F.softplus(self.scale(h)) + MIN_SCALE


class Transpose(nn.Module):
    """Swap the last two dims: ``(B, L, V)`` ↔ ``(B, V, L)`` for conv1d over characters."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-1, -2)


class Crop(nn.Module):
    """Keep the first ``length`` positions of the last dim."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length

    def forward(self, x: Tensor) -> Tensor:
        return x[..., : self.length]


# --- trunks (encoder features) and bodies (decoder up to the output layer) ------------------


def _polymnist_trunk(spec: ModalitySpec, latent_dim: int) -> tuple[nn.Module, int]:
    hidden = max(latent_dim, MIN_HIDDEN)
    trunk = nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1),  # 32 x 14 x 14
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),  # 64 x 7 x 7
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1),  # 128 x 4 x 4
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, hidden),
        nn.ReLU(),
    )
    return trunk, hidden


def _polymnist_body(spec: ModalitySpec, latent_dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(latent_dim, 128 * 4 * 4),
        nn.ReLU(),
        nn.Unflatten(1, (128, 4, 4)),
        nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1),  # 64 x 7 x 7
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),  # 32 x 14 x 14
        nn.ReLU(),
        nn.ConvTranspose2d(32, 3, 3, stride=2, padding=1, output_padding=1),  # 3 x 28 x 28
    )


def _svhn_trunk(spec: ModalitySpec, latent_dim: int) -> tuple[nn.Module, int]:
    trunk = nn.Sequential(
        nn.Conv2d(3, 32, 4, stride=2, padding=1),  # 32 x 16 x 16
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1),  # 64 x 8 x 8
        nn.ReLU(),
        nn.Conv2d(64, 64, 4, stride=2, padding=1),  # 64 x 4 x 4
        nn.ReLU(),
        nn.Conv2d(64, 128, 4, stride=2, padding=0),  # 128 x 1 x 1
        nn.ReLU(),
        nn.Flatten(),
    )
    return trunk, 128


def _svhn_body(spec: ModalitySpec, latent_dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(latent_dim, 128),
        nn.Unflatten(1, (128, 1, 1)),
        nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, stride=1, padding=0),  # 64 x 4 x 4
        nn.ReLU(),
        nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1),  # 64 x 8 x 8
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),  # 32 x 16 x 16
        nn.ReLU(),
        nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1),  # 3 x 32 x 32
    )


_DCGAN_CHANNELS = (3, 64, 128, 256, 512)


def _dcgan_trunk(spec: ModalitySpec, latent_dim: int) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    for c_in, c_out in pairwise(_DCGAN_CHANNELS):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]  # H -> H / 2
    # 512 x 4 x 4 -> 512 x 1 x 1
    layers += [nn.Conv2d(512, 512, 4, stride=1, padding=0), nn.ReLU(), nn.Flatten()]
    return nn.Sequential(*layers), 512


def _dcgan_body(spec: ModalitySpec, latent_dim: int) -> nn.Module:
    layers: list[nn.Module] = [
        nn.Unflatten(1, (latent_dim, 1, 1)),
        nn.ConvTranspose2d(latent_dim, 512, 4, stride=1, padding=0),  # 512 x 4 x 4
    ]
    channels = _DCGAN_CHANNELS[::-1]
    for c_in, c_out in pairwise(channels):
        layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
    return nn.Sequential(*layers)


def _text_trunk(spec: ModalitySpec, latent_dim: int) -> tuple[nn.Module, int]:
    length, vocab = spec.shape
    layers: list[nn.Module] = [Transpose(), nn.Conv1d(vocab, TEXT_CHANNELS, 1), nn.ReLU()]
    while length > 4:  # halve: L -> floor(L / 2)
        layers += [nn.Conv1d(TEXT_CHANNELS, TEXT_CHANNELS, 4, stride=2, padding=1), nn.ReLU()]
        length //= 2
    layers += [nn.Conv1d(TEXT_CHANNELS, TEXT_CHANNELS, length), nn.ReLU(), nn.Flatten()]
    return nn.Sequential(*layers), TEXT_CHANNELS


def _caption_trunk(spec: ModalitySpec, latent_dim: int) -> tuple[nn.Module, int]:
    vocab, channels = spec.shape[1], CAPTION_WIDTH * latent_dim
    trunk = nn.Sequential(
        Transpose(),
        nn.Conv1d(vocab, channels, 5, padding=2),  # L
        nn.ReLU(),
        nn.Conv1d(channels, channels, 5, stride=2, padding=2),  # ceil(L / 2)
        nn.ReLU(),
        nn.Conv1d(channels, channels, 5, stride=2, padding=2),  # ceil(L / 4)
        nn.ReLU(),
        nn.AdaptiveMaxPool1d(1),
        nn.Flatten(),
    )
    return trunk, channels


def _text_body(spec: ModalitySpec, latent_dim: int, channels: int = TEXT_CHANNELS) -> nn.Module:
    length, vocab = spec.shape
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, channels),
        nn.Unflatten(1, (channels, 1)),
        nn.ConvTranspose1d(channels, channels, 4),  # length 4
        nn.ReLU(),
    ]
    for _ in range(max(0, math.ceil(math.log2(length / 4)))):  # double up to >= L
        layers += [
            nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1),
            nn.ReLU(),
        ]
    layers += [nn.Conv1d(channels, vocab, 1), Crop(length), Transpose()]
    return nn.Sequential(*layers)


def _caption_body(spec: ModalitySpec, latent_dim: int) -> nn.Module:
    return _text_body(spec, latent_dim, CAPTION_WIDTH * latent_dim)


def _mnist_trunk(spec: ModalitySpec, latent_dim: int) -> tuple[nn.Module, int]:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU()), 400


def _mnist_body(spec: ModalitySpec, latent_dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(latent_dim, 400), nn.ReLU(), nn.Linear(400, 784), nn.Unflatten(1, spec.shape)
    )


def _mlp_trunk(spec: ModalitySpec, latent_dim: int) -> tuple[nn.Module, int]:
    trunk = nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(spec.shape), MLP_HIDDEN),
        nn.ReLU(),
        nn.Linear(MLP_HIDDEN, MLP_HIDDEN),
        nn.ReLU(),
    )
    return trunk, MLP_HIDDEN


def _mlp_body(spec: ModalitySpec, latent_dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(latent_dim, MLP_HIDDEN),
        nn.ReLU(),
        nn.Linear(MLP_HIDDEN, MLP_HIDDEN),
        nn.ReLU(),
        nn.Linear(MLP_HIDDEN, math.prod(spec.shape)),
        nn.Unflatten(1, spec.shape),
    )


@dataclass(frozen=True)
class Architecture:
    """An encoder trunk and decoder body for the modalities that ``matches`` accepts."""

    name: str
    matches: Callable[[ModalitySpec], bool]
    trunk: Callable[[ModalitySpec, int], tuple[nn.Module, int]]
    body: Callable[[ModalitySpec, int], nn.Module]


def _image(shape: tuple[int, ...]) -> Callable[[ModalitySpec], bool]:
    return lambda spec: spec.kind == "image" and spec.shape == shape


def _caption(spec: ModalitySpec) -> bool:
    return spec.kind == "text" and spec.shape[0] > CAPTION_LENGTH


#: Checked in order; the first match builds the networks. The MLP matches everything.
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("polymnist-conv", _image((3, 28, 28)), _polymnist_trunk, _polymnist_body),
    Architecture("mnist-mlp", _image((1, 28, 28)), _mnist_trunk, _mnist_body),
    Architecture("svhn-conv", _image((3, 32, 32)), _svhn_trunk, _svhn_body),
    Architecture("dcgan-64", _image((3, 64, 64)), _dcgan_trunk, _dcgan_body),
    Architecture("caption-conv1d", _caption, _caption_trunk, _caption_body),
    Architecture("text-conv1d", lambda spec: spec.kind == "text", _text_trunk, _text_body),
    Architecture("mlp", lambda spec: True, _mlp_trunk, _mlp_body),
)


def architecture(spec: ModalitySpec) -> Architecture:
    """The first entry of :data:`ARCHITECTURES` that matches ``spec``."""
    return next(a for a in ARCHITECTURES if a.matches(spec))


def make_encoder(spec: ModalitySpec, latent_dim: int) -> Encoder:
    """Encoder of ``spec``: ``x`` ``(B, *spec.shape)`` → ``(loc, scale)``, ``(B, latent_dim)``."""
    trunk, feature_dim = architecture(spec).trunk(spec, latent_dim)
    return Encoder(trunk, feature_dim, latent_dim)


def make_decoder(spec: ModalitySpec, latent_dim: int) -> nn.Sequential:
    """Decoder of ``spec``: ``z`` ``(B, latent_dim)`` → likelihood parameter ``(B, *spec.shape)``.

    Means in ``[0, 1]`` (sigmoid) for ``laplace``/``gaussian``, logits for
    ``bernoulli``/``categorical``.
    """
    body = architecture(spec).body(spec, latent_dim)
    return nn.Sequential(body, _OUTPUT_LAYERS[spec.likelihood]())
