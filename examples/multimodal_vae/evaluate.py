"""The paper's three metrics, each as a function of the number of input modalities.

For every ``k`` and every subset ``S`` of ``k`` modalities (averaged over the subsets of a
size, as in Fig. 3 of the paper and in MoPoE):

* ``linear_probe``: accuracy on the test set of a logistic regression trained on the
  posterior means ``E[z | X_S]`` of the training set;
* ``coherence``: fraction of the modalities *not* in ``S``, generated from ``X_S``, that a
  pre-trained unimodal classifier assigns the true label (``k = 1..M-1``);
* ``log_likelihood``: the importance-sampled test log-likelihood ``log p(X)`` of all
  modalities, with ``q(z | X_S)`` as proposal.

Labels come in two kinds (:data:`LABEL_KINDS`), told apart by the label tensor's number of
dims: ``(N,)`` class indices (single-label, the scores above) or ``(N, A)`` binary attribute
vectors (multi-label, CelebA), for which the probe and the classifiers predict every
attribute and both scores are the mean over attributes of the average precision, as MoPoE
reports for CelebA (:func:`mean_average_precision`).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from data import ModalitySpec, MultimodalDataset, get_dataset
from model import MultimodalVAE
from networks import make_encoder
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multioutput import MultiOutputClassifier
from tensorboard_log import TensorBoardLog
from torch import Tensor, nn
from torch.distributions import Independent, Normal
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

#: Metric name → what it measures, in the order they are reported.
METRICS = {
    "linear_probe": "latent linear probe",
    "coherence": "cross-modal coherence",
    "log_likelihood": "test log-likelihood (nats)",
}

#: ``{metric: {number of inputs: value}}`` for the :data:`METRICS`, plus
#: ``{"coherence_by_direction": {"a,b->c": value}}`` (see :func:`evaluation_table`).
Table = dict[str, dict[int | str, float]]

#: Separates a direction's inputs from its target: ``"mnist,svhn->text"``.
DIRECTION_ARROW = "->"
#: :func:`format_table` lists the directions when there are at most this many (three
#: modalities have 9; MoPoE's tables list them for MNIST-SVHN-Text and CelebA).
MAX_PRINTED_DIRECTIONS = 12

#: Latent draws decoded at once when estimating the log-likelihood.
DECODED_PER_BATCH = 4096


def linear_probe_accuracy(
    features_train: np.ndarray, y_train: np.ndarray, features_test: np.ndarray, y_test: np.ndarray
) -> float:
    """Test accuracy of a logistic regression fitted to the training features.

    Parameters
    ----------
    features_train, features_test : numpy.ndarray
        ``(N, d)`` representations.
    y_train, y_test : numpy.ndarray
        ``(N,)`` integer labels.

    Returns
    -------
    float
        Fraction of test points classified correctly.
    """
    probe = LogisticRegression(max_iter=1000)
    probe.fit(features_train, y_train)
    return float(probe.score(features_test, y_test))


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean over attributes of the average precision of ``scores`` against ``y_true``.

    Average precision is undefined for an attribute without positives and trivially 1 for
    one without negatives, so the attributes constant in ``y_true`` are skipped.

    Parameters
    ----------
    y_true : numpy.ndarray
        ``(N, A)`` binary attributes.
    scores : numpy.ndarray
        ``(N, A)`` scores, higher for more likely present (probabilities or logits: any
        increasing map of them gives the same value).

    Returns
    -------
    float
        The mean average precision in ``[0, 1]``; ``nan`` when every attribute is constant.
    """
    varying = [a for a in range(y_true.shape[1]) if len(np.unique(y_true[:, a])) == 2]
    if not varying:
        return math.nan
    return float(np.mean([average_precision_score(y_true[:, a], scores[:, a]) for a in varying]))


def linear_probe_average_precision(
    features_train: np.ndarray, y_train: np.ndarray, features_test: np.ndarray, y_test: np.ndarray
) -> float:
    """Test mean average precision of one logistic regression per attribute.

    The multi-label linear probe: the attributes constant in ``y_train`` cannot be fitted
    and are skipped; the others are scored by :func:`mean_average_precision` (which also
    skips those constant in ``y_test``).

    Parameters
    ----------
    features_train, features_test : numpy.ndarray
        ``(N, d)`` representations.
    y_train, y_test : numpy.ndarray
        ``(N, A)`` binary attributes.

    Returns
    -------
    float
        Mean over the attributes of the test average precision; ``nan`` when none is left.
    """
    fitted = [a for a in range(y_train.shape[1]) if len(np.unique(y_train[:, a])) == 2]
    if not fitted:
        return math.nan
    probe = MultiOutputClassifier(LogisticRegression(max_iter=1000))
    probe.fit(features_train, y_train[:, fitted])
    scores = np.stack([p[:, 1] for p in probe.predict_proba(features_test)], axis=1)
    return mean_average_precision(y_test[:, fitted], scores)


def coherence(pred_labels: Tensor, labels: Tensor) -> float:
    """Fraction of generated samples whose predicted label is the true one.

    Parameters
    ----------
    pred_labels, labels : Tensor
        ``(N,)`` integer labels.
    """
    return (pred_labels == labels).double().mean().item()


def _logit_accuracy(logits: Tensor, labels: Tensor) -> float:
    return coherence(logits.argmax(-1), labels)


def _logit_average_precision(logits: Tensor, labels: Tensor) -> float:
    return mean_average_precision(labels.cpu().numpy(), logits.cpu().numpy())


def _binary_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())


@dataclass(frozen=True)
class LabelKind:
    """How one kind of label is probed, learned by the classifiers and scored.

    Attributes
    ----------
    name : str
        ``"single-label"`` or ``"multi-label"``.
    score_name : str
        What the probe, the coherence and the classifiers' score are: ``"accuracy"`` or
        ``"mean average precision"``.
    probe : callable
        ``(features_train, y_train, features_test, y_test) → score`` of the linear probe.
    loss : callable
        ``(logits, labels) → loss`` that trains the coherence classifiers.
    score : callable
        ``(logits, labels) → score`` of a classifier's logits: coherence and classifier
        accuracy.
    """

    name: str
    score_name: str
    probe: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]
    loss: Callable[[Tensor, Tensor], Tensor]
    score: Callable[[Tensor, Tensor], float]


#: Label tensor dims → its kind: ``(N,)`` class indices, ``(N, A)`` binary attributes.
LABEL_KINDS = {
    1: LabelKind(
        "single-label",
        "accuracy",
        linear_probe_accuracy,
        nn.functional.cross_entropy,
        _logit_accuracy,
    ),
    2: LabelKind(
        "multi-label",
        "mean average precision",
        linear_probe_average_precision,
        _binary_cross_entropy,
        _logit_average_precision,
    ),
}


def label_kind(labels: Tensor) -> LabelKind:
    """The :class:`LabelKind` of ``labels``, ``(N,)`` or ``(N, A)``.

    Raises
    ------
    ValueError
        For labels of any other number of dims.
    """
    if labels.ndim not in LABEL_KINDS:
        raise ValueError(f"labels must be (N,) or (N, A), got shape {tuple(labels.shape)}")
    return LABEL_KINDS[labels.ndim]


@torch.no_grad()
def classifier_accuracies(
    classifiers: Sequence[nn.Module], xs: Sequence[Tensor], labels: Tensor, batch_size: int
) -> list[float]:
    """Accuracy of each modality's classifier on real data: the ceiling of its coherence.

    Scored like coherence (:attr:`LabelKind.score`): for multi-label data, the mean average
    precision over attributes instead of the accuracy.

    Parameters
    ----------
    classifiers : sequence of torch.nn.Module
        One per modality, mapping a batch to class logits.
    xs : sequence of Tensor
        ``(N, *spec.shape)`` per modality.
    labels : Tensor
        ``(N,)`` integer labels or ``(N, A)`` binary attributes.
    """
    score = label_kind(labels).score
    return [
        score(torch.cat([classifier(chunk) for chunk in x.split(batch_size)]), labels)
        for classifier, x in zip(classifiers, xs, strict=True)
    ]


@torch.no_grad()
def importance_log_likelihood(
    model: MultimodalVAE, xs: Sequence[Tensor], mask: Tensor | None, k: int
) -> Tensor:
    """Importance-sampled estimate of ``log p(X)`` with proposal ``q(z | X_S)``.

    ``log p(X) ≈ logsumexp_k [log p(X | z_k) + log p(z_k) − log q(z_k | X_S)] − log K``
    with ``z_1..z_K ~ q(z | X_S)`` (Burda et al., 2016): a lower bound in expectation that
    tightens as ``K`` grows, exact for every ``K`` when ``q`` is the true posterior.

    Parameters
    ----------
    model : MultimodalVAE
    xs : sequence of Tensor
        ``(B, *spec.shape)`` per modality; all of them are scored.
    mask : Tensor, optional
        ``(B, M)`` bool: the modalities ``S`` the proposal conditions on; ``None``: all.
    k : int
        Number ``K`` of importance samples.

    Returns
    -------
    Tensor
        ``(B,)`` estimates of ``log p(X)``.
    """
    proposal = model.encode(xs, mask)
    z = proposal.sample((k,))  # (K, B, d)
    log_likelihood = sum(
        likelihood.log_prob(x) for likelihood, x in zip(model.decode(z), xs, strict=True)
    )
    log_weights = log_likelihood + model.prior().log_prob(z) - proposal.log_prob(z)
    return torch.logsumexp(log_weights, 0) - math.log(k)


#: Batch of the coherence classifiers' Adam steps unless ``eval.classifier_batch_size`` says.
CLASSIFIER_BATCH_SIZE = 128


class ModalityClassifier(nn.Module):
    """Predicts the label from one modality: that modality's encoder with a linear head.

    Parameters
    ----------
    spec : ModalitySpec
    num_classes : int
        Number of outputs: class logits, or one logit per attribute for multi-label data.
    width : int
        Size of the features the encoder's mean output provides to the head.
    """

    def __init__(self, spec: ModalitySpec, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.features = make_encoder(spec, width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of a batch ``(B, *spec.shape)``."""
        return self.head(torch.relu(self.features(x)[0]))


def train_classifiers(
    dataset: MultimodalDataset,
    *,
    epochs: int,
    batch_size: int = CLASSIFIER_BATCH_SIZE,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.ModuleList:
    """Train one :class:`ModalityClassifier` per modality of ``dataset`` with Adam.

    The loss is that of the dataset's :class:`LabelKind`: cross-entropy for class labels,
    binary cross-entropy on the logits for attribute vectors.

    Returns
    -------
    torch.nn.ModuleList
        The classifiers in evaluation mode, in the order of ``dataset.specs``.
    """
    loss_fn = label_kind(dataset.labels).loss
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifiers = nn.ModuleList(
            ModalityClassifier(spec, dataset.num_classes) for spec in dataset.specs
        ).to(device)
    optimiser = torch.optim.Adam(classifiers.parameters(), lr=lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    classifiers.train()
    for _ in tqdm(range(epochs), desc="classifiers", unit="epoch", leave=False):
        for xs, labels in loader:
            labels = labels.to(device)
            loss = sum(
                loss_fn(classifier(x.to(device)), labels)
                for classifier, x in zip(classifiers, xs, strict=True)
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return classifiers.eval()


def save_classifiers(classifiers: nn.ModuleList, dataset: MultimodalDataset, path: Path) -> None:
    """Save ``classifiers`` with the modality names and class count they were trained for."""
    names = [spec.name for spec in dataset.specs]
    state = {"modalities": names, "num_classes": dataset.num_classes}
    torch.save({**state, "state_dict": classifiers.state_dict()}, path)


def load_classifiers(
    path: Path, dataset: MultimodalDataset, device: str | torch.device = "cpu"
) -> nn.ModuleList:
    """The classifiers saved at ``path`` for ``dataset``'s modalities, in evaluation mode.

    Raises
    ------
    ValueError
        When the file is damaged or was made for other modalities.
    """
    names = [spec.name for spec in dataset.specs]
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read the classifiers in {path}: {reason}") from error
    if saved.get("modalities") != names or saved.get("num_classes") != dataset.num_classes:
        raise ValueError(
            f"the classifiers in {path} were trained for modalities {saved.get('modalities')}, "
            f"not {names}; delete the file to retrain them"
        )
    classifiers = nn.ModuleList(
        ModalityClassifier(spec, dataset.num_classes) for spec in dataset.specs
    ).to(device)
    classifiers.load_state_dict(saved["state_dict"])
    return classifiers.eval()


def load_or_train_classifiers(
    path: Path,
    dataset: MultimodalDataset,
    *,
    epochs: int,
    batch_size: int = CLASSIFIER_BATCH_SIZE,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.ModuleList:
    """The classifiers saved at ``path``, or new ones trained on ``dataset`` and saved there."""
    if path.is_file():
        return load_classifiers(path, dataset, device)
    classifiers = train_classifiers(
        dataset, epochs=epochs, batch_size=batch_size, seed=seed, device=device
    )
    save_classifiers(classifiers, dataset, path)
    return classifiers


def subsets_by_size(num_modalities: int) -> dict[int, list[tuple[int, ...]]]:
    """Every non-empty subset of ``range(num_modalities)``, grouped by size."""
    return {
        k: list(itertools.combinations(range(num_modalities), k))
        for k in range(1, num_modalities + 1)
    }


@dataclass(frozen=True)
class EvalSplit:
    """Batched evaluation points: one ``(N, *spec.shape)`` tensor per modality and labels."""

    xs: list[Tensor]
    labels: Tensor

    @classmethod
    def sample(
        cls, dataset: MultimodalDataset, n: int, seed: int, device: torch.device
    ) -> EvalSplit:
        """``min(n, len(dataset))`` points of ``dataset`` chosen at random with ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(dataset), generator=generator)[:n].tolist()
        xs, labels = default_collate([dataset[i] for i in indices])
        return cls([x.to(device) for x in xs], labels.to(device))

    def head(self, n: int) -> EvalSplit:
        """The first ``n`` points (a random subset too, as :meth:`sample` shuffles)."""
        return EvalSplit([x[:n] for x in self.xs], self.labels[:n])

    def batches(self, batch_size: int) -> Iterator[list[Tensor]]:
        """The modalities in consecutive batches of ``batch_size`` points."""
        for start in range(0, len(self.labels), batch_size):
            yield [x[start : start + batch_size] for x in self.xs]


def _subset_mask(subset: tuple[int, ...], n: int, num_modalities: int, device) -> Tensor:
    mask = torch.zeros(n, num_modalities, dtype=torch.bool, device=device)
    mask[:, list(subset)] = True
    return mask


def _map_batches(
    split: EvalSplit,
    subset: tuple[int, ...],
    batch_size: int,
    fn: Callable[[list[Tensor], Tensor], Tensor],
) -> Tensor:
    """``fn(batch, mask)`` over ``split`` in batches, ``mask`` observing ``subset``."""
    device = split.labels.device
    return torch.cat(
        [
            fn(batch, _subset_mask(subset, len(batch[0]), len(batch), device))
            for batch in split.batches(batch_size)
        ]
    )


def _all_experts(model: MultimodalVAE, split: EvalSplit, batch_size: int) -> Independent:
    """The unimodal posteriors of every point, batch ``(N, M)``: encoded once for all subsets."""
    experts = [model.experts(batch).base_dist for batch in split.batches(batch_size)]
    loc = torch.cat([e.loc for e in experts])
    scale = torch.cat([e.scale for e in experts])
    return Independent(Normal(loc, scale), 1)


def _probe(
    model: MultimodalVAE,
    subset: tuple[int, ...],
    train: tuple[Independent, Tensor],
    test: tuple[Independent, Tensor],
) -> float:
    """Linear-probe score from ``subset``; ``train``, ``test``: experts and labels."""

    def posterior_means(experts: Independent) -> np.ndarray:
        mask = _subset_mask(subset, *experts.batch_shape, experts.mean.device)
        return model.aggregate(experts, mask).mean.cpu().numpy()

    return label_kind(train[1]).probe(
        posterior_means(train[0]),
        train[1].cpu().numpy(),
        posterior_means(test[0]),
        test[1].cpu().numpy(),
    )


def _coherence(
    model: MultimodalVAE,
    subset: tuple[int, ...],
    test: tuple[Independent, Tensor],
    classifiers: Sequence[nn.Module],
    batch_size: int,
) -> dict[int, float]:
    """Coherence of each modality outside ``subset`` generated from it: ``{target: score}``."""
    experts, labels = test
    mask = _subset_mask(subset, *experts.batch_shape, experts.mean.device)
    z = model.aggregate(experts, mask).sample()
    score = label_kind(labels).score
    targets = [t for t in range(model.num_modalities) if t not in subset]
    return {
        t: score(
            torch.cat(
                [classifiers[t](model.decode(chunk, [t])[0].mean) for chunk in z.split(batch_size)]
            ),
            labels,
        )
        for t in targets
    }


def direction_name(specs: Sequence[ModalitySpec], subset: Sequence[int], target: int) -> str:
    """``"a,b->c"``: the names of the inputs ``subset`` and of the generated ``target``."""
    inputs = ",".join(specs[m].name for m in subset)
    return f"{inputs}{DIRECTION_ARROW}{specs[target].name}"


def _log_likelihood(
    model: MultimodalVAE, subset: tuple[int, ...], test: EvalSplit, k: int
) -> float:
    """Mean importance-sampled ``log p(X)`` with proposal ``q(z | X_subset)``."""
    # The K draws of every point are decoded at once.
    points_per_batch = max(1, DECODED_PER_BATCH // k)
    estimates = _map_batches(
        test, subset, points_per_batch, lambda b, m: importance_log_likelihood(model, b, m, k)
    )
    return estimates.mean().item()


@torch.no_grad()
def evaluation_table(
    model: MultimodalVAE,
    train_set: MultimodalDataset,
    test_set: MultimodalDataset,
    classifiers: Sequence[nn.Module],
    *,
    num_importance_samples: int = 100,
    max_eval_samples: int = 1000,
    max_log_likelihood_samples: int = 100,
    batch_size: int = 256,
    seed: int = 0,
) -> Table:
    """The three metrics for every number of input modalities.

    Parameters
    ----------
    model : MultimodalVAE
    train_set, test_set : MultimodalDataset
        The probe is fitted on ``train_set``; every metric is measured on ``test_set``.
    classifiers : sequence of torch.nn.Module
        One per modality, mapping a batch to logits (see :class:`ModalityClassifier`).
    num_importance_samples : int
        ``K`` of :func:`importance_log_likelihood`.
    max_eval_samples : int
        At most this many points of each set are used (a seeded random subset).
    max_log_likelihood_samples : int
        At most this many of them for the log-likelihood, which decodes ``K`` draws per point
        and subset.
    batch_size : int
        Points encoded at once.
    seed : int
        Seed of the point selection and of the latent draws (the global RNG is restored).

    Returns
    -------
    dict
        ``{metric: {k: value}}``, metrics in the order of :data:`METRICS`, ``k`` the number
        of input modalities: ``1..M`` (coherence: ``1..M-1``, as some target must be missing).
        The probe and coherence are scored as the labels' :class:`LabelKind` says:
        accuracies, or for multi-label data mean average precisions. Then
        ``"coherence_by_direction"``: ``{"a,b->c": value}``, the coherence of every target
        ``c`` generated from every subset of inputs ``{a, b}`` without it (MoPoE's tables'
        M→S, MS→T, ...), of which ``coherence[k]`` is the mean over the subsets of size
        ``k`` of the mean over their targets.
    """
    device = next(model.parameters()).device
    model.eval()
    train = EvalSplit.sample(train_set, max_eval_samples, seed, device)
    test = EvalSplit.sample(test_set, max_eval_samples, seed + 1, device)
    train_experts = (_all_experts(model, train, batch_size), train.labels)
    test_experts = (_all_experts(model, test, batch_size), test.labels)
    log_likelihood_points = test.head(max_log_likelihood_samples)
    directions: dict[int | str, float] = {}

    def coherence_of(subset: tuple[int, ...]) -> float:
        scores = _coherence(model, subset, test_experts, classifiers, batch_size)
        for target, value in scores.items():
            directions[direction_name(model.specs, subset, target)] = value
        return float(np.mean(list(scores.values())))

    metrics: dict[str, Callable[[tuple[int, ...]], float]] = {
        "linear_probe": lambda s: _probe(model, s, train_experts, test_experts),
        "coherence": coherence_of,
        "log_likelihood": lambda s: _log_likelihood(
            model, s, log_likelihood_points, num_importance_samples
        ),
    }
    num_modalities = model.num_modalities
    table: Table = {metric: {} for metric in METRICS}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for k, subsets in tqdm(
            subsets_by_size(num_modalities).items(), desc="evaluation", leave=False
        ):
            for metric, per_subset in metrics.items():
                if metric == "coherence" and k == num_modalities:
                    continue
                table[metric][k] = float(np.mean([per_subset(s) for s in subsets]))
    table["coherence_by_direction"] = directions
    return table


def format_table(table: Table) -> str:
    """The table as aligned text: one row per metric, one column per number of inputs.

    Then the coherence of every direction (``"coherence a->b 0.81  ..."``, four to a line)
    when the table has at most :data:`MAX_PRINTED_DIRECTIONS` of them.
    """
    rows = {metric: table[metric] for metric in METRICS if metric in table}
    sizes = sorted({k for row in rows.values() for k in row})
    header = f"{'metric':<16}" + "".join(f"{f'{k} input' + 's' * (k > 1):>12}" for k in sizes)
    lines = [header]
    for metric, row in rows.items():
        cells = "".join(f"{row[k]:>12.4g}" if k in row else f"{'-':>12}" for k in sizes)
        lines.append(f"{metric:<16}{cells}")
    directions = list(table.get("coherence_by_direction", {}).items())
    if 0 < len(directions) <= MAX_PRINTED_DIRECTIONS:
        for start in range(0, len(directions), 4):
            cells = "  ".join(
                f"{name} {value:.3f}" for name, value in directions[start : start + 4]
            )
            lines.append(f"{'coherence' if start == 0 else '':<16}{cells}")
    return "\n".join(lines)


# --- Evaluating a run folder: what train.py does after training, and the command line ---

#: Evaluation sizes of a quick run (``--quick``): seconds, and numbers that only say the
#: pipeline works.
QUICK_EVAL = {
    "num_importance_samples": 2,
    "max_eval_samples": 100,
    "max_log_likelihood_samples": 10,
    "max_test_loss_samples": 64,
    "classifier_epochs": 1,
    "max_classifier_samples": 500,
}
QUICK_NOTE = (
    "quick run: a few steps and a reduced evaluation, to check that everything works; "
    "its numbers are not the benchmark's (drop --quick and use a configs/*.json for those)"
)
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
CLASSIFIERS_FILE = "classifiers.pt"
RESULTS_FILE = "metrics.json"
#: The figures of a run folder, drawn by every evaluation.
FIGURES = ("reconstructions.png", "conditional_generations.png", "metrics.png")
#: Drawn besides :data:`FIGURES` for datasets with a text modality.
TEXT_FIGURE = "text_generations.png"
FIGURE_SAMPLES = 8


class RandomSubset(MultimodalDataset):
    """``n`` points of ``dataset`` chosen at random with ``seed`` (all of them if fewer).

    Parameters
    ----------
    dataset : MultimodalDataset
    n : int
    seed : int
    """

    def __init__(self, dataset: MultimodalDataset, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.dataset = dataset
        self.indices = torch.randperm(len(dataset), generator=generator)[:n]
        self.specs = dataset.specs
        self.num_classes = dataset.num_classes
        self.labels = dataset.labels[self.indices]

    def __getitem__(self, index: int) -> tuple[tuple[Tensor, ...], int | Tensor]:
        return self.dataset[int(self.indices[index])]


def classifier_training_set(
    train_set: MultimodalDataset, settings: dict, seed: int
) -> MultimodalDataset:
    """What new coherence classifiers train on: ``train_set``, or a :class:`RandomSubset`
    of ``settings["max_classifier_samples"]`` points of it."""
    limit = settings.get("max_classifier_samples")
    return train_set if limit is None else RandomSubset(train_set, limit, seed)


def load_datasets(
    config: dict, data_root: str | None = None
) -> tuple[MultimodalDataset, MultimodalDataset]:
    """The train and test splits a run's ``config`` names, from ``data_root`` if given."""
    root = data_root if data_root is not None else config["data_root"]
    options = config.get("dataset_options") or {}
    return tuple(
        get_dataset(config["dataset"], split, root, **options) for split in ("train", "test")
    )


def write_results(run_dir: Path, results: dict) -> None:
    """``metrics.json`` (everything) and ``metrics.csv`` (tidy: one value per row).

    ``results`` holds ``history`` (per-epoch losses), ``eval`` (the table) and
    ``classifier_accuracy``, besides anything else ``metrics.json`` keeps.
    """
    (run_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["section", "epoch", "metric", "num_inputs", "value"])
        for record in results["history"]:
            for metric in ("train_loss", "test_loss"):
                writer.writerow(["history", record["epoch"], metric, "", record[metric]])
        for metric, row in results["eval"].items():
            for k, value in row.items():
                writer.writerow(["eval", "", metric, k, value])
        for name, value in results["classifier_accuracy"].items():
            writer.writerow(["classifier_accuracy", "", name, "", value])


def evaluate_model(
    model: MultimodalVAE,
    config: dict,
    run_dir: Path,
    datasets: tuple[MultimodalDataset, MultimodalDataset],
    *,
    training: dict,
    classifiers_path: Path | None = None,
    log: TensorBoardLog | None = None,
    checkpoint: str = CHECKPOINT_FILE,
) -> tuple[Table, dict[str, float]]:
    """Evaluate ``model`` as ``config["eval"]`` says and write the results into ``run_dir``.

    Computes :func:`evaluation_table` and the classifiers' accuracy on real test data,
    draws :data:`FIGURES`, updates ``metrics.json`` (keeping what it holds besides) and
    ``metrics.csv``, and logs the table and the figures to ``log`` at the checkpoint's
    step.

    Parameters
    ----------
    model : MultimodalVAE
    config : dict
        The run's configuration; ``eval`` holds the evaluation sizes.
    run_dir : Path
    datasets : (MultimodalDataset, MultimodalDataset)
        The train and test splits.
    training : dict
        ``step``, ``step_losses`` and ``history`` of the training (a checkpoint's state).
    classifiers_path : Path, optional
        The coherence classifiers: read if the file exists, else trained (on at most
        ``eval.max_classifier_samples`` points) and written; default
        ``run_dir / classifiers.pt``.
    log : TensorBoardLog, optional
    checkpoint : str
        The checkpoint file the model comes from, recorded with the results.

    Returns
    -------
    table : dict
        See :func:`evaluation_table`.
    classifier_accuracy : dict
        Modality name → its classifier's score on real test data.
    """
    # imported here: figures imports this module
    from data.mnist_svhn_text import ALPHABET
    from figures import (
        save_conditional_generations,
        save_metric_curves,
        save_reconstructions,
        save_text_generations,
    )

    settings = config["eval"]
    seed, batch_size = config["seed"], config["batch_size"]
    device = next(model.parameters()).device
    train_set, test_set = datasets
    classifiers = load_or_train_classifiers(
        classifiers_path or run_dir / CLASSIFIERS_FILE,
        classifier_training_set(train_set, settings, seed),
        epochs=settings["classifier_epochs"],
        # run folders written before the key existed trained with the default
        batch_size=settings.get("classifier_batch_size", CLASSIFIER_BATCH_SIZE),
        seed=seed,
        device=device,
    )
    table = evaluation_table(
        model,
        train_set,
        test_set,
        classifiers,
        num_importance_samples=settings["num_importance_samples"],
        max_eval_samples=settings["max_eval_samples"],
        max_log_likelihood_samples=settings["max_log_likelihood_samples"],
        batch_size=batch_size,
        seed=seed,
    )
    real = EvalSplit.sample(test_set, settings["max_eval_samples"], seed, device)
    scores = classifier_accuracies(classifiers, real.xs, real.labels, batch_size)
    accuracy = dict(zip((spec.name for spec in test_set.specs), scores, strict=True))
    examples = EvalSplit.sample(test_set, FIGURE_SAMPLES, seed, device).xs
    figures = [run_dir / name for name in FIGURES]
    save_reconstructions(model, examples, figures[0])
    save_conditional_generations(model, examples, figures[1])
    score_name = label_kind(test_set.labels).score_name
    save_metric_curves(training["step_losses"], training["history"], table, figures[2], score_name)
    if any(spec.kind == "text" for spec in model.specs):
        figures.append(run_dir / TEXT_FIGURE)
        save_text_generations(model, examples, figures[-1], ALPHABET)
    path = run_dir / RESULTS_FILE
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.update(
        step=training["step"],
        step_losses=training["step_losses"],
        history=training["history"],
        eval=table,
        classifier_accuracy=accuracy,
        eval_settings={**settings, "checkpoint": checkpoint, "quick": config.get("quick", False)},
    )
    write_results(run_dir, results)
    if log is not None:
        log.table(table, training["step"])
        log.scalars("eval/classifier_accuracy", accuracy, training["step"])
        log.images(figures, training["step"])
    return table, accuracy


def report(config: dict, run_dir: Path, step: int, table: Table, accuracy: dict) -> str:
    """What a run prints after its evaluation: the table and the classifiers' ceiling."""
    lines = [
        f"{config['aggregation']} on {config['dataset']}, {step} steps, run folder {run_dir}",
        format_table(table),
        "coherence classifiers' accuracy on real test data: "
        + ", ".join(f"{name} {value:.3f}" for name, value in accuracy.items()),
    ]
    if config.get("quick"):
        lines.append(QUICK_NOTE)
    return "\n".join(lines)


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = CHECKPOINT_FILE,
    eval_settings: dict | None = None,
    quick: bool = False,
    classifiers_path: Path | None = None,
    device: str = "cpu",
    data_root: str | None = None,
) -> tuple[Table, dict[str, float]]:
    """Evaluate a trained run folder again and write the results into it.

    The model comes from :meth:`MultimodalVAE.from_run`, the data and the evaluation sizes
    from the configuration the checkpoint was trained with: :data:`QUICK_EVAL` when
    ``quick``, then ``eval_settings``, override the sizes. Writes what
    :func:`evaluate_model` writes (never ``config.json``) and logs to the run's
    TensorBoard events at the checkpoint's step.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` holds no ``config.json`` or no ``checkpoint``.
    ValueError
        If the checkpoint cannot be read.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    model = MultimodalVAE.from_run(run_dir, device=device, checkpoint=checkpoint)
    saved = torch.load(run_dir / checkpoint, map_location="cpu", mmap=True, weights_only=True)
    config = dict(saved["config"])
    config["eval"] = {**config["eval"], **(QUICK_EVAL if quick else {}), **(eval_settings or {})}
    config["quick"] = quick or config.get("quick", False)
    state = saved["state"]
    training = {"step": state["step"], "step_losses": state["step_losses"]}
    training["history"] = state["history"]
    datasets = load_datasets(config, data_root)
    log = TensorBoardLog(run_dir)
    try:
        table, accuracy = evaluate_model(
            model,
            config,
            run_dir,
            datasets,
            training=training,
            classifiers_path=classifiers_path,
            log=log,
            checkpoint=checkpoint,
        )
    finally:
        log.close()
    print(report(config, run_dir, state["step"], table, accuracy))
    return table, accuracy


def available_cpus() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def use_threads(threads: int) -> None:
    """Run torch's intra-op pool and the BLAS and OpenMP pools under NumPy, SciPy and
    scikit-learn (the linear probe) on ``threads`` threads; 0: :func:`available_cpus`.

    One thread is the default because a pool's threads wait for each other at every
    operation: while other processes hold the cores, ten fits of the linear probe took
    16.8 s with OpenBLAS's 2 threads and 0.28 s with one.
    """
    from threadpoolctl import threadpool_limits

    count = threads or available_cpus()
    torch.set_num_threads(count)
    threadpool_limits(limits=count)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


#: Evaluation-size flags: (flag, config key, what it sets).
_SIZE_FLAGS = (
    ("--num-importance-samples", "num_importance_samples", "importance samples K per point"),
    ("--max-eval-samples", "max_eval_samples", "points of each split for probe and coherence"),
    ("--max-log-likelihood-samples", "max_log_likelihood_samples", "test points of log p(X)"),
    ("--classifier-epochs", "classifier_epochs", "epochs of new coherence classifiers"),
    ("--classifier-batch-size", "classifier_batch_size", "batch of new coherence classifiers"),
    ("--max-classifier-samples", "max_classifier_samples", "training points of new classifiers"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ValueError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``evaluate.py``."""
    parser = _Parser(
        prog="evaluate.py",
        description="Evaluate a trained run folder again: the latent linear probe, cross-modal "
        "coherence and test log-likelihood by number of input modalities, the classifiers' "
        "accuracy and the figures. Writes metrics.json, metrics.csv and the figures into the "
        "run folder and logs them to its TensorBoard events; config.json is left as it is. "
        "Evaluation sizes default to the run's config.json ('eval').",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a folder train.py wrote")
    parser.add_argument(
        "--checkpoint",
        default=CHECKPOINT_FILE,
        help=f"checkpoint file in RUN_DIR (default {CHECKPOINT_FILE}, the last; best.pt: "
        "the best by test loss, written by train.py --keep-best)",
    )
    for flag, key, what in _SIZE_FLAGS:
        parser.add_argument(
            flag, type=_positive_int, dest=key, help=f"{what} (default: the run's eval.{key})"
        )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced evaluation sizes, seconds on a CPU: "
        + ", ".join(f"{key} {value}" for key, value in QUICK_EVAL.items())
        + "; the other flags override them",
    )
    parser.add_argument(
        "--classifiers",
        type=Path,
        help=f"coherence classifiers: read if the file exists (the classifier sizes then "
        f"do not apply), else trained and written (default RUN_DIR/{CLASSIFIERS_FILE})",
    )
    parser.add_argument("--data-root", help="data directory (default: the run's data_root)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of torch and of the BLAS under the probe (default 1; 0: every CPU)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv``; 0 on success, 2 with a one-line message on bad input."""
    try:
        args = build_parser().parse_args(argv)
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda is not available")
        if args.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {args.device!r}")
        if args.threads < 0:
            raise ValueError(f"threads must be non-negative, got {args.threads}")
        use_threads(args.threads)
        sizes = {key: getattr(args, key) for _, key, _ in _SIZE_FLAGS}
        evaluate_run(
            args.run_dir,
            checkpoint=args.checkpoint,
            eval_settings={key: value for key, value in sizes.items() if value is not None},
            quick=args.quick,
            classifiers_path=args.classifiers,
            device=args.device,
            data_root=args.data_root,
        )
    except (ValueError, FileNotFoundError) as error:
        message = " ".join(str(error).split())  # one line, whatever the source
        print(f"evaluate.py: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
