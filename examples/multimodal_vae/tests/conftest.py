"""Put ``examples/multimodal_vae`` on ``sys.path``: its modules import each other top-level."""

import sys
from pathlib import Path

EXAMPLE_DIR = str(Path(__file__).resolve().parents[1])
if EXAMPLE_DIR not in sys.path:
    sys.path.insert(0, EXAMPLE_DIR)
