"""TensorBoard logging of a run: ``tensorboard --logdir runs`` shows every run folder.

Event files go to ``<run folder>/tensorboard``: per training step the loss and its terms
(``train/loss``, ``train/kl``, ``train/rec_<modality>``), per epoch the train and test
loss (``epoch/train_loss``, ``epoch/test_loss``), after evaluation every metric by number
of inputs (``eval/<metric>/<k>``) and the classifiers' accuracy, and the run's figures as
images (``figures/<name>``). Without the ``tensorboard`` package the run goes on and says
once that it is not logging.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

#: Sub-folder of the run folder that holds the event files.
TENSORBOARD_DIR = "tensorboard"


class TensorBoardLog:
    """Scalars and images of one run, or nothing when TensorBoard is not installed.

    Parameters
    ----------
    run_dir : path
        The run folder; events go to ``run_dir / TENSORBOARD_DIR``.
    purge_step : int, optional
        When resuming: the checkpoint's step. Events logged at or after it by the
        interrupted run are dropped, so the curves continue without a fold.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print(
                "tensorboard is not installed: not logging to TensorBoard "
                "(pip install tensorboard)",
                file=sys.stderr,
            )
            self._writer = None
            return
        self._writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge_step)

    @property
    def enabled(self) -> bool:
        """Whether events are written."""
        return self._writer is not None

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """``prefix/<name>`` for every value, at ``step``."""
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def table(self, table: Mapping[str, Mapping[object, float]], step: int) -> None:
        """An evaluation table ``{metric: {key: value}}`` as ``eval/<metric>/<key>``."""
        for metric, row in table.items():
            self.scalars(f"eval/{metric}", {str(key): value for key, value in row.items()}, step)

    def images(self, paths: Iterable[Path], step: int) -> None:
        """Each PNG as ``figures/<file stem>``, at ``step``."""
        if self._writer is None:
            return
        from PIL import Image

        for path in paths:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self._writer.add_image(f"figures/{path.stem}", pixels, step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
