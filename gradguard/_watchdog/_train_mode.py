"""GG002: a model in training mode runs forward with gradients disabled."""

from __future__ import annotations

import os
import sys
import weakref

import torch
from torch import nn

from gradguard import _findings
from gradguard._watchdog._common import fail_open, model_name, report, status
from gradguard._watchdog._grad_switch import describe_grad_disabled

# model -> (structure generation, its mode-dependent layers by weak reference). Not the state
# engine's tree cache: the watchdog looks at models that no scope ever held, and must not keep
# anything of theirs alive.
mode_dependent_cache: weakref.WeakKeyDictionary[
    nn.Module, tuple[int, tuple[weakref.ref[nn.Module], ...]]
] = weakref.WeakKeyDictionary()


def _compiled_mode_dependent_layer(module: torch.jit.ScriptModule) -> bool:
    """The same question for a ScriptModule, which keeps only its original class's name."""
    if isinstance(module, torch.jit._trace.TracedModule):
        return False  # tracing fixed every mode-dependent branch as it was when traced
    name = getattr(module, "original_name", "")
    torch_class = getattr(nn, name, None)
    if isinstance(torch_class, type) and issubclass(torch_class, nn.Module):
        if issubclass(torch_class, nn.modules.batchnorm._NormBase):
            return bool(getattr(module, "track_running_stats", True))
        if issubclass(torch_class, nn.modules.dropout._DropoutNd):
            return bool(getattr(module, "p", 1) > 0)
        if issubclass(torch_class, (nn.RNNBase, nn.MultiheadAttention)):
            return bool(getattr(module, "dropout", 1))
        return False
    try:
        return "training" in module.code
    except Exception:  # a module without a forward has no code, and no mode
        return False


def mode_dependent_layer(module: nn.Module) -> bool:
    """Whether ``module`` itself (not its children) behaves differently in training mode."""
    if isinstance(module, torch.jit.ScriptModule):
        return _compiled_mode_dependent_layer(module)
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return bool(module.track_running_stats)
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)):
        return bool(module.dropout)
    cls = type(module)
    if cls.__module__.startswith("torch."):
        return False
    forward = getattr(cls.forward, "__code__", None)
    # A module of the user's own whose forward reads self.training decides something by mode.
    return forward is not None and "training" in forward.co_names


# Kinds of mode-dependent layer, in the order messages list them, with what each does in
# training mode and in eval mode.
_KINDS = {
    "dropout": ("active", "off"),
    "statistics": ("updating its running statistics", "using frozen running statistics"),
    "internal dropout": ("internal dropout active", "internal dropout off"),
    "own": ("forward reads self.training", "forward reads self.training"),
}


def _kind(module: nn.Module) -> str:
    """Which of :data:`_KINDS` ``module`` is (empty when its behaviour does not depend on mode)."""
    if not mode_dependent_layer(module):
        return ""
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return "statistics"
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return "dropout"
    if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)):
        return "internal dropout"
    return "own"


def runs_as_in(module: nn.Module, *, training: bool) -> bool:
    """Whether some mode-dependent layer of ``module`` has its own flag set to ``training``.

    What runs is decided by each layer's own flag, not by the root's: a wrapper left in training
    around a model in eval (``nn.DataParallel(model.eval())``) runs every layer as in evaluation.
    """
    for ref in _mode_dependent_layers(module):
        layer = ref()
        if layer is not None and layer.training == training:
            return True
    return False


def mode_dependent_layers(module: nn.Module, *, training: bool, limit: int = 4) -> str:
    """The layers of ``module`` that depend on the mode and are in that mode, by class.

    ``"8 Dropout (off), 2 BatchNorm1d (using frozen running statistics)"``: what the model
    really contains and what each does in the given mode, so a message names no layer the model
    does not have, nor one whose own flag is the other mode. Empty when there is none.
    """
    counts: dict[tuple[str, str], int] = {}
    for sub in module.modules():
        kind = _kind(sub) if sub.training == training else ""
        if kind:
            key = (kind, type(sub).__name__)
            counts[key] = counts.get(key, 0) + 1
    order = list(_KINDS)
    ranked = sorted(counts.items(), key=lambda item: order.index(item[0][0]))
    parts = [
        f"{count} {name} ({_KINDS[kind][0 if training else 1]})"
        for (kind, name), count in ranked[:limit]
    ]
    if len(ranked) > limit:
        parts.append(f"and {len(ranked) - limit} more kind(s)")
    return ", ".join(parts)


def _mode_dependent_layers(module: nn.Module) -> tuple[weakref.ref[nn.Module], ...]:
    """The modules in ``module``'s tree that behave differently in training mode (cached).

    A forward under no_grad of a wrapper in training around a model in eval asks at every call:
    the tree is walked once per structure generation, then only the layers' flags are read.
    """
    cached = mode_dependent_cache.get(module)
    if cached is not None and cached[0] == status.structure:
        return cached[1]
    # Read before the walk: a change another thread makes during it then leaves this entry stale.
    generation = status.structure
    layers = tuple(
        weakref.ref(sub) for sub in module.modules() if mode_dependent_layer(sub)
    )
    mode_dependent_cache[module] = (generation, layers)
    return layers


def mode_dependent(module: nn.Module) -> bool:
    """Whether some module in ``module``'s tree behaves differently in training mode."""
    return bool(_mode_dependent_layers(module))


_CHECKPOINT_FILE = os.path.join("torch", "utils", "checkpoint.py")


def _runs_without_grad_by_design() -> bool:
    """Inside torch's own code that runs a training forward with gradients off on purpose.

    ``swa_utils.update_bn`` recalibrates BatchNorm; reentrant activation checkpointing
    (``checkpoint(..., use_reentrant=True)``) runs the first forward under no_grad and
    recomputes it with gradients during backward.
    """
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "update_bn" and code.co_filename.endswith("swa_utils.py"):
            return True
        if code.co_filename.endswith(_CHECKPOINT_FILE):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


@fail_open("train-mode-without-grad")
def check_train_without_grad(module: nn.Module) -> None:
    """Report GG002 for ``module``, in training mode and running with gradients off."""
    if _findings.is_allowed("train-mode-without-grad") or not mode_dependent(module):
        return
    if _runs_without_grad_by_design() or not runs_as_in(module, training=True):
        return
    site, inside = _findings.user_site_inside(sys._getframe(1))
    name = model_name(module)
    report(
        "train-mode-without-grad",
        f"{name} is in training mode but ran forward at {site[0]}:{site[1]}{inside} with "
        f"gradients disabled {describe_grad_disabled()}, so its mode-dependent layers ran as in "
        f"training: {mode_dependent_layers(module, training=True)}. Either an evaluation forgot "
        "eval() or training resumed with gradients still off",
        "to evaluate, call model.eval() first (and model.train() after), or use "
        "`with gradguard.evaluating(model):`; to train, turn gradients back on; "
        "for an intended use (Monte-Carlo dropout, BatchNorm recalibration) wrap it in "
        "gradguard.allow('train-mode-without-grad')",
        site,
    )
