"""The watchdog: find the classic no_grad/eval mistakes at run time in code as it is.

Nothing here runs until :func:`watch` (or ``GRADGUARD_WATCH``): importing gradguard patches nothing.

How models are found without touching every module call (the default level):

* ``nn.Module.train/eval/to/cuda/cpu/load_state_dict`` are patched to note the module they are
  called on (only the outermost call: ``train()`` recursing into children notes just the root);
* a global optimizer step pre-hook notes the models that own the parameters being stepped (owners
  are learnt from global parameter/submodule *registration* hooks, which run when a model is built,
  never on forward);
* gradguard scopes note their roots when they build a module tree;
* models built or unpickled while watching are remembered by the same registration hooks (and
  ``nn.Module.__setstate__``), and their roots noted when gradients next go off or an optimizer
  steps (:mod:`._built`), so a model that is only ever called is seen too;
* every noted model's class gets gradguard's ``__call__``, which checks the call when the
  instance is watched and otherwise calls straight on: nothing is stored on the model, so it
  saves, pickles, copies and scripts as unwatched, and submodules keep PyTorch's fast path.

``deep=True`` adds a global module forward pre-hook that notes every outermost module call, at the
price of taking every module call in the process off its fast path.

Every check is skipped inside ``torch.compile`` regions and fails open; models are held by weak
reference only; :func:`unwatch` restores every patched attribute and removes every hook.

Importing this package does not import torch (its names load on first use), so that the parts
that must run before torch is imported (:mod:`._deferred`, :mod:`._processes`) stay cheap.
"""

# Layout: _install (handles, patches, global hooks, GRADGUARD_WATCH), _reach (which models are
# seen, the per-class call check), one module per check family (_graphs GG001, _train_mode GG002,
# _backward GG003, _optimizer GG004/GG005), _grad_switch (where gradients were disabled),
# _built (models remembered as built or unpickled), _processes (child processes), _deferred
# (installing when torch is imported), _common (lock, per-thread state, status, reporting).

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradguard._watchdog._grad_switch import where_grad_disabled
    from gradguard._watchdog._install import (
        WatchHandle,
        flush,
        is_watching,
        unwatch,
        watch,
        watch_from_environment,
    )
    from gradguard._watchdog._reach import known_models

# Public name -> the submodule that defines it (each one imports torch).
_LAZY = {
    "WatchHandle": "_install",
    "flush": "_install",
    "is_watching": "_install",
    "unwatch": "_install",
    "watch": "_install",
    "watch_from_environment": "_install",
    "known_models": "_reach",
    "where_grad_disabled": "_grad_switch",
}


def __getattr__(name: str) -> Any:
    submodule = _LAZY.get(name)
    if submodule is None:
        raise AttributeError(f"module 'gradguard._watchdog' has no attribute {name!r}")
    # Not cached here: always the module in sys.modules now, even where a test runner
    # (pytester) drops modules imported during a run and imports them afresh in the next.
    return getattr(importlib.import_module(f"gradguard._watchdog.{submodule}"), name)


if "torch" in sys.modules:
    # With torch already there, load the whole watchdog with the package, as one piece: its
    # modules then live and die together (a test runner may drop modules imported during a run).
    for _name in _LAZY:
        globals()[_name] = __getattr__(_name)

__all__ = [
    "WatchHandle",
    "flush",
    "is_watching",
    "known_models",
    "unwatch",
    "watch",
    "watch_from_environment",
    "where_grad_disabled",
]
