"""What every part of the watchdog shares: its lock, its per-thread state, its status, reporting."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from typing_extensions import ParamSpec

from gradguard import _findings

if TYPE_CHECKING:
    from gradguard._watchdog._install import WatchHandle

P = ParamSpec("P")
R = TypeVar("R")

lock = threading.RLock()
local = threading.local()

is_compiling = torch.compiler.is_compiling


class _NotExporting:
    _is_compiling_flag = False


# On the hot paths (every watched forward, every optimizer step) the two cheap halves of
# torch.compiler.is_compiling(), without its extra call of torch.jit.is_scripting():
# ``is_dynamo_compiling()`` is True while torch.compile traces (it folds the call to a constant),
# ``compiler._is_compiling_flag`` while torch.export traces without it.
is_dynamo_compiling = torch.compiler.is_dynamo_compiling
compiler: Any = torch.compiler if hasattr(torch.compiler, "_is_compiling_flag") else _NotExporting()


class Status:
    """Counters and switches read on hot paths; one instance, mutated in place."""

    __slots__ = ("deep", "installed", "session", "structure")

    def __init__(self) -> None:
        self.installed = False
        self.deep = False
        # Bumped at every installation: what a thread recorded under an earlier one (the site of
        # a bare switch) is not this one's.
        self.session = 0
        # Bumped whenever a parameter or submodule is registered anywhere and whenever a model is
        # noted or forgotten: every cache of models and their parts checks this one number.
        self.structure = 0


status = Status()

# Open handles, oldest first.
handles: list[WatchHandle] = []


def strict() -> bool | None:
    """The ``strict`` of the most recently opened handle that sets it (None: the environment)."""
    for handle in reversed(handles):
        if handle.strict is not None:
            return handle.strict
    return None


def fail_open(where: str) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """:func:`gradguard._findings.fail_open` reporting with the watchdog's own ``strict``."""
    return _findings.fail_open(where, strict=strict)


def report(check: str, message: str, fix: str, site: tuple[str, int] | None = None) -> None:
    """Report a watchdog finding at ``site`` (default: the user's line above the caller)."""
    if site is None:
        site = _findings.user_site(sys._getframe(1))
    _findings.report(check, message, fix, site=site, strict=strict())


# Wrappers with no layer of their own: what runs is their ``module``, whose flags are its own (a
# model switched by ``wrapper.module.eval()`` runs as in evaluation while the wrapper's own flag
# still says training).
WRAPPERS: tuple[type[torch.nn.Module], ...] = (
    torch.nn.DataParallel,
    torch.nn.parallel.DistributedDataParallel,
)


def wrapped_model(module: torch.nn.Module | None) -> torch.nn.Module | None:
    """The model inside ``module`` when it is a DataParallel/DDP wrapper, else None."""
    return module._modules.get("module") if isinstance(module, WRAPPERS) else None


def wrapped_in_eval(module: torch.nn.Module) -> torch.nn.Module | None:
    """The model inside ``module``, a DataParallel/DDP wrapper, when that model is in eval."""
    inner = wrapped_model(module)
    return inner if inner is not None and not inner.training else None


def model_name(module: torch.nn.Module) -> str:
    """The class name, with the wrapped model's for DDP/DataParallel/torch.compile wrappers."""
    inner = getattr(module, "module", None)
    if not isinstance(inner, torch.nn.Module):
        inner = getattr(module, "_orig_mod", None)
    if isinstance(inner, torch.nn.Module):
        return f"{type(module).__name__}({type(inner).__name__})"
    return type(module).__name__
