"""Write the intersphinx inventories that the docs build reads offline.

The build machines reach no documentation site, so ``docs/conf.py`` points intersphinx
at the ``objects.inv`` files in this folder instead of downloading them. This script
writes them from the *installed* PyTorch, NumPy and POT: it lists their public objects
and maps each to the page where that project's own Sphinx site documents it (the URL
layouts below are those of the live sites). Run it again after upgrading one of them::

    python docs/_intersphinx/make_inventories.py
"""

from __future__ import annotations

import importlib
import inspect
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy
import ot
import torch
import torch.distributions

HERE = Path(__file__).resolve().parent

Entry = tuple[str, str, str]  # (name, "py:role", uri relative to the project's base URL)


def _role(obj: object) -> str:
    if inspect.ismodule(obj):
        return "py:module"
    if inspect.isclass(obj):
        return "py:class"
    if callable(obj):
        return "py:function"
    return "py:data"


def _public(module: object) -> Iterator[tuple[str, object]]:
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    for name in sorted(set(names)):
        if name.startswith("_") or not hasattr(module, name):
            continue
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue
        yield name, obj


def torch_entries() -> Iterator[Entry]:
    yield "torch", "py:module", "index.html#module-torch"
    yield "torch.Tensor", "py:class", "tensors.html#torch.Tensor"
    for name in ("dtype", "device", "layout"):
        yield f"torch.{name}", "py:class", f"tensor_attributes.html#torch.{name}"
    for name in dir(torch.Tensor):
        if not name.startswith("_") and callable(getattr(torch.Tensor, name, None)):
            full = f"torch.Tensor.{name}"
            yield full, "py:method", f"generated/{full}.html#{full}"
    for name, obj in _public(torch):
        if callable(obj) and not inspect.isclass(obj) and name[0].islower():
            yield f"torch.{name}", "py:function", f"generated/torch.{name}.html#torch.{name}"
    yield "torch.Generator", "py:class", "generated/torch.Generator.html#torch.Generator"
    for sub in ("linalg", "special", "func", "autograd.functional"):
        module = importlib.import_module(f"torch.{sub}")
        yield f"torch.{sub}", "py:module", f"{sub.split('.')[0]}.html#module-torch.{sub}"
        for name, obj in _public(module):
            if callable(obj) and not inspect.isclass(obj):
                full = f"torch.{sub}.{name}"
                yield full, "py:function", f"generated/{full}.html#{full}"
    for full in (
        "torch.autograd.grad",
        "torch.autograd.backward",
        "torch.autograd.gradcheck",
        "torch.autograd.gradgradcheck",
    ):
        yield full, "py:function", f"generated/{full}.html#{full}"
    yield "torch.autograd", "py:module", "autograd.html#module-torch.autograd"
    yield "torch.autograd.Function", "py:class", "autograd.html#torch.autograd.Function"
    for full in (
        "torch.nn.Module",
        "torch.nn.Linear",
        "torch.nn.Sequential",
        "torch.nn.Parameter",
        "torch.optim.Optimizer",
        "torch.optim.Adam",
        "torch.optim.AdamW",
        "torch.optim.SGD",
        "torch.optim.LBFGS",
    ):
        yield full, "py:class", f"generated/{full}.html#{full}"
    # torch.distributions documents every class under its defining module on one page;
    # the package-level alias (torch.distributions.Normal) points at the same anchor.
    yield "torch.distributions", "py:module", "distributions.html#module-torch.distributions"
    for name, obj in _public(torch.distributions):
        if inspect.isclass(obj):
            canonical = f"{obj.__module__}.{obj.__qualname__}"
            for full in {canonical, f"torch.distributions.{name}"}:
                yield full, "py:class", f"distributions.html#{canonical}"
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                role = "py:property" if isinstance(member, property) else "py:method"
                if role == "py:method" and not callable(member):
                    continue
                for full in {canonical, f"torch.distributions.{name}"}:
                    yield f"{full}.{attr}", role, f"distributions.html#{canonical}.{attr}"
        elif callable(obj):
            canonical = f"{obj.__module__}.{name}"
            for full in {canonical, f"torch.distributions.{name}"}:
                yield full, "py:function", f"distributions.html#{canonical}"


def numpy_entries() -> Iterator[Entry]:
    yield "numpy", "py:module", "reference/index.html#module-numpy"
    for name, obj in _public(numpy):
        full = f"numpy.{name}"
        yield full, _role(obj), f"reference/generated/{full}.html#{full}"
    for name in ("Generator", "default_rng"):
        full = f"numpy.random.{name}"
        role = "py:class" if name == "Generator" else "py:function"
        yield full, role, f"reference/random/generator.html#{full}"


def pot_entries() -> Iterator[Entry]:
    yield "ot", "py:module", "all.html#module-ot"
    for name, obj in _public(ot):
        if callable(obj):
            yield f"ot.{name}", _role(obj), f"all.html#ot.{name}"
    for sub in ("lp", "bregman", "gaussian", "gmm", "utils", "backend", "sliced", "datasets"):
        module = importlib.import_module(f"ot.{sub}")
        page = f"gen_modules/ot.{sub}.html"
        yield f"ot.{sub}", "py:module", f"{page}#module-ot.{sub}"
        for name, obj in _public(module):
            if callable(obj):
                yield f"ot.{sub}.{name}", _role(obj), f"{page}#ot.{sub}.{name}"


def write_inventory(path: Path, project: str, version: str, entries: Iterable[Entry]) -> int:
    """Write a Sphinx version-2 ``objects.inv`` (header, then zlib-compressed lines)."""
    lines = sorted({f"{name} {role} 1 {uri} -" for name, role, uri in entries})
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    path.write_bytes(header.encode() + zlib.compress(("\n".join(lines) + "\n").encode(), 9))
    return len(lines)


def main() -> None:
    short = torch.__version__.split("+")[0]
    for filename, project, version, entries in (
        ("torch.inv", "PyTorch", short, torch_entries()),
        ("numpy.inv", "NumPy", numpy.__version__, numpy_entries()),
        ("pot.inv", "POT Python Optimal Transport", ot.__version__, pot_entries()),
    ):
        count = write_inventory(HERE / filename, project, version, entries)
        print(f"{filename}: {count} objects ({project} {version})")


if __name__ == "__main__":
    main()
