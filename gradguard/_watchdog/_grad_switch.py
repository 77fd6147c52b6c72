"""Where gradients were switched off: a bare ``torch.set_grad_enabled(False)`` and its line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from gradguard import _findings
from gradguard._watchdog import _built
from gradguard._watchdog._common import is_compiling, local, status


def remembering_init(original: Callable[..., None]) -> Callable[..., None]:
    """``set_grad_enabled.__init__`` that remembers where the user switched gradients off."""

    def __init__(self: Any, mode: bool) -> None:
        original(self, mode)
        try:
            caller = sys._getframe(1)
            if not mode and _built.built and not is_compiling():
                # Gradients going off is where a model only ever called starts to matter.
                _built.on_grad_disabled(caller)
            module = caller.f_globals.get("__name__", "")
            if module.startswith(("torch.", "gradguard.")):
                # torch.no_grad()/enable_grad() on enter and exit, Optimizer.step's own switch, or
                # gradguard's own scopes and inference_fn: scoped, and never the user's bare
                # switch (and no is_compiling() to ask on every step).
                return
            if is_compiling() or not status.installed:
                return
            if mode:
                local.disabled_by = None
                local.disabled_at = None
            else:
                local.disabled_by = self
                local.disabled_at = _findings.user_site(caller)
        except Exception:  # fail open: remembering the site is a nicety
            pass

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


def where_grad_disabled() -> str:
    """Where this thread's gradients were switched off by a bare call, or "" when not known."""
    site = getattr(local, "disabled_at", None)
    if site is None or torch.is_grad_enabled():
        return ""
    return f"by torch.set_grad_enabled(False) at {site[0]}:{site[1]}"


def describe_grad_disabled() -> str:
    """How gradients came to be off in this thread, as the end of a sentence."""
    if torch.is_inference_mode_enabled():
        return "inside a torch.inference_mode() block"
    site = getattr(local, "disabled_at", None)
    if site is not None:
        return (
            f"by torch.set_grad_enabled(False) at {site[0]}:{site[1]}, which was never turned "
            "back on"
        )
    return (
        "inside a torch.no_grad() block (or a function decorated with it, or a gradguard "
        "scope with mode='no_grad')"
    )
