"""What every public function does on entry: compute outside autocast, and explain vmap.

Autocast. Inside :class:`torch.autocast`, torch computes matrix products (``@``,
:func:`torch.einsum`) in bfloat16 or float16 and leaves its linear algebra in float32: the
library's kernels mix both, and their numerical contract (scale-equivariance, the fixed
point's tolerance, float32 results for float32 inputs) holds only in the dtype of their
inputs. Every public function therefore runs with autocast switched off on every device
type where it is on (CPU, CUDA and the others torch knows), and so do the backward passes
of the library's autograd functions (a backward called inside an autocast region runs
with autocast on): the results are those computed outside autocast, in the inputs' dtype.

vmap. :func:`torch.func.vmap` cannot batch a step whose course depends on values:
argument validation (which reads them, as :mod:`torch.distributions`' does), the isolation
of failed decompositions and the fixed-point solver's stopping rule. Where vmap meets one
(directly, or through :func:`torch.func.jacrev`, :func:`torch.func.jacfwd` or
:func:`torch.func.hessian`), its error, which asks for an issue to be filed with PyTorch,
becomes one that says why and what to do instead.

The entry points add frames between the user's code and the library's warnings, which
:func:`warn_at_caller` therefore attributes to the first frame outside the package; and a
solve whose result needs no derivative reads its inputs without torch.func's wrappers
(:func:`untracked`).
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from barycentric._validation import validation_enabled

__all__ = ["entry_point", "untracked", "warn_at_caller"]

Function = TypeVar("Function", bound=Callable[..., Any])

#: Where the package's files are: a warning is attributed to the first frame outside.
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: The device types whose autocast state a public function reads (and switches off).
AUTOCAST_DEVICE_TYPES = tuple(
    device for device in ("cpu", "cuda", "xpu", "mps") if torch.amp.is_autocast_available(device)
)


def entry_point(
    function: Function | None = None, /, *, name: str | None = None, why: str | None = None
) -> Any:
    """Decorate a public function (or an autograd function's ``backward``): it runs with
    autocast off, and an error of vmap inside it says what is and is not supported.

    Parameters
    ----------
    function : callable
        Decorated directly (``@entry_point``), or by ``@entry_point(name=..., why=...)``.
    name : str, optional
        What the vmap error calls the function; its qualified name by default.
    why : str, optional
        Why vmap cannot run it, and what to do instead; by default, validation (when it is
        on) or the decompositions and solvers of full covariances (when it is off).
    """
    if function is None:
        return functools.partial(entry_point, name=name, why=why)
    label = name or f"barycentric's {function.__qualname__}"

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return _without_autocast(function, _autocasting(), args, kwargs)
        except RuntimeError as error:
            if not str(error).startswith("vmap:"):
                raise
            raise RuntimeError(_vmap_message(label, why)) from error

    return wrapper


def _autocasting() -> tuple[str, ...]:
    """The device types on which autocast is on; torch's one flag for all of them (a tenth
    of a microsecond, where asking each device type costs half a microsecond) first."""
    if not torch._C._is_any_autocast_enabled():
        return ()
    return tuple(device for device in AUTOCAST_DEVICE_TYPES if torch.is_autocast_enabled(device))


def _without_autocast(
    function: Callable[..., Any], devices: tuple[str, ...], args: tuple, kwargs: dict
) -> Any:
    """``function(*args, **kwargs)`` with autocast off on ``devices`` (nested contexts, which
    :func:`torch.compile` traces without a graph break)."""
    if not devices:
        return function(*args, **kwargs)
    with torch.autocast(devices[0], enabled=False):
        return _without_autocast(function, devices[1:], args, kwargs)


def _vmap_message(label: str, why: str | None) -> str:
    if why is None and validation_enabled():
        why = (
            "argument validation reads the values, which vmap cannot do (nor can "
            "torch.distributions' own); switch it off with "
            "torch.distributions.Distribution.set_default_validate_args(False)"
        )
    elif why is None:
        why = "its solver takes steps that depend on the values (where to stop, which method)"
    return (
        f"{label} cannot run under torch.func.vmap (which jacrev, jacfwd and hessian use "
        f"too): {why}. Every barycentric function batches over leading dimensions already: "
        "stack the problems along a leading dimension instead of mapping over them."
    )


def untracked(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` without the wrappers of :mod:`torch.func`'s derivative transforms
    (``grad``, ``vjp``, ``jacrev``): the same values, for a solve whose result needs no
    derivative of its own and which runs in inference mode and writes into ``out=``
    buffers, neither of which the wrappers allow. vmap's batched tensors stay as they are
    (torch.func offers no public way to do this: its private functions are used)."""
    while torch._C._functorch.is_gradtrackingtensor(tensor):
        tensor = torch._C._functorch.get_unwrapped(tensor)
    return tensor


def readable(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s values can be read on the host: not while :func:`torch.compile`
    traces (a read would break the graph) nor under :func:`torch.func.vmap` (which refuses
    it). Reports that need a read (a warning counting unconverged rows) are skipped there;
    the per-row flags they count are returned all the same."""
    if torch.compiler.is_compiling():
        return False
    return not torch._C._functorch.is_batchedtensor(untracked(tensor))


def warn_at_caller(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """:func:`warnings.warn` attributed to the first frame outside barycentric: the line of
    the user's code that called the library, however many of its frames (entry points,
    adapters, solvers) lie in between."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)
