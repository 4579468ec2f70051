"""The README's usage block runs as written and computes what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python block"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["wb"].batch_shape == (256,)
    assert namespace["mwb"].mixture_distribution.probs.shape == (256, 7)
    assert namespace["z"].shape == (1, 256, 7, 16)
    assert bool(namespace["info"].converged.all())
    assert torch.isfinite(namespace["poe"].mean).all()


def test_citation_version_is_the_package_version() -> None:
    import barycentric

    citation = (README.parent / "CITATION.cff").read_text()
    assert f"version: {barycentric.__version__}\n" in citation


def test_changelog_latest_release_is_the_package_version() -> None:
    import barycentric

    changelog = (README.parent / "docs" / "changelog.rst").read_text()
    releases = re.findall(r"^(\S[^\n]*)\n-+\n", changelog, flags=re.MULTILINE)
    assert releases, "docs/changelog.rst has no release heading"
    assert releases[0] == barycentric.__version__
