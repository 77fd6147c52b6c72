"""Models learnt of as they are built or unpickled, so that one only ever called is seen too.

PyTorch's module-registration hooks already run while a model is built (every submodule and
parameter assigned in ``__init__``), and ``nn.Module.__setstate__`` runs for each module that
``torch.load`` or ``pickle`` rebuilds; neither runs on forward. Both only *remember* the module
here (a weak reference, no work). At the next point where a finding could start to matter (a
grad switch turning gradients off, an optimizer step, a ``train()``/``eval()`` call), the
remembered modules are resolved to their roots, which are noted like any other model: one
forward pre-hook and one forward hook on each root, none on its submodules, no global hook.
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from torch import nn

from gradguard._watchdog._common import fail_open, status

# Modules built or unpickled since the last resolution, by id (weak: nothing is kept alive).
built: dict[int, weakref.ref[nn.Module]] = {}


def _forget(key: int, ref: weakref.ref[nn.Module]) -> None:
    if built.get(key) is ref:
        built.pop(key, None)  # note_built() or unwatch() in another thread may have cleared it


def remember(module: nn.Module) -> None:
    """Remember a module that is being built or unpickled (dropped again if it dies first)."""
    key = id(module)
    if key not in built:
        built[key] = weakref.ref(module, functools.partial(_forget, key))


def unpickling(original: Callable[..., Any]) -> Callable[..., Any]:
    """``nn.Module.__setstate__`` that remembers the module it rebuilt."""

    def __setstate__(self: nn.Module, state: Any) -> None:
        original(self, state)
        if status.installed:  # left in place under another layer after unwatch(): inert
            remember(self)

    __setstate__.__wrapped__ = original  # type: ignore[attr-defined]
    return __setstate__


def on_registered(module: nn.Module, _name: str, _value: Any) -> None:
    """Global parameter/submodule registration hook: the module is being built."""
    remember(module)


def on_grad_disabled(caller: FrameType) -> None:
    """``set_grad_enabled(False)`` was constructed by ``caller``: note what was built."""
    outer = caller.f_back
    if outer is not None and outer.f_globals.get("__name__") == "torch.nn.init":
        return  # a parameter being initialised: its model is still being built
    note_built_safely()


def entering_inference(original: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.inference_mode.__enter__`` that notes what was built, as gradients go off."""

    def __enter__(self: Any) -> Any:
        result = original(self)
        if built and getattr(self, "mode", True):
            note_built_safely()
        return result

    __enter__.__wrapped__ = original  # type: ignore[attr-defined]
    return __enter__


def _under_construction() -> set[int]:
    """Ids of the modules whose ``__init__`` is running in this thread now."""
    ids: set[int] = set()
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "__init__":
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, nn.Module):
                ids.add(id(candidate))
        frame = frame.f_back
    return ids


def note_built() -> None:
    """Note the roots of every module built or unpickled since the last call.

    A root still being built (its ``__init__`` is running) waits for the next call: noted now,
    a submodule would be taken for a model of its own.
    """
    # Here, not at the top: _reach imports the check modules, which import this one.
    from gradguard._watchdog import _reach

    pending = [module for module in (ref() for ref in built.values()) if module is not None]
    built.clear()
    if not pending:
        return
    building = _under_construction()
    # A remembered module inside another remembered one is not a root; one registered in a
    # parent that was built earlier is resolved through the registration records.
    inside = {id(child) for module in pending for child in module._modules.values()}
    roots: dict[int, nn.Module] = {}
    for module in pending:
        if id(module) in inside:
            continue
        root = _reach.root_of_module(module)
        if id(root) in building or id(module) in building:
            remember(module)
            continue
        roots.setdefault(id(root), root)
    for root in roots.values():
        if id(root) not in _reach.models:
            _reach.note_safely(root)


note_built_safely = fail_open("model discovery")(note_built)


def forget_all() -> None:
    """Forget every remembered module (at removal)."""
    built.clear()
