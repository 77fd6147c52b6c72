"""The watchdog: find the classic no_grad/eval mistakes at run time in code as it is.

Nothing here runs until :func:`watch` (or ``GRADGUARD_WATCH``): importing gradguard patches nothing.

How models are found without touching every module call (the default level):

* ``nn.Module.train/eval/to/cuda/cpu/load_state_dict`` are patched to note the module they are
  called on (only the outermost call: ``train()`` recursing into children notes just the root);
* a global optimizer step pre-hook notes the models that own the parameters being stepped (owners
  are learnt from global parameter/submodule *registration* hooks, which run when a model is built,
  never on forward);
* gradguard scopes note their roots when they build a module tree;
* every noted model gets one forward pre-hook and one forward hook of its own (on the root only:
  its submodules keep PyTorch's fast path).

``deep=True`` adds a global module forward pre-hook that notes every outermost module call, at the
price of taking every module call in the process off its fast path.

Every check is skipped inside ``torch.compile`` regions and fails open; models are held by weak
reference only; :func:`unwatch` restores every patched attribute and removes every hook.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, ClassVar

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from gradguard import _config, _findings, _state

__all__ = ["WatchHandle", "flush", "is_watching", "known_models", "unwatch", "watch"]

_lock = threading.RLock()
_local = threading.local()

_is_compiling = torch.compiler.is_compiling

# --------------------------------------------------------------------------------------------
# Installation state
# --------------------------------------------------------------------------------------------

_handles: list[WatchHandle] = []
_installed = False
_deep = False
# (owner, attribute name, original value) of every patch, in the order applied.
_patches: list[tuple[Any, str, Any]] = []
_global_hooks: list[RemovableHandle] = []
_deep_hooks: list[RemovableHandle] = []


class _Model:
    """A model the watchdog has seen: a weak reference and its two per-instance hooks."""

    __slots__ = ("__weakref__", "hooks", "ref")

    def __init__(self, ref: weakref.ref[nn.Module]) -> None:
        self.ref = ref
        self.hooks: list[RemovableHandle] = []


_models: dict[int, _Model] = {}
_models_version = 0

# Parameter -> the module it was registered on; module -> the module it was registered in.
# (Keyed by id: a WeakKeyDictionary would compare tensors with ==, which is elementwise.)
_param_owner: dict[int, tuple[weakref.ref[torch.Tensor], weakref.ref[nn.Module]]] = {}
_module_parent: weakref.WeakKeyDictionary[nn.Module, weakref.ref[nn.Module]] = (
    weakref.WeakKeyDictionary()
)

# Graphs freed unused (GG001), reported at the next safe point: a finalizer must not raise or warn.
_pending: list[tuple[str, str, tuple[str, int]]] = []


def _strict() -> bool | None:
    for handle in reversed(_handles):
        if handle.strict is not None:
            return handle.strict
    return None


def _report(check: str, message: str, fix: str, site: tuple[str, int] | None = None) -> None:
    if site is None:
        site = _findings.user_site(sys._getframe(1))
    _findings.report(check, message, fix, site=site, strict=_strict())


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class WatchHandle:
    """An installation of the watchdog; :meth:`close` (or leaving its ``with`` block) removes it.

    The watchdog stays installed while any handle is open; :func:`unwatch` closes them all.

    Attributes:
        strict: the ``strict`` this handle was opened with (``None``: the environment decides).
        deep: whether this handle asked for global module hooks.
    """

    def __init__(self, strict: bool | None, deep: bool) -> None:
        self.strict = strict
        self.deep = deep
        self.closed = False

    def close(self) -> None:
        """Remove this installation; the last open handle uninstalls the watchdog. Idempotent.

        Raises:
            GradGuardError: strict, and the last handle found a graph still alive and unused.
        """
        with _lock:
            if self.closed:
                return
            strict = _strict()
            self.closed = True
            if self in _handles:
                _handles.remove(self)
            if not _handles:
                _uninstall(strict)
            elif self.deep and not any(h.deep for h in _handles):
                _remove_deep()

    def __enter__(self) -> WatchHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # The exception already propagating is the one that matters: never replace it.
        with contextlib.suppress(_findings.GradGuardError):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<gradguard.WatchHandle {state} strict={self.strict!r} deep={self.deep!r}>"


def watch(*, strict: bool | None = None, deep: bool = False) -> WatchHandle:
    """Install the watchdog process-wide and return a handle that removes it.

    From now on, the models your program touches (``train()``, ``eval()``, ``to()``, ``cuda()``,
    ``cpu()``, ``load_state_dict()``, an optimizer step, a gradguard scope) are watched for the
    classic mistakes GG001-GG005; each finding warns once per code location at your line, is
    recorded for :func:`gradguard.findings`, and is raised as :class:`gradguard.GradGuardError`
    when strict. Installing again is harmless: the watchdog stays installed until every handle is
    closed or :func:`unwatch` is called, which restores every patched method and removes every hook.

    Thread locality: process-wide (every thread is watched); ``allow()`` silences checks per thread.

    Args:
        strict: ``True`` raises every watchdog finding as a ``GradGuardError`` where it is
            detected, ``False`` only warns, ``None`` follows ``GRADGUARD_STRICT`` /
            :func:`gradguard.configure`. The most recently opened handle that sets it wins.
        deep: also install global module forward hooks so that every model is seen, even one
            never touched by the calls above. This takes every module call in the process off
            PyTorch's fast path; see the benchmark figures in the README.

    Raises:
        TypeError: ``strict`` is not a bool or None, or ``deep`` is not a bool.

    Example:
        >>> import torch, gradguard
        >>> with gradguard.watch():
        ...     model = torch.nn.Linear(2, 2).eval()
        ...     with torch.no_grad():
        ...         out = model(torch.randn(1, 2))
    """
    if strict is not None and not isinstance(strict, bool):
        raise TypeError(f"watch(strict=...) takes True, False or None, not {strict!r}")
    if not isinstance(deep, bool):
        raise TypeError(f"watch(deep=...) takes True or False, not {deep!r}")
    with _lock:
        handle = WatchHandle(strict, deep)
        if not _installed:
            _install()
        _handles.append(handle)
        if deep and not _deep:
            _install_deep()
    return handle


def unwatch() -> None:
    """Remove the watchdog: close every handle, restore every patch, remove every hook.

    Graphs built during inference that are still alive and were never used by backward are
    reported now (GG001). Harmless when the watchdog is not installed.

    Example:
        >>> import gradguard
        >>> gradguard.unwatch()
    """
    with _lock:
        handles = list(_handles)
        if not handles and not _installed:
            return
        strict = _strict()
        for handle in handles:
            handle.closed = True
        _handles.clear()
        _uninstall(strict)


def is_watching() -> bool:
    """Whether the watchdog is installed now (by :func:`watch` or ``GRADGUARD_WATCH``).

    Example:
        >>> from gradguard import _watchdog
        >>> _watchdog.is_watching()
        False
    """
    return _installed


def known_models() -> list[nn.Module]:
    """The live models the watchdog has seen, in the order first seen (roots, not submodules).

    Empty when the watchdog is not installed; a model that was garbage-collected is gone.

    Example:
        >>> import torch, gradguard
        >>> from gradguard import _watchdog
        >>> with gradguard.watch():
        ...     model = torch.nn.Linear(2, 2).eval()
        ...     assert _watchdog.known_models() == [model]
    """
    with _lock:
        records = list(_models.values())
    models = []
    for record in records:
        model = record.ref()
        if model is not None:
            models.append(model)
    return models


def flush() -> None:
    """Report now the graphs found freed unused since the last watched forward (GG001).

    A graph dies in a finalizer, where nothing may warn or raise, so its finding waits for the
    next watched forward, optimizer step, ``train()``/``eval()`` call or :func:`unwatch`. Tools
    that attribute findings to a unit of work (a test) call ``gc.collect()`` then this.

    Raises:
        GradGuardError: strict, and such a graph was found.
    """
    if _pending:
        _flush_pending()


# --------------------------------------------------------------------------------------------
# Install / uninstall
# --------------------------------------------------------------------------------------------

_set_grad_enabled_class = torch.autograd.grad_mode.set_grad_enabled


def _patch(owner: Any, name: str, value: Any) -> None:
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    _patches.append((owner, name, original))
    setattr(owner, name, value)


def _install() -> None:
    global _installed, _installation
    _installation += 1
    originals = {
        name: nn.Module.__dict__[name]
        for name in ("train", "eval", "to", "cuda", "cpu", "load_state_dict")
    }
    try:
        for name, original in originals.items():
            _patch(nn.Module, name, _noting(original))
        _patch(torch.Tensor, "backward", _explaining(torch.Tensor.backward))
        _patch(torch.autograd, "backward", _explaining(torch.autograd.backward))
        # Methods of the class, not the class itself: torch.compile recognises
        # torch.set_grad_enabled by identity, and traces it without calling __init__.
        switch = _set_grad_enabled_class
        _patch(switch, "__init__", _remembering_init(switch.__dict__["__init__"]))
        _patch(switch, "__exit__", _forgetting(switch.__dict__["__exit__"]))
        _patch(switch, "__call__", _forgetting(switch.__dict__["__call__"]))
        module_hooks = nn.modules.module
        _global_hooks.append(
            register_optimizer_step_pre_hook(_optimizer_step_pre_hook)
        )
        _global_hooks.append(
            module_hooks.register_module_parameter_registration_hook(_on_parameter_registered)
        )
        _global_hooks.append(
            module_hooks.register_module_module_registration_hook(_on_module_registered)
        )
        _state.tree_listener = _on_new_tree
        _installed = True
        for root in _state.known_roots():
            _note(root)
    except BaseException:
        _uninstall()
        raise


def _uninstall(strict: bool | None = None) -> None:
    global _installed
    _remove_deep()
    _state.tree_listener = None
    while _patches:
        owner, name, original = _patches.pop()
        setattr(owner, name, original)
    while _global_hooks:
        _global_hooks.pop().remove()
    records = list(_models.values())
    _models.clear()
    for record in records:
        for hook in record.hooks:
            hook.remove()
    _param_owner.clear()
    _module_parent.clear()
    _local.__dict__.clear()
    _installed = False
    _optimizer_cache.clear()
    _mode_dependent_cache.clear()
    _report_unused_graphs(strict)


def _install_deep() -> None:
    global _deep
    _deep_hooks.append(nn.modules.module.register_module_forward_pre_hook(_deep_pre_hook))
    _deep = True


def _remove_deep() -> None:
    global _deep
    while _deep_hooks:
        _deep_hooks.pop().remove()
    _deep = False
    _covered[:] = [-1, -1, frozenset()]


# --------------------------------------------------------------------------------------------
# Finding models
# --------------------------------------------------------------------------------------------


def _forget_model(key: int, ref: weakref.ref[nn.Module]) -> None:
    global _models_version
    record = _models.get(key)
    if record is not None and record.ref is ref:
        del _models[key]
        _models_version += 1


def _note(module: nn.Module) -> None:
    """Start watching ``module`` (as a root: hooks on it, not on its submodules)."""
    global _models_version
    if id(module) in _models or not _installed:
        return
    with _lock:
        if id(module) in _models or not _installed:
            return
        key = id(module)
        record = _Model(weakref.ref(module, functools.partial(_forget_model, key)))
        record.hooks.append(module.register_forward_pre_hook(_root_pre_hook))
        # Always called, so that the per-thread depth stays right when a forward raises.
        record.hooks.append(module.register_forward_hook(_root_post_hook, always_call=True))
        _models[key] = record
        _models_version += 1


_note_safely = _findings.fail_open("model discovery")(_note)


def _noting(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an nn.Module method so that its outermost call notes the module it was called on."""

    def noting(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if getattr(_local, "inside", False):
            return original(self, *args, **kwargs)
        _local.inside = True
        try:
            result = original(self, *args, **kwargs)
        finally:
            _local.inside = False
        if _pending:
            _flush_pending()
        if id(self) not in _models:
            _note_safely(self)
        return result

    noting.__name__ = original.__name__
    noting.__qualname__ = original.__qualname__
    noting.__doc__ = original.__doc__
    noting.__wrapped__ = original  # type: ignore[attr-defined]
    noting._gradguard_wraps = original  # type: ignore[attr-defined]
    return noting


# Bumped whenever a parameter or submodule is registered anywhere: the watchdog's caches check it.
_structure = 0


def _forget_parameter(key: int, ref: weakref.ref[torch.Tensor]) -> None:
    entry = _param_owner.get(key)
    if entry is not None and entry[0] is ref:
        del _param_owner[key]


def _on_parameter_registered(module: nn.Module, _name: str, param: Any) -> None:
    global _structure
    _structure += 1
    if param is not None:
        key = id(param)
        ref = weakref.ref(param, functools.partial(_forget_parameter, key))
        _param_owner[key] = (ref, weakref.ref(module))


def _on_module_registered(module: nn.Module, _name: str, child: Any) -> None:
    global _structure
    _structure += 1
    if child is not None:
        _module_parent[child] = weakref.ref(module)


def _on_new_tree(roots: Sequence[nn.Module]) -> None:
    for root in roots:
        _note_safely(root)


def _root_of_parameter(param: torch.Tensor) -> nn.Module | None:
    entry = _param_owner.get(id(param))
    module = entry[1]() if entry is not None and entry[0]() is param else None
    if module is None or not any(p is param for p in module._parameters.values()):
        return None
    seen = {id(module)}
    while True:
        parent_ref = _module_parent.get(module)
        parent = parent_ref() if parent_ref is not None else None
        if parent is None or id(parent) in seen:
            return module
        if not any(child is module for child in parent._modules.values()):
            return module
        seen.add(id(parent))
        module = parent


# Deep mode: ids of every module inside a watched model, rebuilt when models or structure change.
# [models version, structure generation, ids]; replaced whole, so other threads never see it half.
_covered: list[Any] = [-1, -1, frozenset()]


def _deep_pre_hook(module: nn.Module, args: Any) -> None:
    if _is_compiling():
        return
    covered = _covered
    if covered[0] != _models_version or covered[1] != _structure:
        covered = _rebuild_covered()
    if id(module) in covered[2]:
        return
    _note_safely(module)
    _rebuild_covered()
    if id(module) in _models:
        # This call's instance pre-hooks were collected before the model was noted.
        _root_pre_hook(module, args)


def _rebuild_covered() -> list[Any]:
    global _covered
    ids: set[int] = set()
    for model in known_models():
        ids.update(map(id, model.modules()))
    _covered = [_models_version, _structure, frozenset(ids)]
    return _covered


# --------------------------------------------------------------------------------------------
# Where gradients were disabled (a bare torch.set_grad_enabled(False))
# --------------------------------------------------------------------------------------------


def _remembering_init(original: Callable[..., None]) -> Callable[..., None]:
    """``set_grad_enabled.__init__`` that remembers where the user switched gradients off."""

    def __init__(self: Any, mode: bool) -> None:
        original(self, mode)
        if _is_compiling():
            return
        try:
            caller = sys._getframe(1)
            if caller.f_globals.get("__name__", "").startswith("torch."):
                return  # torch.no_grad()/enable_grad() switching on enter and exit: scoped
            if mode:
                _local.disabled_by = None
                _local.disabled_at = None
            else:
                _local.disabled_by = self
                _local.disabled_at = _findings.user_site(caller)
        except Exception:  # fail open: remembering the site is a nicety
            pass

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


def _forgetting(original: Callable[..., Any]) -> Callable[..., Any]:
    """``__exit__``/``__call__``: a with-block or decorator switches only for its own body."""

    def forgetting(self: Any, *args: Any) -> Any:
        if getattr(_local, "disabled_by", None) is self:
            _local.disabled_by = None
            _local.disabled_at = None
        return original(self, *args)

    forgetting.__name__ = original.__name__
    forgetting.__wrapped__ = original  # type: ignore[attr-defined]
    return forgetting


def where_grad_disabled() -> str:
    """Where this thread's gradients were switched off by a bare call, or "" when not known."""
    site = getattr(_local, "disabled_at", None)
    if site is None or torch.is_grad_enabled():
        return ""
    return f"by torch.set_grad_enabled(False) at {site[0]}:{site[1]}"


def _where_grad_disabled() -> str:
    if torch.is_inference_mode_enabled():
        return "inside a torch.inference_mode() block"
    site = getattr(_local, "disabled_at", None)
    if site is not None:
        return (
            f"by torch.set_grad_enabled(False) at {site[0]}:{site[1]}, which was never turned "
            "back on"
        )
    return (
        "inside a torch.no_grad() block (or a function decorated with it, or a gradguard "
        "scope with mode='no_grad')"
    )


# --------------------------------------------------------------------------------------------
# GG002: a model in training mode runs forward with gradients disabled
# --------------------------------------------------------------------------------------------

# model -> (structure generation, answer). Not the state engine's tree cache: the watchdog looks
# at models that no scope ever held, and must not keep anything of theirs alive.
_mode_dependent_cache: weakref.WeakKeyDictionary[nn.Module, tuple[int, bool]] = (
    weakref.WeakKeyDictionary()
)


def _behaves_differently_in_training(module: nn.Module) -> bool:
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


def _mode_dependent(module: nn.Module) -> bool:
    cached = _mode_dependent_cache.get(module)
    if cached is not None and cached[0] == _structure:
        return cached[1]
    known = any(map(_behaves_differently_in_training, module.modules()))
    _mode_dependent_cache[module] = (_structure, known)
    return known


def _called_from_update_bn() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "update_bn" and code.co_filename.endswith("swa_utils.py"):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


@_findings.fail_open("train-mode-without-grad")
def _check_train_without_grad(module: nn.Module) -> None:
    if _findings.is_allowed("train-mode-without-grad") or not _mode_dependent(module):
        return
    if _called_from_update_bn():
        return
    site = _findings.user_site(sys._getframe(1))
    name = _model_name(module)
    _report(
        "train-mode-without-grad",
        f"{name} is in training mode but ran forward at {site[0]}:{site[1]} with gradients "
        f"disabled {_where_grad_disabled()}. Either an evaluation forgot eval() (BatchNorm "
        "running statistics were overwritten and dropout was active) or training resumed with "
        "gradients still off",
        "to evaluate, call model.eval() first (and model.train() after), or use "
        "`with gradguard.evaluating(model):`; to train, turn gradients back on; "
        "for an intended use (Monte-Carlo dropout, BatchNorm recalibration) wrap it in "
        "gradguard.allow('train-mode-without-grad')",
        site,
    )


def _model_name(module: nn.Module) -> str:
    """The class name, with the wrapped model's for DDP/DataParallel/torch.compile wrappers."""
    inner = getattr(module, "module", None)
    if not isinstance(inner, nn.Module):
        inner = getattr(module, "_orig_mod", None)
    if isinstance(inner, nn.Module):
        return f"{type(module).__name__}({type(inner).__name__})"
    return type(module).__name__


# --------------------------------------------------------------------------------------------
# GG001: a graph built in eval mode with gradients on, freed without being used by backward
# --------------------------------------------------------------------------------------------

_METADATA_KEY = "gradguard.graph_use"


class _GraphUse:
    """Lives in the metadata of a forward's output nodes: dies with the graph, knows if used."""

    __slots__ = ("__weakref__", "armed", "model", "site", "used")
    # Reached through the class, so a finalizer run at interpreter exit still finds it.
    sink: ClassVar[list[tuple[str, str, tuple[str, int]]]] = _pending

    def __init__(self, model: str, site: tuple[str, int]) -> None:
        self.model = model
        self.site = site
        self.used = False
        self.armed = True

    def mark_used(self, _grad_outputs: Any) -> None:
        self.used = True

    def __del__(self) -> None:
        if self.armed and not self.used:
            self.armed = False
            # No warning or exception from a finalizer: queue it for the next safe point.
            self.sink.append(("graph-in-inference", self.model, self.site))


_graphs: weakref.WeakSet[_GraphUse] = weakref.WeakSet()


def _output_nodes(output: Any) -> Iterator[Any]:
    if isinstance(output, torch.Tensor):
        if output.grad_fn is not None:
            yield output.grad_fn
        return
    if isinstance(output, dict):
        output = output.values()
    elif not isinstance(output, (tuple, list)):
        return
    for item in output:
        if isinstance(item, torch.Tensor) and item.grad_fn is not None:
            yield item.grad_fn


@_findings.fail_open("graph-in-inference")
def _track_graph(module: nn.Module, output: Any) -> None:
    nodes = [node for node in _output_nodes(output) if _METADATA_KEY not in node.metadata]
    if not nodes or _findings.is_allowed("graph-in-inference"):
        return
    use = _GraphUse(_model_name(module), _findings.user_site(sys._getframe(1)))
    for node in nodes:
        node.metadata[_METADATA_KEY] = use
        node.register_prehook(use.mark_used)
    _graphs.add(use)


def _graph_message(model: str, site: tuple[str, int], still_alive: bool) -> tuple[str, str]:
    fate = (
        "was still alive and unused when the watchdog was removed"
        if still_alive
        else "was freed without being used by backward or torch.autograd.grad"
    )
    return (
        f"{model} is in eval mode and ran forward at {site[0]}:{site[1]} with gradients "
        f"enabled; the autograd graph it built {fate}, so it only cost memory and time "
        "(a forgotten torch.no_grad(), or an eval output accumulated into a running total)",
        "wrap the evaluation in `with torch.no_grad():` (or `with gradguard.evaluating(model):`), "
        "or accumulate loss.item() instead of the loss tensor; if you need the graph "
        "(saliency, adversarial inputs) use evaluating(model, mode='grad') or "
        "gradguard.allow('graph-in-inference')",
    )


def _flush_pending() -> None:
    while _pending:
        try:
            check, model, site = _pending.pop(0)
        except IndexError:  # another thread took it
            return
        message, fix = _graph_message(model, site, still_alive=False)
        _report(check, message, fix, site)


def _report_unused_graphs(strict: bool | None) -> None:
    alive = [use for use in list(_graphs) if use.armed and not use.used]
    for use in list(_graphs):
        use.armed = False
    _graphs.clear()
    reports: list[tuple[str, tuple[str, int], bool]] = []
    while _pending:
        _check, model, site = _pending.pop(0)
        reports.append((model, site, False))
    reports.extend((use.model, use.site, True) for use in alive)
    for model, site, still_alive in reports:
        message, fix = _graph_message(model, site, still_alive)
        _findings.report("graph-in-inference", message, fix, site=site, strict=strict)


# --------------------------------------------------------------------------------------------
# The per-root forward hooks
# --------------------------------------------------------------------------------------------


class _Calls(threading.local):
    """Per thread: how deep in watched forwards we are (a watched model inside another)."""

    depth = 0
    installation = 0


_calls = _Calls()
_installation = 0


def _strip_copied_hooks(module: nn.Module) -> None:
    """Remove this module's watchdog hooks that no record owns (copied by deepcopy or pickle)."""
    for hooks in (module._forward_pre_hooks, module._forward_hooks):
        for key, hook in list(hooks.items()):
            if hook is _root_pre_hook or hook is _root_post_hook:
                del hooks[key]
                module._forward_hooks_always_called.pop(key, None)


def _root_pre_hook(module: nn.Module, _args: Any) -> None:
    if _is_compiling():
        return
    if id(module) not in _models:
        # A copy of a watched model (copy.deepcopy, torch.load) carries hooks that no record owns.
        _strip_copied_hooks(module)
        if not _installed:
            return
        _note_safely(module)
        if id(module) not in _models:
            return
    calls = _calls
    if calls.installation != _installation:
        calls.installation = _installation
        calls.depth = 0
    depth = calls.depth
    calls.depth = depth + 1
    if depth:
        return  # the outermost watched model speaks for this call
    if _pending:
        _flush_pending()
    if module.training and not torch.is_grad_enabled():
        _check_train_without_grad(module)


def _root_post_hook(module: nn.Module, _args: Any, output: Any) -> None:
    if _is_compiling():
        return
    calls = _calls
    depth = calls.depth - 1
    if depth > 0:
        calls.depth = depth
        return
    calls.depth = 0
    if not module.training and torch.is_grad_enabled():
        _track_graph(module, output)


# --------------------------------------------------------------------------------------------
# GG003: backward fails because gradients were disabled
# --------------------------------------------------------------------------------------------

_NO_GRAD_ERROR = "does not require grad"


@_findings.fail_open("backward-without-grad")
def _explain(error: RuntimeError, tensors: Any) -> None:
    """Raise GG003 chained to ``error`` when gradients being off explains it; else return."""
    if isinstance(error, _findings.GradGuardError) or _NO_GRAD_ERROR not in str(error):
        return
    first = tensors[0] if isinstance(tensors, (tuple, list)) and tensors else tensors
    inference = isinstance(first, torch.Tensor) and first.is_inference()
    if torch.is_grad_enabled() and not inference:
        return
    if inference:
        where = "under torch.inference_mode(), so it can never have a graph"
    else:
        where = "while gradients are disabled " + _where_grad_disabled()
    try:
        _report(
            "backward-without-grad",
            f"backward() failed because the loss was computed {where}; PyTorch only says "
            f"{str(error).splitlines()[0]!r}",
            "compute the loss with gradients enabled: run the training step outside the "
            "torch.no_grad()/inference_mode() block, or turn gradients back on with "
            "torch.set_grad_enabled(True) after the evaluation that disabled them",
        )
    except _findings.GradGuardError as explained:
        raise explained from error


def _explaining(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``Tensor.backward`` or ``torch.autograd.backward``: only the error path does work."""

    @functools.wraps(original)
    def backward(target: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(target, *args, **kwargs)
        except RuntimeError as error:
            if _is_compiling():
                raise
            try:
                _explain(error, target)
            except _findings.GradGuardError as explained:
                # The user's frames and PyTorch's own error matter here, not gradguard's internals.
                raise explained.with_traceback(None) from error
            raise

    return backward


# --------------------------------------------------------------------------------------------
# GG004 / GG005: the optimizer step
# --------------------------------------------------------------------------------------------


class _OptimizerView:
    """Which watched models own an optimizer's parameters (cached until something changes)."""

    __slots__ = ("all_owned", "key", "roots")

    def __init__(self, key: tuple[int, ...]) -> None:
        self.key = key
        self.roots: list[tuple[weakref.ref[nn.Module], list[torch.Tensor]]] = []
        self.all_owned = False


_optimizer_cache: weakref.WeakKeyDictionary[torch.optim.Optimizer, _OptimizerView] = (
    weakref.WeakKeyDictionary()
)


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _view_of(optimizer: torch.optim.Optimizer) -> _OptimizerView:
    count = sum(len(group["params"]) for group in optimizer.param_groups)
    key = (_models_version, _structure, len(optimizer.param_groups), count)
    view = _optimizer_cache.get(optimizer)
    if view is not None and view.key == key:
        return view
    params = _optimizer_params(optimizer)
    for param in params:
        root = _root_of_parameter(param)
        if root is not None and id(root) not in _models:
            _note(root)
    key = (_models_version, _structure, len(optimizer.param_groups), count)
    view = _OptimizerView(key)
    models = known_models()
    trees = [(model, frozenset(map(id, model.modules()))) for model in models]
    # Only the outermost watched models: a frozen submodule noted by its own eval() belongs
    # to the model around it.
    tops = [
        (model, ids)
        for model, ids in trees
        if not any(other is not model and id(model) in o_ids for other, o_ids in trees)
    ]
    owned: set[int] = set()
    for model, _ids in tops:
        mine = {id(p) for p in model.parameters()}
        stepped = [p for p in params if id(p) in mine]
        if stepped:
            view.roots.append((weakref.ref(model), stepped))
            owned.update(id(p) for p in stepped)
    view.all_owned = all(id(p) in owned for p in params)
    _optimizer_cache[optimizer] = view
    return view


def _optimizer_step_pre_hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if _is_compiling():
        return
    if _pending:
        _flush_pending()
    _check_step(optimizer, args, kwargs)


@_findings.fail_open("optimizer step")
def _check_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    # args holds the optimizer itself first, then step's own arguments.
    closure = args[1] if len(args) > 1 else kwargs.get("closure")
    if closure is None:
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    break
            else:
                continue
            break
        else:
            why = "backward() was not called since zero_grad(), or it ran on a loss without a graph"
            if not torch.is_grad_enabled():
                why += f" (gradients are disabled {_where_grad_disabled()})"
            _report(
                "step-without-gradients",
                f"{type(optimizer).__name__}.step() ran while none of its parameters has a "
                "gradient, so it changes nothing (plain SGD) or only applies weight decay and "
                f"momentum: {why}",
                "call loss.backward() before optimizer.step(), with gradients enabled",
            )
            return
    view = _view_of(optimizer)
    if not view.all_owned:
        return
    for ref, stepped in view.roots:
        model = ref()
        if model is None or model.training:
            continue
        if not any(p.grad is not None for p in stepped):
            continue
        name = _model_name(model)
        _report(
            "eval-mode-training",
            f"{type(optimizer).__name__}.step() is updating the parameters of {name}, which is "
            "in eval mode as a whole: it was left in eval after a validation, so dropout is off "
            "and BatchNorm uses and keeps frozen running statistics while it trains",
            "call model.train() before the training loop resumes (or evaluate with "
            "`with gradguard.evaluating(model):`, which puts the flags back)",
        )


# --------------------------------------------------------------------------------------------
# GRADGUARD_WATCH
# --------------------------------------------------------------------------------------------

WATCH_ON = _config.TRUE_VALUES
WATCH_DEEP = ("deep",)


def _watch_from_environment() -> WatchHandle | None:
    """Install the watchdog at import when ``GRADGUARD_WATCH`` asks for it.

    Raises:
        ValueError: ``GRADGUARD_WATCH`` holds something other than ``1/true/yes/on``, ``deep``
            or ``0/false/no/off/empty`` (any case).
    """
    raw = os.environ.get("GRADGUARD_WATCH", "")
    value = raw.strip().lower()
    if value in _config.FALSE_VALUES:
        return None
    if value not in WATCH_ON and value not in WATCH_DEEP:
        raise ValueError(
            f"GRADGUARD_WATCH={raw!r} is not a valid value: use one of "
            f"{', '.join(WATCH_ON)} to watch, 'deep' to watch with global module hooks, or one "
            f"of {', '.join(v for v in _config.FALSE_VALUES if v)} (or leave it empty) to not "
            "watch; any case is accepted"
        )
    handle = watch(deep=value in WATCH_DEEP)
    atexit.register(unwatch)
    return handle
