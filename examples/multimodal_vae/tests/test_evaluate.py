"""Metrics on known answers, classifiers, and the table by number of input modalities."""

import math

import numpy as np
import pytest
import torch
from data import ModalitySpec, MultimodalDataset, get_dataset
from evaluate import (
    LABEL_KINDS,
    METRICS,
    classifier_accuracies,
    coherence,
    evaluation_table,
    format_table,
    importance_log_likelihood,
    label_kind,
    linear_probe_accuracy,
    linear_probe_average_precision,
    load_classifiers,
    load_or_train_classifiers,
    mean_average_precision,
    save_classifiers,
    subsets_by_size,
    train_classifiers,
)
from model import LIKELIHOOD_SCALE, MultimodalVAE
from torch import nn
from torch.distributions import MultivariateNormal
from torch.utils.data import default_collate


def test_probe_on_one_hot_labels_is_perfect():
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 5, 200), rng.integers(0, 5, 100)
    assert linear_probe_accuracy(np.eye(5)[y_train], y_train, np.eye(5)[y_test], y_test) == 1.0


def test_probe_on_noise_is_near_chance():
    rng = np.random.default_rng(0)
    y_train, y_test = np.arange(400) % 4, np.arange(400) % 4
    features_train, features_test = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    accuracy = linear_probe_accuracy(features_train, y_train, features_test, y_test)
    assert abs(accuracy - 0.25) < 0.1


def test_coherence_of_constant_predictions_is_chance():
    labels = torch.arange(100) % 10
    assert coherence(torch.full((100,), 3), labels) == pytest.approx(0.1)
    assert coherence(labels, labels) == 1.0


def test_subsets_by_size():
    subsets = subsets_by_size(4)
    assert {k: len(v) for k, v in subsets.items()} == {1: 4, 2: 6, 3: 4, 4: 1}
    assert (0, 2) in subsets[2]


class LinearGaussianPosterior(nn.Module):
    """The exact posterior of ``x = W z + b + σ ε`` when ``W`` has orthogonal columns."""

    def __init__(self, decoder, sigma, inflate=1.0):
        super().__init__()
        self.decoder, self.sigma, self.inflate = decoder, sigma, inflate

    def forward(self, x):
        weight, bias = self.decoder.weight, self.decoder.bias
        precision = 1 + (weight**2).sum(0) / self.sigma**2  # diagonal: W^T W is
        loc = (x - bias) @ weight / self.sigma**2 / precision
        return loc, self.inflate * precision.rsqrt().expand_as(loc)


def linear_gaussian_model(inflate):
    torch.manual_seed(0)
    latent, dim = 3, 6
    spec = ModalitySpec("x", "attributes", (dim,), "gaussian")
    model = MultimodalVAE([spec], latent, "wb")
    decoder = nn.Linear(latent, dim)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(dim, latent))
        decoder.weight.copy_(q * torch.tensor([2.0, 1.0, 0.5]))  # orthogonal columns
    model.decoders = nn.ModuleList([decoder])
    model.encoders = nn.ModuleList([LinearGaussianPosterior(decoder, LIKELIHOOD_SCALE, inflate)])
    marginal = MultivariateNormal(
        decoder.bias.detach(),
        decoder.weight.detach() @ decoder.weight.detach().T + LIKELIHOOD_SCALE**2 * torch.eye(dim),
    )
    x = marginal.sample((50,))
    return model, x, marginal.log_prob(x)


def test_importance_log_likelihood_is_exact_with_the_true_posterior():
    model, x, exact = linear_gaussian_model(inflate=1.0)
    estimate = importance_log_likelihood(model, [x], None, k=3)
    torch.testing.assert_close(estimate, exact, atol=1e-4, rtol=1e-5)


def test_importance_log_likelihood_converges_with_a_wider_proposal():
    model, x, exact = linear_gaussian_model(inflate=1.5)
    torch.manual_seed(1)
    few = importance_log_likelihood(model, [x], None, k=2)
    many = importance_log_likelihood(model, [x], None, k=4000)
    assert (few - exact).mean() < 0  # a lower bound in expectation
    assert (many - exact).abs().max() < 0.05


@pytest.fixture(scope="module")
def data():
    kwargs = {"n": 64, "num_modalities": 3, "num_classes": 4, "shape": (1, 4, 4)}
    return get_dataset("synthetic", "train", **kwargs), get_dataset("synthetic", "test", **kwargs)


@pytest.fixture(scope="module")
def classifiers(data):
    return train_classifiers(data[0], epochs=8, batch_size=16, seed=0)


def test_classifiers_learn_the_synthetic_labels(data, classifiers):
    xs, labels = default_collate([data[1][i] for i in range(len(data[1]))])
    accuracies = classifier_accuracies(classifiers, xs, labels, batch_size=5)
    assert len(accuracies) == len(xs)
    assert min(accuracies) > 0.9


class _Constant(nn.Module):
    def forward(self, x):
        return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 4).float()


def test_classifier_accuracy_of_a_constant_classifier_is_the_class_frequency(data):
    xs, labels = default_collate([data[1][i] for i in range(len(data[1]))])
    (accuracy,) = classifier_accuracies([_Constant()], xs[:1], labels, batch_size=7)
    assert accuracy == pytest.approx((labels == 0).double().mean().item())


def test_classifiers_round_trip_and_refuse_other_modalities(tmp_path, data, classifiers):
    path = tmp_path / "classifiers.pt"
    save_classifiers(classifiers, data[0], path)
    loaded = load_or_train_classifiers(path, data[0], epochs=0)
    x = data[0][0][0][0].unsqueeze(0)
    torch.testing.assert_close(loaded[0](x), classifiers[0](x))
    other = get_dataset("synthetic", "train", n=8, num_modalities=2)
    with pytest.raises(ValueError, match="trained for modalities"):
        load_classifiers(path, other)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_classifiers(path, data[0])


@pytest.mark.parametrize("aggregation", ["poe", "mwb"])
def test_evaluation_table_layout(data, classifiers, aggregation):
    torch.manual_seed(0)
    model = MultimodalVAE(data[0].specs, 4, aggregation)
    table = evaluation_table(
        model, *data, classifiers, num_importance_samples=4, max_eval_samples=32, batch_size=16
    )
    assert list(table) == [*METRICS, "coherence_by_direction"]
    assert list(table["linear_probe"]) == [1, 2, 3]
    assert list(table["coherence"]) == [1, 2]
    assert list(table["log_likelihood"]) == [1, 2, 3]
    assert all(0 <= v <= 1 for v in [*table["linear_probe"].values(), *table["coherence"].values()])
    assert all(math.isfinite(v) and v < 0 for v in table["log_likelihood"].values())
    again = evaluation_table(
        model, *data, classifiers, num_importance_samples=4, max_eval_samples=32, batch_size=16
    )
    assert again == table  # seeded


def test_format_table():
    text = format_table({"linear_probe": {1: 0.5, 2: 0.75}, "coherence": {1: 0.25}})
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "1", "input", "2", "inputs"]
    assert lines[1].split() == ["linear_probe", "0.5", "0.75"]
    assert lines[2].split() == ["coherence", "0.25", "-"]


#: The attribute vector of each synthetic class: every attribute varies across classes.
CODES = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)


class MultiLabelSynthetic(MultimodalDataset):
    """A synthetic dataset relabelled with :data:`CODES`, plus the codes as a modality.

    Like CelebA: ``(N, A)`` float attribute labels and a bernoulli ``attributes`` modality.
    """

    def __init__(self, base: MultimodalDataset) -> None:
        self.base = base
        self.labels = CODES[base.labels]
        self.num_classes = CODES.shape[1]
        attributes = ModalitySpec("attributes", "attributes", (self.num_classes,), "bernoulli")
        self.specs = (*base.specs, attributes)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        xs, _ = self.base[index]
        return (*xs, self.labels[index]), self.labels[index]


@pytest.fixture(scope="module")
def multi_label_data(data):
    return MultiLabelSynthetic(data[0]), MultiLabelSynthetic(data[1])


@pytest.fixture(scope="module")
def multi_label_classifiers(multi_label_data):
    return train_classifiers(multi_label_data[0], epochs=8, batch_size=16, seed=0)


def test_label_kind_follows_the_label_dims():
    assert label_kind(torch.zeros(5, dtype=torch.long)) is LABEL_KINDS[1]
    assert label_kind(torch.zeros(5, 3)).name == "multi-label"
    with pytest.raises(ValueError, match="labels must be"):
        label_kind(torch.zeros(5, 3, 2))


def test_mean_average_precision_skips_constant_attributes():
    y_true = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    scores = np.array([[0.9, 0.3, 0.1], [0.1, 0.2, 0.4], [0.8, 0.1, 0.2], [0.2, 0.9, 0.3]])
    assert mean_average_precision(y_true, scores) == 1.0  # only the first column counts
    assert math.isnan(mean_average_precision(y_true[:, 1:], scores[:, 1:]))


def test_multi_label_probe_on_the_attributes_is_perfect():
    rng = np.random.default_rng(0)
    y_train, y_test = (rng.random((200, 4)) < 0.4).astype(float), (rng.random((100, 4)) < 0.4)
    y_train[:, 3] = 0  # constant in training: skipped, not a crash
    score = linear_probe_average_precision(y_train, y_train, y_test.astype(float), y_test)
    assert score == 1.0


def test_multi_label_probe_on_noise_is_near_the_base_rate():
    rng = np.random.default_rng(0)
    y_train, y_test = rng.random((400, 5)) < 0.2, rng.random((400, 5)) < 0.2
    features_train, features_test = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    score = linear_probe_average_precision(features_train, y_train, features_test, y_test)
    assert abs(score - 0.2) < 0.1


def test_multi_label_classifiers_learn_the_attributes(multi_label_data, multi_label_classifiers):
    test_set = multi_label_data[1]
    xs, labels = default_collate([test_set[i] for i in range(len(test_set))])
    assert labels.shape == (len(test_set), CODES.shape[1])
    scores = classifier_accuracies(multi_label_classifiers, xs, labels, batch_size=5)
    assert len(scores) == len(xs)
    assert min(scores) > 0.9


def test_evaluation_table_on_multi_label_data(multi_label_data, multi_label_classifiers):
    torch.manual_seed(0)
    model = MultimodalVAE(multi_label_data[0].specs, 4, "mwb")
    table = evaluation_table(
        model,
        *multi_label_data,
        multi_label_classifiers,
        num_importance_samples=4,
        max_eval_samples=32,
        batch_size=16,
    )
    assert list(table) == [*METRICS, "coherence_by_direction"]
    assert list(table["coherence"]) == [1, 2, 3]
    assert all(0 <= v <= 1 for v in [*table["linear_probe"].values(), *table["coherence"].values()])
    assert all(math.isfinite(v) for row in table.values() for v in row.values())
