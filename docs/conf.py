"""Sphinx configuration for the barycentric documentation.

Build with ``make docs`` (``sphinx -W --keep-going -b html docs docs/_build/html``). The
gallery scripts in ``docs/gallery`` run during the build, on CPU, in a few seconds each.

Intersphinx works offline: the PyTorch, NumPy and POT inventories are read from
``docs/_intersphinx/*.inv``, which ``docs/_intersphinx/make_inventories.py`` writes from
the installed packages, so no build downloads anything and ``-W`` builds stay green
without a network. The links they produce point at the projects' live sites.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The source tree comes first, so the docs describe the code next to them even when an
# older barycentric is installed in the environment.
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(DOCS / "_ext"))

import torch  # noqa: E402

from barycentric._version import __version__  # noqa: E402  (the one place it lives)

# Gallery scripts are executed in this process: keep them headless, and on one thread.
# Their problems are tiny, and on small batches torch's multi-threaded CPU LAPACK calls
# (batched Cholesky above all, which MultivariateNormal runs) cost milliseconds of thread
# start-up each, several times the work itself.
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)

project = "barycentric"
author = "The barycentric developers"
copyright = "2025, The barycentric developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "benchmark_tables",  # docs/_ext: renders benchmarks/results/*.md
]

exclude_patterns = ["_build", "_ext", "_intersphinx", "gallery", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
root_doc = "index"
language = "en"

# -- autodoc / napoleon -----------------------------------------------------------------
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = True

# -- intersphinx (offline, see the module docstring) ------------------------------------
intersphinx_mapping = {
    "torch": ("https://docs.pytorch.org/docs/stable/", "_intersphinx/torch.inv"),
    "numpy": ("https://numpy.org/doc/stable/", "_intersphinx/numpy.inv"),
    "ot": ("https://pythonot.github.io/", "_intersphinx/pot.inv"),
}

# -- doctest ----------------------------------------------------------------------------
# ``sphinx -b doctest docs docs/_build/doctest -D plot_gallery=0`` runs the quickstart.
doctest_global_setup = """
import torch
torch.manual_seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
"""

# -- sphinx-gallery ---------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "reference_url": {"barycentric": None},
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "min_reported_time": 1,
}

# -- HTML -------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"barycentric {release}"
html_static_path: list[str] = []
pygments_style = "sphinx"
pygments_dark_style = "monokai"
