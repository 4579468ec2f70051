"""Datasets: shapes, dtypes, ranges, labels, determinism and the errors on bad files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import data
import numpy as np
import pytest
import torch
from data.base import save_npz
from data.celeba import ATTRIBUTE_FILE, ATTRIBUTES, IMAGE_DIR, PARTITION_FILE, TEXT_FILE
from data.mnist_idx import load_mnist, read_idx
from data.mnist_svhn_text import ALPHABET, DIGIT_WORDS, encode_text
from data.polymnist import compose_polymnist, generate_polymnist, load_polymnist_npz
from PIL import Image
from scipy.io import savemat

# --- helpers writing tiny files in the standard formats ------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped if ``path`` ends in ``.gz``)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stroke-like digits: a random blob whose every pixel above 128 is ``100 + label``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    rng.shuffle(labels)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for i, label in enumerate(labels):
        mask = rng.random((28, 28)) < 0.3
        images[i][mask] = 130 + label  # > 128: "digit" pixels, distinct per image
    return images, labels


def write_mnist_dir(directory: Path, n_per_class: int = 3, gz: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, (images_name, labels_name) in data.mnist_idx.MNIST_FILES.items():
        images, labels = fake_mnist(n_per_class, seed=len(split))
        write_idx(directory / (images_name + suffix), images)
        write_idx(directory / (labels_name + suffix), labels)


def write_svhn_dir(directory: Path, n_per_class: int = 4) -> None:
    """SVHN .mat files whose images are constant ``10 * digit`` and label 10 means 0."""
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        digits = np.repeat(np.arange(10), n_per_class)
        images = np.broadcast_to(10 * digits, (32, 32, 3, len(digits))).astype(np.uint8)
        y = np.where(digits == 0, 10, digits).reshape(-1, 1)
        savemat(directory / f"{split}_32x32.mat", {"X": images, "y": y})


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_every_dataset():
    assert data.DATASETS == (
        "polymnist-mini",
        "polymnist",
        "mnist-svhn-text",
        "mnist-svhn-text-mini",
        "celeba-mini",
        "celeba",
        "celeba-attributes",
        "synthetic",
    )


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(ValueError, match=r"polymnist-mini.*synthetic"):
        data.get_dataset("cifar")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "audio", "shape": (3,), "likelihood": "laplace"}, "kind"),
        ({"kind": "image", "shape": (3,), "likelihood": "laplace"}, "3 dims"),
        ({"kind": "text", "shape": (8, 71), "likelihood": "poisson"}, "likelihood"),
    ],
)
def test_modality_spec_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.ModalitySpec("x", **kwargs)


# --- synthetic ------------------------------------------------------------------------------


def test_synthetic_shapes_labels_and_range():
    ds = data.get_dataset("synthetic", n=40, num_modalities=3, num_classes=4, shape=(1, 6, 5))
    assert len(ds) == 40 and ds.num_classes == 4
    assert [s.name for s in ds.specs] == ["m0", "m1", "m2"]
    xs, y = ds[7]
    assert isinstance(y, int) and y == int(ds.labels[7])
    for x in xs:
        assert x.shape == (1, 6, 5) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert torch.equal(torch.bincount(ds.labels), torch.full((4,), 10))


def test_synthetic_is_deterministic_and_class_structured():
    a = data.get_dataset("synthetic", n=64, seed=3)
    b = data.get_dataset("synthetic", n=64, seed=3)
    c = data.get_dataset("synthetic", n=64, seed=4)
    test = data.get_dataset("synthetic", "test", n=64, seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(a.arrays, b.arrays, strict=True))
    assert not np.array_equal(a.arrays[0], c.arrays[0])
    # Train and test share the class prototypes: class means agree across splits, and
    # differ between classes by far more than the noise.
    for m in range(2):
        means = [a.arrays[m][a.labels.numpy() == k].mean(0) for k in range(4)]
        test_means = [test.arrays[m][test.labels.numpy() == k].mean(0) for k in range(4)]
        for k in range(4):
            assert np.abs(means[k] - test_means[k]).mean() < 0.05
            assert np.abs(means[k] - means[(k + 1) % 4]).mean() > 0.2


# --- IDX / MNIST ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    out = read_idx(tmp_path / name)
    assert out.dtype == np.uint8 and np.array_equal(out, array)


def test_read_idx_rejects_bad_magic_and_size(tmp_path):
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match=r"bad-magic.*magic"):
        read_idx(bad_magic)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + np.array([10], ">u4").tobytes() + b"\x00" * 9)
    with pytest.raises(ValueError, match=r"truncated.*10"):
        read_idx(truncated)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_reads_both_splits(tmp_path, gz):
    write_mnist_dir(tmp_path, n_per_class=2, gz=gz)
    images, labels = load_mnist(tmp_path, "test")
    expected_images, expected_labels = fake_mnist(2, seed=len("test"))
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images, expected_images) and np.array_equal(labels, expected_labels)


def test_load_mnist_missing_files_say_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path, "train")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    assert str(tmp_path) in message


def test_load_mnist_rejects_mismatched_labels(tmp_path):
    write_mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path, "test")


# --- PolyMNIST ------------------------------------------------------------------------------


def flat_backgrounds() -> list[np.ndarray]:
    """Five flat backgrounds of distinct colours, of distinct sizes."""
    return [np.full((40 + 5 * m, 50, 3), 40 * m + 10, np.uint8) for m in range(5)]


def test_compose_polymnist_pastes_inverted_digits_on_each_background():
    images, labels = fake_mnist(4)
    out, out_labels = compose_polymnist(
        images, labels, flat_backgrounds(), np.random.default_rng(0)
    )
    assert out.shape == (5, 40, 3, 28, 28) and out.dtype == np.uint8
    assert np.array_equal(out_labels, np.sort(labels))
    for m in range(5):
        colour = 40 * m + 10
        assert set(np.unique(out[m])) <= {colour, 255 - colour}  # background or inverted digit
        masks = out[m, :, 0] == 255 - colour
        for i, mask in enumerate(masks):
            # the digit is an MNIST image of the sample's class, thresholded at 128
            sources = images[labels == out_labels[i]] > 128
            assert any(np.array_equal(mask, s) for s in sources)
    # each modality uses every MNIST image exactly once, in a different order
    masks = out[:, :, 0] == (255 - (40 * np.arange(5) + 10))[:, None, None, None]
    assert all(not np.array_equal(masks[0], masks[m]) for m in range(1, 5))
    assert {masks[1, i].tobytes() for i in range(40)} == {(im > 128).tobytes() for im in images}


def test_generate_polymnist_is_deterministic(tmp_path):
    images, labels = fake_mnist(2)
    backgrounds = flat_backgrounds()
    a = generate_polymnist(images, labels, backgrounds, tmp_path / "a.npz", seed=1)
    b = generate_polymnist(images, labels, backgrounds, tmp_path / "b.npz", seed=1)
    c = generate_polymnist(images, labels, backgrounds, tmp_path / "c.npz", seed=2)
    da, db, dc = (load_polymnist_npz(p) for p in (a, b, c))
    assert all(np.array_equal(u, v) for u, v in zip(da.arrays, db.arrays, strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(da.arrays, dc.arrays, strict=True))
    assert not list(tmp_path.glob("*.tmp.npz"))


def test_load_polymnist_npz_rejects_other_files(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((5, 2, 1, 28, 28), np.uint8), labels=[0, 1])
    with pytest.raises(ValueError, match=r"bad\.npz"):
        load_polymnist_npz(tmp_path / "bad.npz")


def test_polymnist_from_idx_files_and_background_dir(tmp_path):
    write_mnist_dir(tmp_path / "MNIST", n_per_class=2)
    for m, background in enumerate(flat_backgrounds()):
        Image.fromarray(background).save(tmp_path / f"bg{m}.png")
    ds = data.get_dataset(
        "polymnist",
        "test",
        root=tmp_path / "cache",
        generate=True,
        mnist_dir=tmp_path / "MNIST",
        background_dir=tmp_path,
    )
    assert (tmp_path / "cache" / "test.npz").is_file()
    assert len(ds) == 20 and [s.name for s in ds.specs] == ["m0", "m1", "m2", "m3", "m4"]
    xs, _ = ds[3]
    assert all(x.shape == (3, 28, 28) and x.dtype == torch.float32 for x in xs)
    # the cache is read afterwards, without the MNIST files
    again = data.get_dataset("polymnist", "test", root=tmp_path / "cache")
    assert torch.equal(again.labels, ds.labels) and torch.equal(again[3][0][4], xs[4])


def test_polymnist_reads_the_released_png_layout(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 3, 28, 28, 3), dtype=np.uint8)
    for m in range(5):
        (tmp_path / "train" / f"m{m}").mkdir(parents=True)
        for i, label in enumerate([7, 2, 9]):
            Image.fromarray(pixels[m, i]).save(tmp_path / "train" / f"m{m}" / f"{i}.{label}.png")
    ds = data.get_dataset("polymnist", "train", root=tmp_path)
    assert ds.labels.tolist() == [7, 2, 9]
    xs, y = ds[1]
    assert y == 2
    assert torch.allclose(xs[4], torch.from_numpy(pixels[4, 1]).permute(2, 0, 1) / 255.0)


def test_polymnist_missing_lists_every_released_folder_and_never_generates(tmp_path):
    write_mnist_dir(tmp_path / "MNIST", n_per_class=1)  # generation is only on request
    with pytest.raises(FileNotFoundError) as info:
        data.get_dataset("polymnist", "test", root=tmp_path)
    message = str(info.value)
    for split in ("train", "test"):
        for m in range(5):
            assert f"{tmp_path / split / f'm{m}'}/" in message
    assert "zenodo.org/record/4899160" in message and "background_dir" in message
    assert not list(tmp_path.glob("*.npz"))


def test_polymnist_generation_lists_every_missing_input_at_once(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.get_dataset("polymnist", "test", root=tmp_path, generate=True)
    message = str(info.value)
    for stem in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert f"{tmp_path / 'MNIST' / stem}.gz" in message
    assert "background_dir" in message


def test_unknown_dataset_options_are_refused():
    with pytest.raises(ValueError, match=r"'polymnist'.*\['background'\]"):
        data.get_dataset("polymnist", "test", background="photos")


def test_polymnist_mini_small_subset(tmp_path):
    train = data.get_dataset("polymnist-mini", "train", root=tmp_path, n_per_class=5)
    test = data.get_dataset("polymnist-mini", "test", root=tmp_path, n_per_class=5)
    assert (len(train), len(test)) == (40, 10)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 4))
    xs, _ = train[0]
    assert len(xs) == 5 and all(x.shape == (3, 28, 28) for x in xs)
    assert all(0.0 <= x.min() and x.max() <= 1.0 for x in xs)
    # backgrounds differ: per-modality mean colours are apart (dimmed to 30 %, hence 0.01)
    colours = torch.stack(
        [torch.stack([train[i][0][m] for i in range(40)]).mean((0, 2, 3)) for m in range(5)]
    )
    assert torch.cdist(colours, colours).fill_diagonal_(1.0).min() > 0.01
    # generated once, then reused
    cache = next(tmp_path.glob("train-*.npz"))
    mtime = os.stat(cache).st_mtime_ns
    again = data.get_dataset("polymnist-mini", "train", root=tmp_path, n_per_class=5)
    assert os.stat(cache).st_mtime_ns == mtime and torch.equal(again[5][0][2], train[5][0][2])


def test_polymnist_mini_dims_backgrounds_under_bright_digits(tmp_path):
    dim = data.get_dataset("polymnist-mini", "test", root=tmp_path, n_per_class=3)
    full = data.get_dataset(
        "polymnist-mini", "test", root=tmp_path, n_per_class=3, background_brightness=1.0
    )
    assert {spec.likelihood for spec in dim.specs} == {"bernoulli"}
    assert {spec.likelihood for spec in full.specs} == {"bernoulli"}
    for a, b in zip(dim.arrays, full.arrays, strict=True):
        a, b = a.astype(int), b.astype(int)
        # Every pixel is dark background (≤ 30 % of 255) or bright stroke (≥ 70 %), all
        # three channels alike: the digit stands out whatever the photo.
        stroke = a.min(axis=1, keepdims=True) >= 178
        assert (a[np.broadcast_to(~stroke, a.shape)] <= 77).all() and 0 < stroke.mean() < 0.5
        # Same digits and crops as the undimmed set: the photo times 0.3, inverted under
        # the digit.
        expected = np.where(stroke, 255 - np.round(0.3 * (255 - b)), np.round(0.3 * b))
        assert np.abs(a - expected).max() <= 1


def test_polymnist_mini_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_per_class"):
        data.get_dataset("polymnist-mini", root=tmp_path, n_per_class=501)
    for brightness in (0.0, 1.5):
        with pytest.raises(ValueError, match="background_brightness"):
            data.get_dataset("polymnist-mini", root=tmp_path, background_brightness=brightness)
    with pytest.raises(ValueError, match="split"):
        data.get_dataset("polymnist-mini", "valid", root=tmp_path)


# --- MNIST-SVHN-Text ------------------------------------------------------------------------


def test_encode_text_one_hot():
    encoded = encode_text(" six", 8)
    assert encoded.shape == (8, len(ALPHABET)) == (8, 71) and encoded.dtype == np.float32
    assert np.array_equal(encoded.sum(1), np.ones(8))
    decoded = "".join(ALPHABET[i] for i in encoded.argmax(1))
    assert decoded == " six    "
    assert encode_text("é", 2)[0].sum() == 0  # unknown characters are all-zero rows


def test_mnist_svhn_text_pairs_share_the_label(tmp_path):
    write_mnist_dir(tmp_path / "MNIST", n_per_class=3)
    write_svhn_dir(tmp_path / "SVHN", n_per_class=4)
    ds = data.get_dataset("mnist-svhn-text", "train", root=tmp_path, multiplicity=2, seed=1)
    assert len(ds) == 10 * 3 * 2  # min(3 MNIST, 4 SVHN) per class, twice
    assert [s.shape for s in ds.specs] == [(1, 28, 28), (3, 32, 32), (8, 71)]
    assert [s.likelihood for s in ds.specs] == ["laplace", "laplace", "categorical"]
    for i in range(len(ds)):
        (mnist, svhn, text), y = ds[i]
        assert mnist.shape == (1, 28, 28) and svhn.shape == (3, 32, 32) and text.shape == (8, 71)
        assert mnist.max() == pytest.approx((130 + y) / 255)  # fake MNIST encodes its label
        assert svhn[0, 0, 0] == pytest.approx(10 * y / 255)  # SVHN's label 10 became 0
        word = "".join(ALPHABET[j] for j in text.argmax(1)).strip()
        assert word == DIGIT_WORDS[y] and text.sum() == 8
        assert not ds.text(i).endswith(DIGIT_WORDS[y])  # offset <= L - len(word) - 1
    same = data.get_dataset("mnist-svhn-text", "train", root=tmp_path, multiplicity=2, seed=1)
    assert np.array_equal(same.svhn_index, ds.svhn_index)
    assert np.array_equal(same.text_offsets, ds.text_offsets)


def test_mnist_svhn_text_missing_svhn_says_what_to_download(tmp_path):
    write_mnist_dir(tmp_path / "MNIST")
    with pytest.raises(FileNotFoundError, match=r"test_32x32\.mat.*SVHN"):
        data.get_dataset("mnist-svhn-text", "test", root=tmp_path)


def test_mnist_svhn_text_lists_every_missing_file_at_once(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.get_dataset("mnist-svhn-text", "train", root=tmp_path)
    message = str(info.value)
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte")
    for stem in (*stems, "t10k-labels-idx1-ubyte"):
        assert f"{tmp_path / 'MNIST' / stem}.gz" in message
    for name in ("train_32x32.mat", "test_32x32.mat"):
        assert str(tmp_path / "SVHN" / name) in message


def test_mnist_svhn_text_rejects_corrupt_mat(tmp_path):
    write_mnist_dir(tmp_path / "MNIST")
    (tmp_path / "SVHN").mkdir()
    (tmp_path / "SVHN" / "train_32x32.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match=r"train_32x32\.mat"):
        data.get_dataset("mnist-svhn-text", "train", root=tmp_path)
    savemat(tmp_path / "SVHN" / "train_32x32.mat", {"X": np.zeros((28, 28, 3, 2)), "y": [1, 2]})
    with pytest.raises(ValueError, match=r"train_32x32.mat.*\(32, 32, 3, N\)"):
        data.get_dataset("mnist-svhn-text", "train", root=tmp_path)


# --- CelebA ---------------------------------------------------------------------------------

ALL_ATTRIBUTES = [f"Extra_{i}" for i in range(22)] + list(ATTRIBUTES)


def write_celeba(root: Path, partitions: list[int], rows: int | None = None) -> np.ndarray:
    """Tiny CelebA with images of ``30 * index`` grey; returns the ±1 attribute table."""
    (root / IMAGE_DIR).mkdir(parents=True)
    rng = np.random.default_rng(0)
    values = rng.choice([-1, 1], (len(partitions), len(ALL_ATTRIBUTES)))
    lines = [str(rows if rows is not None else len(partitions)), " ".join(ALL_ATTRIBUTES)]
    for i, part in enumerate(partitions):
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(np.full((60, 50, 3), 30 * i, np.uint8)).save(root / IMAGE_DIR / name)
        lines.append(name + " " + " ".join(f"{v:2d}" for v in values[i]))
        with open(root / PARTITION_FILE, "a") as f:
            f.write(f"{name} {part}\n")
    (root / ATTRIBUTE_FILE).write_text("\n".join(lines) + "\n")
    return values


def test_celeba_split_images_and_attributes(tmp_path):
    values = write_celeba(tmp_path, [0, 2, 0, 1, 2])
    ds = data.get_dataset("celeba-attributes", "test", root=tmp_path)
    assert len(ds) == 2 and ds.num_classes == 18
    assert [s.kind for s in ds.specs] == ["image", "attributes"]
    kept = values[[1, 4]][:, [ALL_ATTRIBUTES.index(a) for a in ATTRIBUTES]] > 0
    assert torch.equal(ds.labels, torch.from_numpy(kept.astype(np.float32)))
    (image, attributes), label = ds[1]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert torch.allclose(image, torch.full_like(image, 120 / 255), atol=2 / 255)  # index 4
    assert torch.equal(attributes, label) and attributes.shape == (18,)


def test_celeba_with_text(tmp_path):
    write_celeba(tmp_path, [0, 0])
    (tmp_path / TEXT_FILE).write_text(
        'image_id,text\n000001.jpg,"bangs, smiling"\n000002.jpg,hat\n'
    )
    ds = data.get_dataset("celeba-attributes", "train", root=tmp_path, with_text=True)
    (_, _, text), _ = ds[0]
    assert ds.specs[2].shape == text.shape == (256, 71)
    assert "".join(ALPHABET[i] for i in text.argmax(1)).rstrip() == "bangs, smiling"


def test_celeba_missing_files_say_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.get_dataset("celeba-attributes", root=tmp_path)
    for name in (IMAGE_DIR, ATTRIBUTE_FILE, PARTITION_FILE):
        assert name in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_celeba_rejects_corrupt_attribute_file(tmp_path):
    write_celeba(tmp_path, [0, 0, 0], rows=5)
    with pytest.raises(ValueError, match=ATTRIBUTE_FILE):
        data.get_dataset("celeba-attributes", root=tmp_path)


def test_save_npz_lets_two_runs_make_one_cache_at_once(tmp_path, monkeypatch):
    """Another run finishes the same cache while this one writes it: both succeed, the
    last one in wins, and no temporary file is left."""
    path = tmp_path / "cache.npz"
    write = np.savez

    def write_while_another_run_finishes(file, **arrays):
        write(file, **arrays)
        monkeypatch.setattr(np, "savez", write)
        save_npz(path, x=np.zeros(3))

    monkeypatch.setattr(np, "savez", write_while_another_run_finishes)
    save_npz(path, x=np.ones(3))
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["x"], np.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_save_npz_leaves_nothing_when_writing_fails(tmp_path, monkeypatch):
    def fail(file, **arrays):
        Path(file).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        save_npz(tmp_path / "cache.npz", x=np.ones(3))
    assert not list(tmp_path.iterdir())
