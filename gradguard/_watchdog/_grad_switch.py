"""Where gradients were switched off: a bare ``torch.set_grad_enabled(False)`` and its line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

import torch

from gradguard import _findings
from gradguard._watchdog import _built
from gradguard._watchdog._common import is_compiling, local, status

# Whether any thread ever recorded a bare switch: until one does, switching gradients back on has
# nothing to forget, and returns at once (torch.no_grad()'s exit, Optimizer.step's second switch).
_recorded = False

# Code object of a caller -> whether it is torch's or gradguard's (never the user's bare switch).
_internal: dict[CodeType, bool] = {}
_INTERNAL_CACHE_SIZE = 4096


# The last internal callers met (no_grad()'s __enter__, Optimizer.step's own switch), asked first
# and by identity: a lookup in _internal hashes the code object (its name, bytecode, constants
# and names: about 900 instructions for Optimizer.step's wrapper) on every switch. Replaced
# whole, never changed in place, so a thread reading it sees one whole tuple.
_hot: tuple[CodeType, ...] = ()
_HOT_SIZE = 8


def _is_internal(caller: FrameType) -> bool:
    """Whether ``caller`` is torch's or gradguard's code (then remembered for its code object)."""
    if len(_internal) >= _INTERNAL_CACHE_SIZE:
        _internal.clear()  # code made by exec() in a loop: never let the cache grow unbounded
    module = caller.f_globals.get("__name__", "")
    internal = isinstance(module, str) and module.startswith(("torch.", "gradguard."))
    _internal[caller.f_code] = internal
    return internal


# What PyTorch's own set_grad_enabled.__init__ refers to: ``self.prev = torch.is_grad_enabled()``,
# ``self.mode = mode``, ``torch._C._set_grad_enabled(mode)``.
_INIT_NAMES = ("torch", "is_grad_enabled", "prev", "mode", "_C", "_set_grad_enabled")


def remembering_init(original: Callable[..., None]) -> Callable[..., None]:
    """``set_grad_enabled.__init__`` that remembers where the user switched gradients off.

    It runs for every ``torch.no_grad()`` block and twice per ``optimizer.step()`` (PyTorch's own
    switches), so those return after one look at the caller's code object; and where
    ``original`` is PyTorch's known three lines, they are done here (one Python frame less).
    """
    built = _built.built  # mutated in place, never rebound
    code = getattr(original, "__code__", None)
    inline = code is not None and code.co_names == _INIT_NAMES and code.co_argcount == 2
    is_grad_enabled = torch.is_grad_enabled
    set_grad_mode = torch._C._set_grad_enabled
    getframe = sys._getframe
    cached = _internal.get

    def remember(self: Any, mode: bool, caller: FrameType) -> None:
        global _recorded, _hot
        try:
            if not mode and built and not is_compiling():
                # Gradients going off is where a model only ever called starts to matter.
                _built.on_grad_disabled(caller)
            code = caller.f_code
            internal = cached(code)
            if internal is None:
                internal = _is_internal(caller)
            if internal:
                if code not in _hot:
                    _hot = (*_hot[-(_HOT_SIZE - 1) :], code)
                # torch.no_grad()/enable_grad() on enter and exit, Optimizer.step's own switch, or
                # gradguard's own scopes and inference_fn: scoped, and never the user's bare
                # switch.
                return
            if is_compiling() or not status.installed:
                return
            if mode:
                local.disabled_by = None
                local.disabled_at = None
            else:
                _recorded = True
                local.disabled_by = self
                local.disabled_at = _findings.user_site(caller)
                local.disabled_in = status.session
        except Exception:  # fail open: remembering the site is a nicety
            pass

    # Written out in __init__, as every switch asks: gradients going on return at once until a
    # bare switch was ever recorded; going off, at once when the caller's code is known to be
    # torch's or gradguard's and among the last few such callers (no_grad()'s enter,
    # Optimizer.step's own switch), by identity, and no model only ever called waits for it.
    # The try costs nothing until sys._getframe(1) finds no caller.
    def __init__(self: Any, mode: bool) -> None:
        if inline:
            self.prev = is_grad_enabled()
            self.mode = mode
            set_grad_mode(mode)
        else:
            original(self, mode)
        try:
            if mode:
                if _recorded:
                    remember(self, mode, getframe(1))
            elif built or getframe(1).f_code not in _hot:
                remember(self, mode, getframe(1))
        except ValueError:
            pass  # no Python caller (an atexit callback, a thread's target): nothing to note

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


def forgetting(original: Callable[..., Any]) -> Callable[..., Any]:
    """``__exit__``/``__call__``: a with-block or decorator switches only for its own body."""

    def forgetting(self: Any, *args: Any) -> Any:
        if getattr(local, "disabled_by", None) is self:
            local.disabled_by = None
            local.disabled_at = None
        return original(self, *args)

    forgetting.__name__ = original.__name__
    forgetting.__wrapped__ = original  # type: ignore[attr-defined]
    return forgetting


def _bare_switch_site() -> tuple[str, int] | None:
    """This thread's recorded bare switch off, if this installation recorded it."""
    if getattr(local, "disabled_in", None) != status.session:
        return None  # recorded under an earlier watch(): it may have been undone unseen since
    site: tuple[str, int] | None = getattr(local, "disabled_at", None)
    return site


def where_grad_disabled() -> str:
    """Where this thread's gradients were switched off by a bare call, or "" when not known."""
    site = _bare_switch_site()
    if site is None or torch.is_grad_enabled():
        return ""
    return f"by torch.set_grad_enabled(False) at {site[0]}:{site[1]}"


def describe_grad_disabled() -> str:
    """How gradients came to be off in this thread, as the end of a sentence."""
    if torch.is_inference_mode_enabled():
        return "inside a torch.inference_mode() block"
    site = _bare_switch_site()
    if site is not None:
        return (
            f"by torch.set_grad_enabled(False) at {site[0]}:{site[1]}, which was never turned "
            "back on"
        )
    return (
        "inside a torch.no_grad() block (or a function decorated with it, or a gradguard "
        "scope with mode='no_grad')"
    )
