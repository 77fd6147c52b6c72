"""Installing and removing the watchdog: handles, patches, global hooks, ``GRADGUARD_WATCH``."""

from __future__ import annotations

import atexit
import contextlib
import warnings
import weakref
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from gradguard import _config, _findings, _state
from gradguard._watchdog import _built, _graphs, _reach
from gradguard._watchdog._backward import explaining, explaining_tensor_backward
from gradguard._watchdog._common import handles, local, lock, status, strict
from gradguard._watchdog._grad_switch import forgetting, remembering_init
from gradguard._watchdog._optimizer import optimizer_cache, optimizer_step_pre_hook
from gradguard._watchdog._train_mode import mode_dependent_cache

# (owner, attribute name, original value, our value) of every patch, in the order applied.
_patches: list[tuple[Any, str, Any, Any]] = []
_global_hooks: list[RemovableHandle] = []
# Deep mode's nn.Module.__call__ layer, while it is on.
_deep_patch: list[Any] = []
# Every deep-mode layer made, known by identity (a tool's functools.wraps copies attributes): one
# left under another tool's layer at unwatch() is back on top once that tool puts back what it
# found, and comes off then.
_deep_layers: weakref.WeakSet[Any] = weakref.WeakSet()


class WatchHandle:
    """An installation of the watchdog; :meth:`close` (or leaving its ``with`` block) removes it.

    The watchdog stays installed while any handle is open; :func:`unwatch` closes them all.

    Attributes:
        strict: the ``strict`` this handle was opened with (``None``: the environment decides).
        deep: whether this handle asked to see every module call (``deep=True``).
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
        with lock:
            if self.closed:
                return
            strict_now = strict()
            self.closed = True
            if self in handles:
                handles.remove(self)
            if not handles:
                _uninstall(strict_now)
            elif self.deep and not any(h.deep for h in handles):
                _warn_stuck(_remove_deep(), stacklevel=3)

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
        deep: also see every model at its first call, even one never touched by the calls
            above: a layer on ``nn.Module.__call__`` (no global hook) that every module call in
            the process passes; see the benchmark figures in ``docs/watchdog.md``.

    Raises:
        TypeError: ``strict`` is not a bool or None, or ``deep`` is not a bool.
        ValueError: ``GRADGUARD_STRICT`` holds something other than a known spelling (checked
            now, so that no finding later fails on it).

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
    _config.is_strict()  # raises ValueError for an invalid GRADGUARD_STRICT, before installing
    with lock:
        handle = WatchHandle(strict, deep)
        if not status.installed:
            _install()
        handles.append(handle)
        if deep and not status.deep:
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
    with lock:
        open_handles = list(handles)
        if not open_handles and not status.installed:
            return
        strict_now = strict()
        for handle in open_handles:
            handle.closed = True
        handles.clear()
        _uninstall(strict_now)


def is_watching() -> bool:
    """Whether the watchdog is installed now (by :func:`watch` or ``GRADGUARD_WATCH``).

    Example:
        >>> from gradguard import _watchdog
        >>> _watchdog.is_watching()
        False
    """
    return status.installed


def flush() -> None:
    """Report now the graphs found freed unused since the last watched forward (GG001).

    A graph dies in a finalizer, where nothing may warn or raise, so its finding waits for the
    next watched forward, optimizer step, ``train()``/``eval()`` call or :func:`unwatch`. Tools
    that attribute findings to a unit of work (a test) call ``gc.collect()`` then this.

    Raises:
        GradGuardError: strict, and such a graph was found.
    """
    if _graphs.pending:
        _graphs.flush_pending()


_set_grad_enabled_class = torch.autograd.grad_mode.set_grad_enabled


def _patch(owner: Any, name: str, value: Any) -> None:
    original = vars(owner)[name]
    _patches.append((owner, name, original, value))
    setattr(owner, name, value)


def _unpatch() -> list[str]:
    """Undo our patches, newest first; return those that other code has wrapped since."""
    stuck = []
    while _patches:
        owner, name, original, ours = _patches.pop()
        current = vars(owner).get(name)
        if current is ours:
            setattr(owner, name, original)
            continue
        # Another tool wrapped ours after watch(): putting the original back would remove its
        # layer too. Ours stays under it and passes every call straight on. PyTorch's own
        # process-lifetime wrappers (torch.compile wraps nn.Module.__init__/__setstate__ once
        # and for good) are expected there: nothing to warn about.
        if not str(getattr(current, "__module__", "")).startswith("torch."):
            stuck.append(f"{getattr(owner, '__module__', None) or owner.__name__}.{name}")
    return stuck


def _install() -> None:
    originals = {
        name: nn.Module.__dict__[name]
        for name in ("train", "eval", "to", "cuda", "cpu", "load_state_dict")
    }
    # A graph marked by a forward that was in flight in another thread when the watchdog was
    # last removed belongs to no installation: its finding must not surface in this one.
    _graphs.forget_all()
    try:
        for name, original in originals.items():
            wrap = _reach.noting_train if name == "train" else _reach.noting
            _patch(nn.Module, name, wrap(original))
        _patch(nn.Module, "__setstate__", _built.unpickling(nn.Module.__dict__["__setstate__"]))
        autograd_backward = torch.autograd.backward
        tensor_backward = explaining_tensor_backward(torch.Tensor.backward, autograd_backward)
        _patch(torch.Tensor, "backward", tensor_backward)
        _patch(torch.autograd, "backward", explaining(autograd_backward, "tensors"))
        # Tensor.backward goes straight to PyTorch's torch.autograd.backward past this wrapper.
        skips = getattr(tensor_backward, "_gradguard_skips", None)
        if skips is not None:
            skips(torch.autograd.backward)
        # Methods of the class, not the class itself: torch.compile recognises
        # torch.set_grad_enabled by identity, and traces it without calling __init__.
        switch = _set_grad_enabled_class
        _patch(switch, "__init__", remembering_init(switch.__dict__["__init__"]))
        _patch(switch, "__exit__", forgetting(switch.__dict__["__exit__"]))
        _patch(switch, "__call__", forgetting(switch.__dict__["__call__"]))
        inference = torch.autograd.grad_mode.inference_mode
        _patch(inference, "__enter__", _built.entering_inference(inference.__dict__["__enter__"]))
        module_hooks = nn.modules.module
        _global_hooks.append(register_optimizer_step_pre_hook(optimizer_step_pre_hook))
        _global_hooks.append(
            module_hooks.register_module_parameter_registration_hook(_reach.on_parameter_registered)
        )
        _global_hooks.append(
            module_hooks.register_module_module_registration_hook(_reach.on_module_registered)
        )
        # A model only ever called is seen from its construction (see _built).
        _global_hooks.append(
            module_hooks.register_module_parameter_registration_hook(_built.on_registered)
        )
        _global_hooks.append(
            module_hooks.register_module_module_registration_hook(_built.on_registered)
        )
        _state.tree_listener = _reach.on_new_tree
        status.session += 1
        status.installed = True
        for root in _state.known_roots():
            _reach.note_safely(root)
    except BaseException:
        _uninstall()
        raise


def _uninstall(strict: bool | None = None) -> None:
    stuck = _remove_deep()
    _state.tree_listener = None
    status.installed = False
    stuck += _unpatch()
    while _global_hooks:
        _global_hooks.pop().remove()
    stuck += _reach.forget_all()
    _built.forget_all()
    local.__dict__.clear()
    optimizer_cache.clear()
    mode_dependent_cache.clear()
    # A cache entry made by a step or forward still running in another thread lands after the
    # clearing: this makes it stale for every later watch().
    status.structure += 1
    _warn_stuck(stuck, stacklevel=4)
    _graphs.report_unused_graphs(strict)


def _warn_stuck(stuck: list[str], stacklevel: int) -> None:
    if stuck:
        warnings.warn(
            "gradguard.unwatch(): other code wrapped " + ", ".join(stuck) + " after watch(), so "
            "gradguard's layer could not be taken out from under it without removing that code's "
            "layer too; it stays there and passes every call straight on, checking nothing",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def _install_deep() -> None:
    _take_off_deep_layers()  # one left under a tool that has gone since
    ours = _reach.deep_call(nn.Module.__dict__["__call__"])
    _deep_layers.add(ours)
    _deep_patch.append(ours)
    setattr(nn.Module, "__call__", ours)  # noqa: B010  # mypy refuses assigning a method
    status.deep = True


def _take_off_deep_layers() -> list[Any]:
    """Take gradguard's deep-mode layers off the top of ``nn.Module.__call__``; return them."""
    removed = []
    top: Any = nn.Module.__dict__.get("__call__")
    while top in _deep_layers:
        removed.append(top)
        top = top.__wrapped__
        setattr(nn.Module, "__call__", top)  # noqa: B010  # as above
    return removed


def _remove_deep() -> list[str]:
    """Take deep mode's layer off; name it when other code wrapped it since (it stays, inert)."""
    status.deep = False
    _reach.reset_covered()
    removed = _take_off_deep_layers()
    stuck = []
    while _deep_patch:
        ours = _deep_patch.pop()
        top = nn.Module.__dict__.get("__call__")
        if ours not in removed and not str(getattr(top, "__module__", "")).startswith("torch."):
            stuck.append("torch.nn.modules.module.Module.__call__")
    return stuck


def watch_from_environment() -> WatchHandle | None:
    """Install the watchdog now when ``GRADGUARD_WATCH`` asks for it (removed again at exit).

    ``import gradguard`` uses :func:`gradguard._watchdog._deferred.watch_from_environment`
    instead, which waits for the program to import torch.

    Raises:
        ValueError: ``GRADGUARD_WATCH`` holds something other than ``1/true/yes/on``, ``deep``
            or ``0/false/no/off/empty`` (any case).
    """
    level = _config.watch_level()
    if level is None:
        return None
    handle = watch(deep=level == "deep")
    atexit.register(unwatch)
    return handle
