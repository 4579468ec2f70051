"""Put ``examples/multimodal_vae`` on ``sys.path`` (its modules import each other
top-level), and the tiny synthetic batch that several test modules share."""

import sys
from pathlib import Path

import pytest
from torch.utils.data import default_collate

EXAMPLE_DIR = str(Path(__file__).resolve().parents[1])
if EXAMPLE_DIR not in sys.path:
    sys.path.insert(0, EXAMPLE_DIR)

from data import get_dataset  # noqa: E402  (needs the path above)


@pytest.fixture(scope="module")
def dataset(request):
    """A synthetic 3-modality set of ``BATCH`` points (the test module's constant)."""
    n = request.module.BATCH
    return get_dataset("synthetic", "train", n=n, num_modalities=3, shape=(1, 4, 4))


@pytest.fixture(scope="module")
def xs(dataset):
    """The modalities of every point of ``dataset``, one ``(BATCH, 1, 4, 4)`` tensor each."""
    modalities, _ = default_collate([dataset[i] for i in range(len(dataset))])
    return list(modalities)
