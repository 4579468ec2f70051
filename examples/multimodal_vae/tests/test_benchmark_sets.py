"""The paper's other two benchmarks: MNIST-SVHN-Text and bimodal CelebA, real and built in.

Loaders on small files in the released formats, the stand-ins' statistics, MoPoE's text
recipes and likelihood weights, the per-direction coherence, and a few training steps on
each built-in set.
"""

from __future__ import annotations

from itertools import chain, islice, repeat

import numpy as np
import pytest
import torch
from data import get_dataset
from data.base import ModalitySpec
from data.celeba import ATTRIBUTE_FILE, IMAGE_DIR, PARTITION_FILE, TEXT_FILE
from data.celeba_mini import (
    FREQUENCIES,
    MINI_ATTRIBUTES,
    TEXT_LENGTH,
    draw_face,
    sample_attributes,
)
from data.celeba_text import CELEBA_ATTRIBUTES, attributes_to_text, text_to_attributes
from data.mnist_svhn_text import ALPHABET, DIGIT_WORDS
from data.street_digits import render_street_digits
from evaluate import evaluation_table, format_table, train_classifiers
from model import MultimodalVAE
from objectives import elbo_loss
from PIL import Image
from torch.utils.data import DataLoader, default_collate


def decode(one_hot: torch.Tensor) -> str:
    """The characters of a one-hot text ``(L, V)``."""
    return "".join(ALPHABET[i] for i in one_hot.argmax(-1).tolist())


# --- MNIST-SVHN-Text built in ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mst_mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mst")
    return get_dataset("mnist-svhn-text-mini", "train", root, n_per_class=4, multiplicity=3)


def test_street_digits_shape_determinism_and_bad_labels():
    labels = np.arange(10)
    images = render_street_digits(labels, seed=1)
    assert images.shape == (10, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, render_street_digits(labels, seed=1))
    assert not np.array_equal(images, render_street_digits(labels, seed=2))
    assert images.std() > 20  # textured crops, not flat
    with pytest.raises(ValueError, match=r"digits 0\.\.9"):
        render_street_digits(np.array([10]))


def test_street_digits_centre_digit_contrasts_with_its_surround():
    """The centre of a crop differs from its border more than two crops' borders differ:
    a digit of its own colour stands there."""
    images = render_street_digits(np.repeat(np.arange(10), 5), seed=0).astype(float)
    centre = images[:, :, 10:22, 12:20].reshape(50, 3, -1)
    border = np.concatenate([images[:, :, :, :3], images[:, :, :, -3:]], -1).reshape(50, 3, -1)
    spread_in_crop = np.abs(centre.std(-1)).mean()
    spread_of_border = np.abs(border.std(-1)).mean()
    assert spread_in_crop > spread_of_border


def test_street_digits_are_lighter_than_their_background():
    """One polarity: in every crop the brightest centre pixels outshine the border, so the
    mean crop of a class shows its digit (mixed polarities cancel there)."""
    images = render_street_digits(np.repeat(np.arange(10), 5), seed=0) / 255.0
    luminance = images.transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114])
    centre = np.quantile(luminance[:, 10:22, 12:20].reshape(50, -1), 0.9, axis=1)
    border = np.median(np.concatenate([luminance[:, :, :3], luminance[:, :, -3:]], -1), (1, 2))
    assert np.all(centre - border > 0.15)


def test_mnist_svhn_text_mini_balance_pairing_and_text(mst_mini):
    labels = mst_mini.labels.numpy()
    # 3 train digits per class (4 minus 1 test), paired 3 times: 9 triples per class.
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 9))
    # Pairing by label (MoPoE's rand_match_on_idx): both images of a triple share its label,
    # and every image of a class enters as many triples as the multiplicity.
    image_labels = np.repeat(np.arange(10), 3)  # both image sets hold 3 per class, sorted
    np.testing.assert_array_equal(image_labels[mst_mini.mnist_index], labels)
    np.testing.assert_array_equal(image_labels[mst_mini.svhn_index], labels)
    np.testing.assert_array_equal(np.bincount(mst_mini.mnist_index), np.full(30, 3))
    np.testing.assert_array_equal(np.bincount(mst_mini.svhn_index), np.full(30, 3))
    for i in range(len(mst_mini)):
        (mnist, svhn, text), label = mst_mini[i]
        assert mnist.shape == (1, 28, 28) and svhn.shape == (3, 32, 32)
        assert text.shape == (8, 71) and torch.all(text.sum(-1) == 1)
        decoded = decode(text)
        word = DIGIT_WORDS[label]
        assert decoded.strip() == word and decoded.index(word) <= 8 - 1 - len(word)


def test_mnist_svhn_text_mini_is_cached_and_deterministic(mst_mini, tmp_path):
    again = get_dataset("mnist-svhn-text-mini", "train", tmp_path, n_per_class=4, multiplicity=3)
    np.testing.assert_array_equal(again.svhn_images, mst_mini.svhn_images)
    np.testing.assert_array_equal(again.mnist_images, mst_mini.mnist_images)
    test = get_dataset("mnist-svhn-text-mini", "test", tmp_path, n_per_class=4, multiplicity=3)
    assert len(test) == 10 * 3  # one test digit per class, 3 pairings
    assert list(tmp_path.glob("*.npz")) and not list(tmp_path.glob("*.tmp.npz"))


def test_mnist_svhn_text_likelihood_weights_are_mopoes(mst_mini):
    weights = [spec.weight for spec in mst_mini.specs]
    np.testing.assert_allclose(weights, [3072 / 784, 1.0, 3072 / 8])


def test_spec_weight_must_be_positive():
    with pytest.raises(ValueError, match="weight"):
        ModalitySpec("x", "image", (1, 2, 2), "bernoulli", 0.0)


def test_elbo_weights_each_modality_s_log_likelihood():
    """With a Gaussian posterior, the weighted loss minus the unweighted one is
    ``-Σ_m (w_m - 1) E[log p(x_m | z)]``, read off the returned terms (same draw)."""
    specs = (
        ModalitySpec("a", "image", (1, 4, 4), "bernoulli", 3.0),
        ModalitySpec("b", "image", (1, 4, 4), "bernoulli", 0.5),
    )
    torch.manual_seed(0)
    model = MultimodalVAE(specs, 3, "poe")
    xs = [torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)]
    torch.manual_seed(1)
    weighted, terms = elbo_loss(model, xs)
    model.specs = tuple(ModalitySpec(s.name, s.kind, s.shape, s.likelihood) for s in specs)
    torch.manual_seed(1)
    plain, _ = elbo_loss(model, xs)
    expected = -(2.0 * terms["rec_a"] - 0.5 * terms["rec_b"])
    torch.testing.assert_close(weighted - plain, expected, rtol=1e-5, atol=1e-3)


# --- CelebA: MoPoE's caption recipe, the real loader, the built-in set -----------------------


def test_caption_recipe_names_pads_and_cuts():
    rng = np.random.default_rng(0)
    names = ("Big_Nose", "Black_Hair", "Smiling")
    text = attributes_to_text(names, [True, False, True], rng, length=40)
    assert len(text) == 40
    body = text.strip("*")
    assert body == "big nose, smiling"
    start = text.index("b")
    assert set(text[:start]) <= {"*"} and 0 <= start <= 40 - 2 - len(body)
    starts = {attributes_to_text(names, [1, 0, 1], rng, 40).index("b") for _ in range(200)}
    assert starts == set(range(40 - 1 - len(body)))  # every start of [0, L - 2 - len] occurs
    # Too long: the last names are dropped until it fits, and then it is not shifted.
    cut = attributes_to_text(names, [True, True, True], rng, length=22)
    assert cut == "big nose, black hair**"
    assert attributes_to_text(names, [False] * 3, rng, 10) == "*" * 10
    np.testing.assert_array_equal(text_to_attributes(text, names), [1, 0, 1])


def write_celeba_files(root, partitions, with_csv=False):
    """The released layout: images, ``list_attr_celeba.txt`` (±1), ``list_eval_partition.txt``."""
    rng = np.random.default_rng(0)
    (root / IMAGE_DIR).mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(partitions))]
    values = rng.choice([-1, 1], size=(len(names), len(CELEBA_ATTRIBUTES)), p=[0.8, 0.2])
    lines = [str(len(names)), " ".join(CELEBA_ATTRIBUTES)]
    for name, row in zip(names, values, strict=True):
        lines.append(f"{name} " + " ".join(f"{v:2d}" for v in row))
    (root / ATTRIBUTE_FILE).write_text("\n".join(lines) + "\n")
    partition_lines = [f"{n} {p}\n" for n, p in zip(names, partitions, strict=True)]
    (root / PARTITION_FILE).write_text("".join(partition_lines))
    for n in names:
        Image.new("RGB", (178, 218), (100, 150, 200)).save(root / IMAGE_DIR / n)
    if with_csv:
        rows = "".join(f"{n},text of {n}\n" for n in names)
        (root / TEXT_FILE).write_text("image_id,text\n" + rows)
    return names, values > 0


def test_celeba_bimodal_generates_mopoe_captions_from_the_attribute_file(tmp_path):
    _, present = write_celeba_files(tmp_path, [0, 1, 2, 1, 0])
    train = get_dataset("celeba", "train", tmp_path)
    test = get_dataset("celeba", "test", tmp_path)  # MoPoE's evaluation: the valid partition
    assert [s.name for s in train.specs] == ["image", "text"] and train.num_classes == 40
    np.testing.assert_array_equal(test.labels.numpy(), present[[1, 3]])
    np.testing.assert_array_equal(train.labels.numpy(), present[[0, 4]])
    (image, text), label = test[0]
    assert image.shape == (3, 64, 64) and text.shape == (256, 71)
    caption = decode(text)
    np.testing.assert_array_equal(text_to_attributes(caption, CELEBA_ATTRIBUTES), label.numpy())
    assert caption == test.texts[0] and get_dataset("celeba", "test", tmp_path).texts == test.texts
    heldout = get_dataset("celeba", "test", tmp_path, eval_partition="test")
    np.testing.assert_array_equal(heldout.labels.numpy(), present[[2]])
    np.testing.assert_allclose([s.weight for s in train.specs], [1 / 3, 16.0])


def test_celeba_bimodal_prefers_mopoe_s_csv(tmp_path):
    write_celeba_files(tmp_path, [0, 0], with_csv=True)
    ds = get_dataset("celeba", "train", tmp_path)
    assert ds.texts == ["text of 000001.jpg", "text of 000002.jpg"]


def test_celeba_attributes_setting_stays_available(tmp_path):
    write_celeba_files(tmp_path, [0, 0])
    ds = get_dataset("celeba-attributes", "train", tmp_path)
    assert [s.name for s in ds.specs] == ["image", "attributes"] and ds.num_classes == 18


def test_celeba_mini_attribute_frequencies_and_constraints():
    attributes = sample_attributes(40_000, np.random.default_rng(0))
    expected = np.array([FREQUENCIES[a] for a in MINI_ATTRIBUTES])
    np.testing.assert_allclose(attributes.mean(0), expected, atol=0.01)
    column = {a: attributes[:, i] for i, a in enumerate(MINI_ATTRIBUTES)}
    hair = sum(column[c] for c in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"))
    assert hair.max() == 1 and not np.any(column["Bald"] * (hair + column["Bangs"]))
    assert not np.any(column["Wearing_Lipstick"] * column["Mustache"])


def test_celeba_mini_drawings_show_their_attributes():
    """Glasses darken the eye region, a mustache the upper lip."""
    rng = np.random.default_rng(0)
    index = {a: i for i, a in enumerate(MINI_ATTRIBUTES)}
    base = np.zeros(len(MINI_ATTRIBUTES), np.float32)
    glasses = base.copy()
    glasses[index["Eyeglasses"]] = 1
    plain_faces = np.stack([draw_face(base, np.random.default_rng(s)) for s in range(20)])
    glass_faces = np.stack([draw_face(glasses, np.random.default_rng(s)) for s in range(20)])
    eyes = (slice(None), slice(None), slice(13, 17), slice(8, 24))
    assert glass_faces[eyes].mean() < plain_faces[eyes].mean() - 10
    mustache = base.copy()
    mustache[index["Mustache"]] = 1
    mustache_faces = np.stack([draw_face(mustache, np.random.default_rng(s)) for s in range(20)])
    lip = (slice(None), slice(None), slice(19, 22), slice(13, 19))
    assert mustache_faces[lip].mean() < plain_faces[lip].mean() - 30
    assert draw_face(base, rng).shape == (3, 32, 32)


@pytest.mark.parametrize(("mouth", "more_white"), [((), 1.5), (("Mouth_Slightly_Open",), 10)])
def test_celeba_mini_smiles_show_teeth(mouth, more_white):
    """The same 40 faces with and without a smile: the smile adds near-white pixels."""
    index = {a: i for i, a in enumerate(MINI_ATTRIBUTES)}

    def white_pixels(*names: str) -> np.ndarray:
        attributes = np.zeros(len(MINI_ATTRIBUTES), np.float32)
        attributes[[index[name] for name in names]] = 1
        faces = np.stack([draw_face(attributes, np.random.default_rng(s)) for s in range(40)])
        return (faces.min(axis=1) >= 200).sum(axis=(1, 2))

    assert (white_pixels("Smiling", *mouth) - white_pixels(*mouth)).mean() > more_white


def test_celeba_mini_captions_decode_to_the_labels(tmp_path):
    ds = get_dataset("celeba-mini", "train", tmp_path, n_train=50)
    assert len(ds) == 50 and ds.num_classes == len(MINI_ATTRIBUTES)
    for i in range(50):
        (image, text), label = ds[i]
        assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
        caption = decode(text)
        assert len(caption) == TEXT_LENGTH
        np.testing.assert_array_equal(text_to_attributes(caption, MINI_ATTRIBUTES), label.numpy())
    np.testing.assert_allclose([s.weight for s in ds.specs], [1 / 3, 32 * 32 / TEXT_LENGTH])


# --- evaluation by direction, and the loss falls on every built-in set ----------------------


def test_coherence_by_direction_averages_to_the_coherence_row():
    ds = get_dataset("synthetic", "train", n=64, num_modalities=3, shape=(1, 4, 4))
    torch.manual_seed(0)
    model = MultimodalVAE(ds.specs, 4, "mwb")
    classifiers = train_classifiers(ds, epochs=1)
    table = evaluation_table(
        model, ds, ds, classifiers, num_importance_samples=2, max_log_likelihood_samples=4
    )
    directions = table["coherence_by_direction"]
    assert list(directions) == [
        "m0->m1", "m0->m2", "m1->m0", "m1->m2", "m2->m0", "m2->m1",
        "m0,m1->m2", "m0,m2->m1", "m1,m2->m0",
    ]  # fmt: skip
    values = list(directions.values())
    assert table["coherence"][1] == pytest.approx(np.mean(values[:6]))
    assert table["coherence"][2] == pytest.approx(np.mean(values[6:]))
    text = format_table(table)
    assert "m0->m1" in text and "m1,m2->m0" in text


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("mnist-svhn-text-mini", {"n_per_class": 20, "multiplicity": 2}),
        ("celeba-mini", {"n_train": 256}),
    ],
)
def test_a_few_steps_lower_the_loss_on_each_built_in_set(tmp_path, name, kwargs):
    ds = get_dataset(name, "train", tmp_path, **kwargs)
    torch.manual_seed(0)
    model = MultimodalVAE(ds.specs, 32, "mwb")  # celeba-mini's latent and lr
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    batch, _ = default_collate([ds[i] for i in range(32)])
    loader = DataLoader(ds, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = np.mean([elbo_loss(model, batch)[0].item() for _ in range(5)])
    for xs, _ in islice(chain.from_iterable(repeat(loader)), 30):  # epochs of a small set
        loss, _ = elbo_loss(model, xs)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = np.mean([elbo_loss(model, batch)[0].item() for _ in range(5)])
    assert after < 0.8 * before
