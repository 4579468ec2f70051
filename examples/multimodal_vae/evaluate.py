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

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from data import ModalitySpec, MultimodalDataset
from model import MultimodalVAE
from networks import make_encoder
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multioutput import MultiOutputClassifier
from torch import Tensor, nn
from torch.distributions import Independent, Normal
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

#: Metric name → what it measures, in the order they are reported.
METRICS = {
    "linear_probe": "latent linear-probe accuracy",
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
    probe : callable
        ``(features_train, y_train, features_test, y_test) → score`` of the linear probe.
    loss : callable
        ``(logits, labels) → loss`` that trains the coherence classifiers.
    score : callable
        ``(logits, labels) → score`` of a classifier's logits: coherence and classifier
        accuracy.
    """

    name: str
    probe: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]
    loss: Callable[[Tensor, Tensor], Tensor]
    score: Callable[[Tensor, Tensor], float]


#: Label tensor dims → its kind: ``(N,)`` class indices, ``(N, A)`` binary attributes.
LABEL_KINDS = {
    1: LabelKind(
        "single-label", linear_probe_accuracy, nn.functional.cross_entropy, _logit_accuracy
    ),
    2: LabelKind(
        "multi-label",
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
    batch_size: int = 128,
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
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.ModuleList:
    """The classifiers saved at ``path``, or new ones trained on ``dataset`` and saved there."""
    if path.is_file():
        return load_classifiers(path, dataset, device)
    classifiers = train_classifiers(dataset, epochs=epochs, seed=seed, device=device)
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
