"""What every dataset of the example returns: modality specs and a map-style dataset."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

#: Where generated or cached data goes unless a ``root`` is given (``.data/`` is git-ignored).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / ".data"

KINDS = ("image", "text", "attributes")
LIKELIHOODS = ("laplace", "gaussian", "categorical", "shifted-categorical", "bernoulli")


@dataclass(frozen=True)
class ModalitySpec:
    """Description of one modality, enough to build its encoder, decoder and likelihood.

    Attributes
    ----------
    name : str
        ``"m0"``..``"m4"``, ``"mnist"``, ``"svhn"``, ``"text"``, ``"image"``, ``"attributes"``.
    kind : str
        ``"image"``, ``"text"`` or ``"attributes"``.
    shape : tuple of int
        Shape of one sample: image ``(C, H, W)``; text ``(L, V)``, one-hot of ``L`` characters
        over a vocabulary of ``V``; attributes ``(A,)``.
    likelihood : str
        ``"laplace"``, ``"gaussian"``, ``"categorical"`` or ``"bernoulli"``.
    weight : float
        Positive factor of the modality's log-likelihood in the training objective, as
        MoPoE's ``rec_weights`` (which balance modalities of very different sizes); 1 by
        default. Evaluation's log-likelihoods are never weighted.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    likelihood: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if not self.weight > 0:
            raise ValueError(f"weight must be positive, got {self.weight!r}")
        expected_ndim = {"image": 3, "text": 2, "attributes": 1}[self.kind]
        if len(self.shape) != expected_ndim:
            raise ValueError(
                f"a {self.kind} modality has a shape of {expected_ndim} dims, got {self.shape}"
            )


class MultimodalDataset(Dataset):
    """Map-style dataset of ``((x_1, ..., x_M), label)`` pairs.

    Images are float32 in ``[0, 1]`` of shape ``(C, H, W)``; text is float32 one-hot
    ``(L, V)``; attributes are float32 in ``{0, 1}`` of shape ``(A,)``. The label is the class
    index (an ``int``), except for CelebA, whose label is the float32 attribute vector.

    Attributes
    ----------
    specs : tuple of ModalitySpec
        One per modality, in the order of the returned tuple.
    num_classes : int
        Number of classes (for CelebA: number of binary attributes).
    labels : torch.Tensor
        All labels, ``(N,)`` int64 (CelebA: ``(N, A)`` float32), for evaluation without
        iterating the dataset.
    """

    specs: tuple[ModalitySpec, ...]
    num_classes: int
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], int]:
        raise NotImplementedError


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to the ``.npz`` file ``path`` (its folder made if missing) through a
    temporary file that replaces it at once: a killed run leaves no half-written cache.

    The temporary file's name is unique to the call, so runs that make the same cache at
    the same time each write their own and the last one in wins (a shared name let one
    run move another's half-written file into place, or fail to find its own).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.tmp.npz")
    try:
        np.savez(partial, **arrays)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def to_float_tensor(array: np.ndarray) -> torch.Tensor:
    """Convert a sample to float32, mapping uint8 pixels ``0..255`` onto ``[0, 1]``."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    return tensor.float()


class ArrayDataset(MultimodalDataset):
    """A dataset held in memory as one array per modality, all indexed alike.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        One per array.
    arrays : sequence of numpy.ndarray
        ``(N, *spec.shape)`` each; uint8 images are scaled to ``[0, 1]`` on access.
    labels : numpy.ndarray
        ``(N,)`` integer class labels.
    num_classes : int
        Number of classes.
    """

    def __init__(
        self,
        specs: tuple[ModalitySpec, ...],
        arrays: tuple[np.ndarray, ...],
        labels: np.ndarray,
        num_classes: int,
    ) -> None:
        if len(specs) != len(arrays):
            raise ValueError(f"got {len(specs)} specs but {len(arrays)} arrays")
        for spec, array in zip(specs, arrays, strict=True):
            if array.shape != (len(labels), *spec.shape):
                raise ValueError(
                    f"modality {spec.name!r}: expected shape {(len(labels), *spec.shape)}, "
                    f"got {array.shape}"
                )
        self.specs = tuple(specs)
        self.arrays = tuple(arrays)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.num_classes = num_classes

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], int]:
        modalities = tuple(to_float_tensor(array[index]) for array in self.arrays)
        return modalities, int(self.labels[index])
