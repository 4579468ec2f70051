"""PNG figures of a run: reconstructions, conditional generations and metric curves.

Every modality but text is drawn as a picture: images as they are, attributes ``(A,)`` as
a one-pixel-high strip. Text is printed as strings by :func:`save_text_generations` (and
drawn as its one-hot/probability matrix ``(L, V)`` only when every modality is text).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from data import ModalitySpec
from evaluate import METRICS, Table, subsets_by_size
from matplotlib.figure import Figure  # no pyplot: no global state, no display backend
from model import MultimodalVAE
from torch import Tensor

_GAP = 2  # pixels between samples
_ROW_HEIGHT = 1.0  # inches per row of pictures, unless the strip is too wide
_MAX_WIDTH = 14.0  # inches of the widest strip


def _picture(x: Tensor, spec: ModalitySpec) -> np.ndarray:
    """One sample as an ``(H, W, 3)`` RGB array in ``[0, 1]``."""
    array = x.detach().float().cpu().clamp(0, 1)
    array = array.permute(1, 2, 0) if spec.kind == "image" else array.reshape(-1, x.shape[-1], 1)
    return array.expand(*array.shape[:2], 3).numpy()


def _hstack(pictures: Sequence[np.ndarray], gap: int = _GAP) -> np.ndarray:
    """Pictures side by side, bottom-padded to the tallest, separated by white gaps."""
    height = max(p.shape[0] for p in pictures)
    padded = []
    for picture in pictures:
        padding = np.ones((height - picture.shape[0], picture.shape[1], 3))
        padded += [np.concatenate([picture, padding]), np.ones((height, gap, 3))]
    return np.concatenate(padded[:-1], axis=1)


def pictured(specs: Sequence[ModalitySpec]) -> list[int]:
    """The modalities drawn as pictures: all but text, or all if every one is text."""
    drawn = [m for m, spec in enumerate(specs) if spec.kind != "text"]
    return drawn or list(range(len(specs)))


def metric_title(metric: str, score_name: str) -> str:
    """The title of ``metric``'s plot: its description, with ``score_name`` (``"accuracy"``,
    ``"mean average precision"``) for the probe and coherence."""
    description = METRICS[metric]
    return description if metric == "log_likelihood" else f"{description} ({score_name})"


def _samples(x: Tensor, spec: ModalitySpec) -> np.ndarray:
    """A batch ``(n, *spec.shape)`` as one strip of ``n`` pictures."""
    return _hstack([_picture(sample, spec) for sample in x])


def _save_rows(rows: Sequence[tuple[str, np.ndarray]], path: Path, title: str) -> None:
    """One labelled strip per row, stacked vertically, saved as a PNG."""
    height, width = rows[0][1].shape[:2]
    strip_inches = min(_MAX_WIDTH, _ROW_HEIGHT * width / height)
    row_inches = strip_inches * height / width + 0.15
    figure = Figure(figsize=(strip_inches + 1.5, row_inches * len(rows) + 0.6))
    axes = figure.subplots(len(rows), 1, squeeze=False)
    for ax, (label, strip) in zip(axes[:, 0], rows, strict=True):
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


@torch.no_grad()
def save_reconstructions(model: MultimodalVAE, xs: Sequence[Tensor], path: Path) -> None:
    """Inputs and their reconstructions from all modalities, a pair of rows per modality
    :func:`pictured` (text is printed by :func:`save_text_generations`)."""
    reconstructions = model.cond_generate(xs)
    rows = []
    for m in pictured(model.specs):
        spec = model.specs[m]
        rows += [
            (f"{spec.name}", _samples(xs[m], spec)),
            (f"{spec.name} rec.", _samples(reconstructions[m], spec)),
        ]
    _save_rows(rows, path, f"{model.aggregation}: reconstructions")


@torch.no_grad()
def save_conditional_generations(model: MultimodalVAE, xs: Sequence[Tensor], path: Path) -> None:
    """Every modality :func:`pictured` generated from every subset: a row per subset,
    modalities side by side (text is printed by :func:`save_text_generations`).

    The first row shows the inputs.
    """
    n = len(xs[0])
    drawn = pictured(model.specs)

    def strip(batch: Sequence[Tensor]) -> np.ndarray:
        return _hstack([_samples(batch[m], model.specs[m]) for m in drawn], gap=4 * _GAP)

    rows = [("inputs", strip(xs))]
    for subsets in subsets_by_size(model.num_modalities).values():
        for subset in subsets:
            mask = torch.zeros(n, model.num_modalities, dtype=torch.bool, device=xs[0].device)
            mask[:, list(subset)] = True
            names = ",".join(model.specs[m].name for m in subset)
            rows.append((f"{{{names}}} →", strip(model.cond_generate(xs, mask))))
    columns = "  |  ".join(model.specs[m].name for m in drawn)
    _save_rows(rows, path, f"{model.aggregation}: conditional generation ({columns})")


def save_metric_curves(
    step_losses: Sequence[float],
    history: Sequence[dict[str, float]],
    table: Table,
    path: Path,
    score_name: str = "accuracy",
) -> None:
    """Training curves (loss per step, train/test loss per epoch) and the metrics by inputs,
    the probe and coherence titled with ``score_name`` (see :func:`metric_title`)."""
    figure = Figure(figsize=(4 * (1 + len(METRICS)), 3.2))
    axes = figure.subplots(1, 1 + len(METRICS))
    axes[0].plot(np.arange(1, len(step_losses) + 1), step_losses, lw=0.5, label="step")
    if history:
        steps = [record["step"] for record in history]
        axes[0].plot(steps, [r["train_loss"] for r in history], "o-", label="train (epoch)")
        axes[0].plot(steps, [r["test_loss"] for r in history], "s-", label="test (epoch)")
    axes[0].set(xlabel="step", ylabel="negative ELBO", title="loss")
    axes[0].legend(fontsize=8)
    for ax, metric in zip(axes[1:], METRICS, strict=True):
        row = table.get(metric, {})
        ax.plot(list(row), list(row.values()), "o-")
        ax.set_xlabel("number of input modalities")
        ax.set_title(metric_title(metric, score_name), fontsize=10)
        ax.set_xticks(list(row))
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def decode_text(x: Tensor, alphabet: str) -> list[str]:
    """The most likely character at every position: ``(B, L, V)`` one-hot or probabilities
    → ``B`` strings of ``L`` characters (MoPoE's ``tensor_to_text``)."""
    return ["".join(alphabet[i] for i in row) for row in x.argmax(-1).tolist()]


def _shown(text: str, width: int = 30) -> str:
    """A caption as shown: without MoPoE's ``*`` padding, wrapped at ``width`` characters
    (what a column of the figure holds)."""
    return textwrap.fill(text.strip("*").strip(), width) or "(empty)"


@torch.no_grad()
def save_text_generations(
    model: MultimodalVAE, xs: Sequence[Tensor], path: Path, alphabet: str
) -> None:
    """Every text modality as strings: the inputs, then generated from every subset of the
    other modalities and from all of them (a row per subset, a column per sample)."""
    text_modalities = [m for m, spec in enumerate(model.specs) if spec.kind == "text"]
    n = len(xs[0])
    rows: list[tuple[str, list[str]]] = []
    for t in text_modalities:
        rows.append((f"{model.specs[t].name} (input)", decode_text(xs[t], alphabet)))
        for subsets in subsets_by_size(model.num_modalities).values():
            for subset in subsets:
                if t in subset and len(subset) < model.num_modalities:
                    continue
                mask = torch.zeros(n, model.num_modalities, dtype=torch.bool, device=xs[0].device)
                mask[:, list(subset)] = True
                names = ",".join(model.specs[m].name for m in subset)
                generated = model.cond_generate(xs, mask)[t]
                rows.append(
                    (f"{{{names}}} → {model.specs[t].name}", decode_text(generated, alphabet))
                )
    lines = max(len(_shown(s).splitlines()) for _, texts in rows for s in texts)
    figure = Figure(figsize=(2.2 * n + 2, (0.25 + 0.16 * lines) * len(rows) + 0.6))
    axes = figure.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, texts) in zip(axes, rows, strict=True):
        ax.set_axis_off()
        ax.text(0, 0.5, label, ha="right", va="center", fontsize=8, transform=ax.transAxes)
        for i, text in enumerate(texts):
            ax.text(
                (i + 0.05) / n, 0.5, _shown(text), ha="left", va="center", fontsize=7,
                family="monospace", transform=ax.transAxes,
            )  # fmt: skip
    figure.suptitle(f"{model.aggregation}: text from every subset of inputs (one sample a column)")
    figure.subplots_adjust(left=0.12, right=0.99, top=1 - 0.5 / figure.get_figheight(), bottom=0.01)
    figure.savefig(path, dpi=100)
