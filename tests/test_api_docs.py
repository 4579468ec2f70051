"""The API reference's cross references resolve to objects users can reach.

Sphinx resolves a reference such as ``:func:`default_tolerance``` in the docstring of
``barycentric.functional.wasserstein_barycenter_full`` relative to the module the API
reference documents it in (``docs/api.rst``): the name must be an attribute of that module,
where a user reading the page would look for it.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest
import torch

import barycentric as bc

#: ``:role:`target``` or ``:role:`~target```, with an optional title ``text <target>``.
REFERENCE = re.compile(r":(?:func|class|data|meth|attr|mod|exc):`(?:[^`<]*<)?~?([\w.]+)>?`")
DOCUMENTED = [bc.functional, bc.linalg]


def _resolves(target: str, module) -> bool:
    if "." not in target:
        return hasattr(module, target)
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            found = getattr(found, name, None)
        return found is not None
    return False


@pytest.mark.parametrize("module", DOCUMENTED, ids=lambda module: module.__name__)
def test_references_in_public_docstrings_resolve(module) -> None:
    unresolved = [
        f"{name}: {target}"
        for name in module.__all__
        if not inspect.ismodule(getattr(module, name))
        for target in REFERENCE.findall(inspect.getdoc(getattr(module, name)) or "")
        if target.split(".")[0] in ("barycentric", target) and not _resolves(target, module)
    ]
    assert unresolved == []


def test_default_tolerance_is_what_the_solver_docs_say() -> None:
    # wasserstein_barycenter_full's `tol`: "default_tolerance of the dtype (1e-12 in
    # float64, 1e-5 in float32)", which was not reachable from barycentric.functional
    assert bc.functional.default_tolerance(torch.float64) == 1e-12
    assert bc.functional.default_tolerance(torch.float32) == 1e-5
