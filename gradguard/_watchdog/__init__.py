"""The watchdog: find the classic no_grad/eval mistakes at run time in code as it is.

Nothing here runs until :func:`watch` (or ``GRADGUARD_WATCH``): importing gradguard patches nothing.

How models are found without touching every module call (the default level):

* ``nn.Module.train/eval/to/cuda/cpu/load_state_dict`` are patched to note the module they are
  called on (only the outermost call: ``train()`` recursing into children notes just the root);
* a global optimizer step pre-hook notes the models that own the parameters being stepped (owners
  are learnt from global parameter/submodule *registration* hooks, which run when a model is built,
  never on forward);
* gradguard scopes note their roots when they build a module tree;
* every noted model's class gets gradguard's ``__call__``, which checks the call when the
  instance is watched and otherwise calls straight on: nothing is stored on the model, so it
  saves, pickles, copies and scripts as unwatched, and submodules keep PyTorch's fast path.

``deep=True`` adds a global module forward pre-hook that notes every outermost module call, at the
price of taking every module call in the process off its fast path.

Every check is skipped inside ``torch.compile`` regions and fails open; models are held by weak
reference only; :func:`unwatch` restores every patched attribute and removes every hook.
"""

# Layout: _install (handles, patches, global hooks, GRADGUARD_WATCH), _reach (which models are
# seen, the per-class call check), one module per check family (_graphs GG001, _train_mode GG002,
# _backward GG003, _optimizer GG004/GG005), _grad_switch (where gradients were disabled),
# _common (lock, per-thread state, status, reporting).

from __future__ import annotations

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
