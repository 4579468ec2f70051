"""Encoders and decoders: shapes for every dataset's modalities, positivity, gradients."""

from __future__ import annotations

import data
import networks
import pytest
import torch
from data import ModalitySpec
from torch import nn

LATENT = 6
SPECS = {
    "polymnist-conv": ModalitySpec("m0", "image", (3, 28, 28), "laplace"),
    "mnist-mlp": ModalitySpec("mnist", "image", (1, 28, 28), "laplace"),
    "svhn-conv": ModalitySpec("svhn", "image", (3, 32, 32), "gaussian"),
    "dcgan-64": ModalitySpec("image", "image", (3, 64, 64), "laplace"),
    "text-conv1d": ModalitySpec("text", "text", (8, 71), "categorical"),
    "caption-conv1d": ModalitySpec("text", "text", (128, 71), "shifted-categorical"),
    "mlp": ModalitySpec("attributes", "attributes", (18,), "bernoulli"),
}
MORE_SPECS = [
    ModalitySpec("text", "text", (256, 71), "categorical"),  # CelebA text
    ModalitySpec("text", "text", (5, 7), "categorical"),  # length not a power of two
    ModalitySpec("m0", "image", (1, 8, 8), "laplace"),  # synthetic
    ModalitySpec("m0", "image", (2, 5, 3), "bernoulli"),
]
ALL_SPECS = list(SPECS.values()) + MORE_SPECS


@pytest.mark.parametrize(("name", "spec"), SPECS.items())
def test_dispatch_by_kind_and_shape(name, spec):
    assert networks.architecture(spec).name == name


def test_dispatch_ignores_the_modality_name():
    renamed = ModalitySpec("anything", "image", (3, 28, 28), "laplace")
    assert networks.architecture(renamed).name == "polymnist-conv"
    assert networks.architecture(MORE_SPECS[2]).name == "mlp"


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: f"{s.kind}{s.shape}")
def test_shapes_positive_scale_and_output_range(spec):
    torch.manual_seed(0)
    encoder, decoder = networks.make_encoder(spec, LATENT), networks.make_decoder(spec, LATENT)
    x = torch.rand(3, *spec.shape)
    loc, scale = encoder(x)
    assert loc.shape == scale.shape == (3, LATENT)
    assert (scale >= networks.MIN_SCALE).all()
    out = decoder(loc + 10 * torch.randn_like(loc))
    assert out.shape == (3, *spec.shape) and out.dtype == torch.float32
    if spec.likelihood in ("laplace", "gaussian"):
        assert 0.0 <= out.min() and out.max() <= 1.0
    else:  # logits: unconstrained, so the big latent pushes some outside [0, 1]
        assert out.min() < 0.0 or out.max() > 1.0


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: f"{s.kind}{s.shape}")
def test_gradients_reach_every_parameter(spec):
    torch.manual_seed(0)
    encoder, decoder = networks.make_encoder(spec, LATENT), networks.make_decoder(spec, LATENT)
    x = torch.rand(4, *spec.shape)
    loc, scale = encoder(x)
    z = loc + scale * torch.randn_like(scale)
    loss = (decoder(z) - x).square().sum() + scale.sum()
    loss.backward()
    for module in (encoder, decoder):
        for name, parameter in module.named_parameters():
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name


def test_scale_is_softplus_plus_floor():
    spec = SPECS["mlp"]
    encoder = networks.make_encoder(spec, LATENT)
    torch.nn.init.zeros_(encoder.scale.weight)
    torch.nn.init.constant_(encoder.scale.bias, -50.0)
    _, scale = encoder(torch.rand(2, 18))
    assert torch.allclose(scale, torch.full_like(scale, networks.MIN_SCALE))


def test_every_dataset_spec_gets_networks():
    ds = data.get_dataset("synthetic", n=8, num_modalities=3, shape=(1, 8, 8))
    batch = torch.stack([ds[i][0][1] for i in range(8)])
    for spec in ds.specs:
        loc, _ = networks.make_encoder(spec, LATENT)(batch)
        assert networks.make_decoder(spec, LATENT)(loc).shape == batch.shape


def test_synthetic_is_learnable_in_a_few_steps():
    """An autoencoder of the synthetic images halves its error in 60 Adam steps."""
    torch.manual_seed(0)
    ds = data.get_dataset("synthetic", n=128, num_modalities=1, noise=0.05)
    x = torch.from_numpy(ds.arrays[0])
    spec = ds.specs[0]
    encoder, decoder = networks.make_encoder(spec, 4), networks.make_decoder(spec, 4)
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    losses = []
    for _ in range(60):
        loss = (decoder(encoder(x)[0]) - x).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_the_caption_encoder_ignores_where_the_caption_starts():
    """Convs of stride 2 twice and a maximum over positions: a shift by 4 changes nothing."""
    spec = SPECS["caption-conv1d"]
    torch.manual_seed(0)
    encoder = networks.make_encoder(spec, LATENT)
    caption = torch.randint(0, 70, (2, 30))
    text = torch.full((2, 4, 128), 70)  # starts 16, 20, 24, 60: 12 from either end
    for row, start in enumerate((16, 20, 24, 60)):
        text[:, row, start : start + 30] = caption
    loc, scale = encoder(torch.nn.functional.one_hot(text.flatten(0, 1), 71).float())
    loc, scale = loc.unflatten(0, (2, 4)), scale.unflatten(0, (2, 4))
    torch.testing.assert_close(loc, loc[:, :1].expand_as(loc), rtol=0, atol=1e-6)
    torch.testing.assert_close(scale, scale[:, :1].expand_as(scale), rtol=0, atol=1e-6)
    assert not torch.allclose(loc[0], loc[1])


@pytest.mark.parametrize("latent_dim", [32, 64])
def test_the_caption_networks_are_twice_the_latent_wide(latent_dim):
    """64 channels for celeba-mini's latent of 32, 128 for the full-size CelebA's 64."""
    spec = SPECS["caption-conv1d"]
    for net in (networks.make_encoder(spec, latent_dim), networks.make_decoder(spec, latent_dim)):
        widths = {
            m.out_channels for m in net.modules() if isinstance(m, nn.Conv1d | nn.ConvTranspose1d)
        }
        assert widths - {spec.shape[1]} == {2 * latent_dim}
