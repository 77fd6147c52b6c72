"""The scopes: ``evaluating``, ``frozen`` and ``allow``.

Each is a context manager and a decorator. As a decorator, every call enters a fresh scope, so
recursive and concurrent calls each get their own. One scope object may also be entered again while
it is already entered (in the same or another thread): every entry keeps its own state.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from gradguard import _findings, _layers, _state
from gradguard._decorators import scoped

F = TypeVar("F", bound=Callable[..., Any])
Mode = Literal["no_grad", "inference", "grad"]
MODES: tuple[str, ...] = ("no_grad", "inference", "grad")


def check_mode(mode: object, where: str) -> str:
    """Validate a grad mode name.

    Raises:
        ValueError: ``mode`` is not one of :data:`MODES`.
    """
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(
            f"{where} got mode={mode!r}; valid modes are 'no_grad' (torch.no_grad), "
            "'inference' (torch.inference_mode) and 'grad' (leave gradients as they are)"
        )
    return mode


def check_modules(modules: tuple[object, ...], where: str, *, allow_empty: bool = False) -> None:
    """Validate that every item is an ``nn.Module``.

    Raises:
        TypeError: none was given (unless ``allow_empty``), or an item is not an ``nn.Module``.
    """
    if not modules and not allow_empty:
        raise TypeError(
            f"{where} needs at least one torch.nn.Module, e.g. {where.split('(')[0]}(model)"
        )
    for index, module in enumerate(modules):
        if isinstance(module, (list, tuple)) and all(isinstance(m, nn.Module) for m in module):
            raise TypeError(
                f"{where} takes modules as separate arguments; argument {index} is a "
                f"{type(module).__name__} of {len(module)} module(s): unpack it, e.g. "
                f"{where.split('(')[0]}(*models)"
            )
        if callable(module) and not isinstance(module, nn.Module) and index == 0:
            name = where.split("(")[0]
            also = (
                ", or use @gradguard.inference_fn, which finds the models among the call's "
                "arguments"
                if name == "evaluating"
                else ""
            )
            raise TypeError(
                f"{where} needs the modules it works on, not a function ({module!r:.60}): "
                f"write @{name}(model){also}"
            )
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"{where} takes torch.nn.Module objects; argument {index} is "
                f"{type(module).__module__}.{type(module).__qualname__} ({module!r:.80})"
            )


def describe(modules: tuple[nn.Module, ...]) -> str:
    """A short human name for a set of models: their class names."""
    return ", ".join(type(m).__name__ for m in modules)


_entries_lock = threading.Lock()


class _Scope:
    """Shared machinery: entry stacks, decorator use, exception-safe exit from any thread."""

    _what = "scope"

    def __init__(self) -> None:
        # (thread, token) per open entry, in entry order: exit takes the latest entry of its own
        # thread, or, exited from another thread (a generator finalised elsewhere, a framework
        # that enters and exits on different pool threads), the latest entry of all.
        self._entries: list[tuple[int, Any]] = []

    def _enter(self) -> Any:
        raise NotImplementedError

    def _exit(self, token: Any, failing: bool) -> None:
        raise NotImplementedError

    def _clone(self) -> _Scope:
        raise NotImplementedError

    def _enter_compiling(self) -> Any:
        raise RuntimeError(
            f"gradguard.{self._what}(...) cannot be traced by torch.compile: use it around the "
            "compiled call instead of inside the compiled function"
        )

    def _exit_compiling(self, token: Any) -> None:
        raise NotImplementedError

    def __enter__(self) -> None:
        if _is_compiling():
            # Locks, weak references and thread ids cannot be traced: a plain path instead.
            self._entries.append((0, self._enter_compiling()))
            return
        token = self._enter()
        self._entries.append((threading.get_ident(), token))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        entries = self._entries
        if _is_compiling():
            self._exit_compiling(entries.pop()[1])
            return
        ident = threading.get_ident()
        with _entries_lock:  # one scope object may be exited by several threads at once
            if not entries:
                raise RuntimeError(f"{self._what}(...) exited more often than it was entered")
            for position in range(len(entries) - 1, -1, -1):
                if entries[position][0] == ident:
                    break
            else:
                position = len(entries) - 1
            token = entries.pop(position)[1]
        self._exit(token, exc_type is not None)

    def _exit_entry(self, token: Any) -> None:
        """Exit the open entry ``token`` of this scope as its ``with`` would have, normally."""
        with _entries_lock:
            for position in range(len(self._entries) - 1, -1, -1):
                if self._entries[position][1] is token:
                    del self._entries[position]
                    break
            else:
                raise RuntimeError(f"{self._what}(...) has no such open entry")
        self._exit(token, False)

    def __call__(self, fn: F) -> F:
        return scoped(fn, self._clone, self._what)


_is_compiling = torch.compiler.is_compiling


def compiling_enter(modules: tuple[nn.Module, ...], mode: str) -> Any:
    """Inside ``torch.compile``: eval mode and the grad mode, in code that dynamo can trace.

    No refcounting, no checks: every module's own flag is kept in a plain list and put back by
    :func:`compiling_exit`. Concurrency is the compiled program's.
    """
    saved = [(m, m.training) for root in modules for m in root.modules()]
    for module, _flag in saved:
        module.training = False
    grad_before = torch.is_grad_enabled()
    if mode != "grad":
        # inference_mode cannot be traced either; within a compiled graph no_grad computes the
        # same values (inference tensors are an eager-mode optimisation).
        torch.set_grad_enabled(False)  # gradguard: ignore[GG104] undone by compiling_exit
    return (saved, grad_before)


def compiling_exit(token: Any) -> None:
    """Undo :func:`compiling_enter`."""
    saved, grad_before = token
    torch.set_grad_enabled(grad_before)
    for module, flag in saved:
        module.training = flag


def _report_changed(check_site_failing: bool, message: str, fix: str) -> None:
    """Report GG006; while an exception is already propagating, never replace it."""
    if not check_site_failing:
        _findings.report("scope-state-changed", message, fix)
        return
    # The user's own exception is the one that matters here: a strict finding must not replace it.
    with contextlib.suppress(Exception):
        _findings.report("scope-state-changed", message, fix)


class _GraphWatch:
    """GG001 inside a scope: a scope's model returned a graph from its forward while it is open.

    While a scope is open in a thread its watch is on that thread's stack (``None`` for
    ``mode="grad"``, which asks for graphs); the models of an open ``evaluating`` scope are
    checked by their class's ``__call__`` (:func:`hook_roots`; nothing is put on the models),
    which asks the innermost watch of the thread running the forward
    (``@inference_fn`` checks its results instead). No saved-tensors hook is pushed:
    it would make ``torch.func`` transforms inside the scope fail, and it would show in the
    hook stack of code running while a generator or coroutine is suspended.
    """

    __slots__ = ("mode", "reported", "what")

    def __init__(self, what: str, mode: str) -> None:
        self.what = what
        self.mode = mode
        self.reported = False

    def report_graph(self, module: nn.Module) -> None:
        self.reported = True
        _findings.report(
            "graph-in-inference",
            f"an autograd graph was recorded inside {self.what} (mode={self.mode!r}): "
            f"{type(module).__name__} ran forward with gradients turned back on inside the "
            "scope, so its output keeps activations alive for a backward that inference never "
            "runs",
            "remove the torch.enable_grad()/set_grad_enabled(True) from inside the scope, "
            "or use mode='grad' if you need gradients there (saliency, adversarial inputs)",
        )


_watches = threading.local()
_grad_enabled = torch.is_grad_enabled
_functorch_active = torch._C._are_functorch_transforms_active


def open_watches() -> list[_GraphWatch | None]:
    """This thread's stack of open scopes' GG001 watches (innermost last)."""
    stack: list[_GraphWatch | None] | None = getattr(_watches, "stack", None)
    if stack is None:
        stack = _watches.stack = []
    return stack


def close_watch(stack: list[_GraphWatch | None], watch: _GraphWatch | None) -> None:
    """Take ``watch`` off ``stack`` (the stack of the thread it was opened in)."""
    if stack and stack[-1] is watch:
        stack.pop()
        return
    for position in range(len(stack) - 1, -1, -1):
        if stack[position] is watch:
            del stack[position]
            return


def graph_tensor(value: object) -> torch.Tensor | None:
    """A tensor with a ``grad_fn`` in ``value`` or one level inside a tuple, list or dict."""
    if isinstance(value, torch.Tensor):
        return value if value.grad_fn is not None else None
    if isinstance(value, (tuple, list)):
        items: Any = value
    elif isinstance(value, dict):
        items = value.values()
    else:
        return None
    for item in items:
        if isinstance(item, torch.Tensor) and item.grad_fn is not None:
            return item
    return None


def _forward_hook(module: nn.Module, _args: Any, output: Any) -> None:
    """After a forward of an open scope's model: GG001 when its output is a graph inside it."""
    if not _grad_enabled() or _is_compiling():  # the common case first: gradients are off
        return
    stack = getattr(_watches, "stack", None)
    if not stack:
        return
    watch = stack[-1]
    if watch is None or watch.reported or _functorch_active():
        # mode="grad", already reported, or a torch.func transform (its own graphs, on purpose)
        return
    if graph_tensor(output) is not None:
        watch.report_graph(module)


_hook_lock = threading.Lock()
# id(root) -> how many open scope entries watch it: the instances the class's __call__ checks.
_hooked: dict[int, int] = {}


class _ClassLayer:
    """gradguard's ``__call__`` on one class, and how many open scope entries its instances hold.

    ``parked``: no scope is open on the class, and the layer is still on it, passing every call
    straight on; the next scope uses it again, and the first call of an instance outside any
    scope on the class takes it off (:func:`_unpark`). ``stuck``: parked under other code's
    ``__call__``, which keeps it on; it comes off at the first call once that code put it back
    on top (as a ``mock.patch.object`` ending does). Written under :data:`_hook_lock` only;
    the layer reads them without the lock, and :func:`_unpark` reads them again under the lock.
    """

    __slots__ = ("inner", "layer", "open", "parked", "stuck")

    def __init__(self) -> None:
        self.open = 0
        self.parked = False
        self.stuck = False
        self.layer: Any = None
        self.inner: Any = None  # an _layers.Inner once the layer is made


# Classes with gradguard's __call__ on them: a scope open on one of their instances, or parked.
_class_calls: dict[type, _ClassLayer] = {}
# Classes whose __call__ other code wrapped on top of ours when it was to come off: ours stays
# under theirs (it passes every call straight on) and is used again by the next scope.
_stuck_calls: dict[type, _ClassLayer] = {}


def _watching_call(cls: type, state: _ClassLayer, inner: _layers.Inner) -> Callable[..., Any]:
    """A ``__call__`` for ``cls``: the class's own call, then GG001 for an open scope's root."""
    # The class above that defines __call__ is asked at every call, not remembered: torch.fx
    # patches nn.Module.__call__ while it traces.
    owner = next(base for base in cls.__mro__[1:] if "__call__" in base.__dict__)
    hooked = _hooked

    def __call__(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        own = inner.own
        call = owner.__call__ if own is _layers.ABSENT else own
        # Compiling first: torch.compile traces this function and must see only the call (and
        # a class is never changed while it compiles).
        if _is_compiling():
            return call(self, *args, **kwargs)
        if state.parked:
            _unpark(cls, state)
        output = call(self, *args, **kwargs)
        if _grad_enabled() and id(self) in hooked:
            _forward_hook(self, args, output)
        return output

    return __call__


def _unpark(cls: type, state: _ClassLayer) -> None:
    """Take the parked layer ``state`` off ``cls``: one of its instances ran outside any scope.

    A training loop after a validation scope pays this once, at its first forward, and then runs
    on the class's own ``__call__``. Never waits: while another thread enters or leaves a scope,
    the lock is busy and a later call takes the layer off (it passes calls on until then).
    """
    if state.stuck and not _layers.is_layer(cls.__dict__.get("__call__")):
        return  # other code's call is still on top: the lock is not asked for at every call
    if not _hook_lock.acquire(blocking=False):
        return
    try:
        if state.parked:  # else a scope opened on the class since the layer looked, or it is off
            _take_off_parked(cls, state)
    finally:
        _hook_lock.release()


def _take_off_parked(cls: type, state: _ClassLayer) -> None:
    """Take the parked layer off ``cls`` (under :data:`_hook_lock`); kept inert if it cannot."""
    if _class_calls.get(cls) is state:
        del _class_calls[cls]
    try:
        removed = _layers.take_off(cls, state.layer, state.inner)
    except Exception:  # a class refusing the change keeps ours, inert: the call goes on
        state.parked = state.stuck = False
        _stuck_calls[cls] = state
        return
    if removed:
        state.parked = state.stuck = False
        if _stuck_calls.get(cls) is state:
            del _stuck_calls[cls]
    elif not state.stuck:
        # Still parked: tried again at a call once the other code's layer is gone.
        state.stuck = True
        _stuck_calls[cls] = state


def hook_roots(modules: tuple[nn.Module, ...]) -> list[tuple[int, type]]:
    """Watch each of ``modules`` for GG001 until :func:`unhook_roots` (counted per instance).

    Nothing is put on the models (a model saved, pickled or copied inside the scope is what it
    is outside): while a scope is open on an instance, its class has gradguard's ``__call__``,
    which checks the output of the watched instances only and passes others straight on. A
    layer parked on the class by an earlier scope is used again: the class is not changed.
    """
    hooked: list[tuple[int, type]] = []
    with _hook_lock:
        for root in modules:
            cls = type(root)
            if cls is nn.Module:
                continue  # a bare Module has no forward; every model's calls would pay for it
            key = id(root)
            _hooked[key] = _hooked.get(key, 0) + 1
            state = _class_calls.get(cls) or _stuck_calls.pop(cls, None)
            if state is not None and not state.open and not _layers.reaches(cls, state.layer):
                # Other code put back the call it found under our idle layer (a
                # mock.patch.object of __call__ ending): that layer is called no more.
                _class_calls.pop(cls, None)
                _layers.forget(state.layer)
                state = None
            if state is None:
                state = _ClassLayer()
                state.layer, state.inner = _layers.put_on(
                    cls, functools.partial(_watching_call, cls, state)
                )
            _class_calls[cls] = state
            state.open += 1
            state.parked = state.stuck = False
            hooked.append((key, cls))
    return hooked


def unhook_roots(hooked: list[tuple[int, type]]) -> None:
    """Undo :func:`hook_roots` (from any thread).

    The last scope on a class leaves its layer parked there: changing a class costs every call
    site that depends on it its specialisation, so a loop of scopes changes it once. The first
    call of an instance outside any scope on the class gives the class its call back.
    """
    with _hook_lock:
        for key, cls in hooked:
            count = _hooked[key] - 1
            if count:
                _hooked[key] = count
            else:
                del _hooked[key]
            state = _class_calls[cls]
            state.open -= 1
            if not state.open:
                state.parked = True


def take_off_parked() -> None:
    """Take every parked layer off its class now, as a call outside the scopes would.

    For test suites that start each test from the classes as they were defined. Layers of open
    scopes stay.
    """
    with _hook_lock:
        for cls, state in [(c, s) for c, s in _class_calls.items() if s.parked]:
            _take_off_parked(cls, state)
        for cls, state in list(_stuck_calls.items()):
            _take_off_parked(cls, state)


def hooked_roots() -> list[nn.Module]:
    """Every live model a scope was entered on that is still watched for GG001 now."""
    return [root for root in _state.known_roots() if id(root) in _hooked]


_GRAPH_WANTED = ("graph-in-inference",)


class _EvalToken:
    __slots__ = (
        "allowed",
        "deferred",
        "evals",
        "grad_before",
        "grad_ctx",
        "hold",
        "hooked",
        "inherited",
        "optimizers",
        "scope",
        "task",
        "thread",
        "watch",
        "watches",
    )

    def __init__(self, scope: evaluating) -> None:
        # The scope is kept for an entry never exited (the scope object itself dropped, as in
        # ``evaluating(model).__enter__()``): :func:`exit_leaked_entries` exits it as ``with``
        # would have.
        self.scope = scope
        self.thread = threading.get_ident()
        self.evals: list[_EvalToken] | None = None
        self.inherited = False
        self.deferred: list[Any] = []
        self.task = ""
        self.allowed: dict[str, int] | None = None
        self.grad_before = True
        self.hold: _state.Hold | None = None
        self.grad_ctx: Any = None
        self.hooked: list[tuple[int, type]] | None = None
        self.watches: list[_GraphWatch | None] | None = None
        self.watch: _GraphWatch | None = None
        self.optimizers: list[Any] = []


# id(optimizer) -> [count, was in train mode, optimizer]
_optimizer_counts: dict[int, list[Any]] = {}


def _optimizer_in_train_mode(optimizer: Any) -> bool:
    groups = getattr(optimizer, "param_groups", None)
    if groups and isinstance(groups[0], dict) and "train_mode" in groups[0]:
        return bool(groups[0]["train_mode"])
    return True


def _switchable(optimizer: object) -> bool:
    return callable(getattr(optimizer, "eval", None)) and callable(
        getattr(optimizer, "train", None)
    )


def _check_optimizers(optimizers: object) -> tuple[Any, ...]:
    """Validate ``optimizers=``: one optimizer, or a list or tuple of them.

    Raises:
        TypeError: anything else, naming what was given and what is valid.
    """
    valid = (
        "evaluating(optimizers=...) takes an optimizer or a list or tuple of them "
        "(torch.optim.Optimizer objects, or objects with callable .eval() and .train() such as "
        "schedule-free optimizers)"
    )
    if _switchable(optimizers) or isinstance(optimizers, torch.optim.Optimizer):
        return (optimizers,)
    if not isinstance(optimizers, (list, tuple)):
        raise TypeError(f"{valid}; got {type(optimizers).__qualname__} ({optimizers!r:.80})")
    for index, optimizer in enumerate(optimizers):
        if not (_switchable(optimizer) or isinstance(optimizer, torch.optim.Optimizer)):
            raise TypeError(
                f"{valid}; item {index} is {type(optimizer).__qualname__} ({optimizer!r:.80})"
            )
    return tuple(optimizers)


class evaluating(_Scope):
    """Put models in eval mode with gradients off, then put everything back exactly.

    On enter, every submodule of every given module is switched to eval (a module that
    overrides ``train()`` has its override called, as ``model.eval()`` would), and the grad mode
    of ``mode`` is entered. On exit, normal or by exception, each submodule gets back its *own*
    ``training`` flag (a frozen BatchNorm stays in eval, a model that was in eval stays in eval)
    and the grad mode from before comes back. Also works as a decorator; every call gets a fresh
    scope.

    Thread locality: the grad mode is thread local, but ``module.training`` is shared by all
    threads. Scopes over one model in many threads keep it in eval while any of them is open, and
    the last one to close restores the original flags. Exited on another thread than it was
    entered on, the scope restores the flags but cannot put back the entering thread's grad mode
    (which stays off) and leaves the exiting thread's alone. The grad mode is per thread, not per
    ``asyncio`` task: held across an ``await`` while another task's scope opens and closes, the
    grad mode is handed over so that it ends right, and GG006 names the task (use
    ``@inference_fn`` on the coroutine instead). Inside ``torch.compile`` a traceable path is
    taken (``"inference"`` runs as ``no_grad``).

    Args:
        *modules: the models (any ``nn.Module``, including ``DistributedDataParallel`` and
            ``torch.compile`` results) to hold in eval.
        mode: ``"no_grad"`` (``torch.no_grad``), ``"inference"`` (``torch.inference_mode``) or
            ``"grad"`` (gradients left as they are: eval mode for saliency or adversarial work).
        optimizers: one optimizer or a list or tuple of them; those with callable
            ``.eval()``/``.train()`` (schedule-free optimizers) are switched to eval on enter and
            back on exit; plain optimizers are accepted and left alone.

    Raises:
        TypeError: no module, or something that is not an ``nn.Module``, or an optimizer that is
            neither a ``torch.optim.Optimizer`` nor has ``.eval()``/``.train()``; on enter, a
            ``torch.export`` module exported in training mode (nothing is changed).
        ValueError: an unknown ``mode``.
        Exception: whatever a module's ``train()`` override raises: on enter, after everything
            was put back; on exit, after every other flag was restored.

    Warns:
        ScopeStateChangedWarning: (GG006) code inside the scope switched a managed module back
            to training or changed the grad mode; it is put right, then reported.
        GraphInInferenceWarning: (GG001) an autograd graph was recorded inside a ``"no_grad"`` or
            ``"inference"`` scope.

    Example:
        >>> import torch, gradguard
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())
        >>> with gradguard.evaluating(model):
        ...     out = model(torch.randn(2, 4))
        >>> model.training, out.requires_grad
        (True, False)
    """

    _what = "evaluating"

    def __init__(
        self,
        *modules: nn.Module,
        mode: Mode = "no_grad",
        optimizers: Any = (),
    ) -> None:
        super().__init__()
        check_modules(modules, "evaluating(...)")
        check_mode(mode, "evaluating(...)")
        checked = _check_optimizers(optimizers)
        self.modules: tuple[nn.Module, ...] = modules
        self.mode: str = mode
        self.optimizers: tuple[Any, ...] = tuple(o for o in checked if _switchable(o))
        self._label = f"evaluating({describe(modules)})"

    def _clone(self) -> evaluating:
        return evaluating(*self.modules, mode=self.mode, optimizers=self.optimizers)  # type: ignore[arg-type]

    def _enter_compiling(self) -> Any:
        return compiling_enter(self.modules, self.mode)

    def _exit_compiling(self, token: Any) -> None:
        compiling_exit(token)

    def _enter(self) -> _EvalToken:
        token = _EvalToken(self)
        try:
            token.hold = _state.hold_eval(_state.tree_of(self.modules))
            for optimizer in self.optimizers:
                _hold_optimizer(optimizer)
                token.optimizers.append(optimizer)
            token.grad_before = torch.is_grad_enabled()
            token.watches = open_watches()
            if self.mode == "grad":
                # mode="grad" asks for graphs in eval mode: GG001 stays silent in this thread.
                token.allowed = _findings.push_allowed(_GRAPH_WANTED)
                token.watches.append(None)
            else:
                if self.mode == "no_grad":
                    torch.set_grad_enabled(False)
                else:
                    token.grad_ctx = torch.inference_mode()
                    token.grad_ctx.__enter__()
                token.watch = _GraphWatch(self._label, self.mode)
                token.watches.append(token.watch)
                token.hooked = hook_roots(self.modules)
            token.evals = _open_evals()
            token.evals.append(token)
            token.task = _task_name()
        except BaseException:
            self._exit(token, True)
            raise
        return token

    def _exit(self, token: _EvalToken, failing: bool) -> None:
        grad_changed = ""
        # The grad mode is thread local: exited from another thread, the entering thread's grad
        # mode cannot be put back from here (and this thread's must not be touched).
        same_thread = token.thread == threading.get_ident()
        later: _EvalToken | None = None
        on_top = True
        try:
            if token.hooked is not None:
                unhook_roots(token.hooked)
            if token.watches is not None:
                close_watch(token.watches, token.watch)
            if token.evals is not None:
                on_top, later = _close_eval(token)
            # Exited while a scope entered after it is still open (two tasks interleaving their
            # scopes across awaits): what this scope would put back is handed to that later
            # scope, which puts it back when it closes; this thread's grad mode stays that
            # scope's until then.
            restore = same_thread and on_top
            if token.allowed is not None:
                _findings.pop_allowed(_GRAPH_WANTED, token.allowed)
                # mode="grad" leaves the grad mode alone, and so must the code inside it.
                if restore:
                    grad_changed = grad_mode_changed("grad", token.grad_before)
                    if grad_changed:
                        torch.set_grad_enabled(token.grad_before)
                        if token.inherited:
                            grad_changed = ""  # handed over by an interleaved scope: reported
            elif token.grad_ctx is not None:
                if restore:
                    grad_changed = grad_mode_changed(self.mode)
                    token.grad_ctx.__exit__(None, None, None)
                elif later is not None and same_thread:
                    later.deferred.append(token.grad_ctx)
                elif not same_thread:
                    # The inference-mode guard restores the state of whichever thread frees it:
                    # never let it be freed here. The entering thread keeps inference mode on.
                    _orphaned_guards.append(token.grad_ctx)
            elif restore and token.evals is not None:
                if torch.is_grad_enabled() and not token.inherited:
                    grad_changed = grad_mode_changed(self.mode)
                torch.set_grad_enabled(token.grad_before)
            if restore:
                while token.deferred:
                    token.deferred.pop().__exit__(None, None, None)
        finally:
            changed: list[nn.Module] = []
            try:
                if token.hold is not None:
                    changed = _state.release_eval(token.hold)
            finally:
                for optimizer in reversed(token.optimizers):
                    _release_optimizer(optimizer)
        if changed or grad_changed:
            report_eval_changes(self._label, self.mode, changed, grad_changed, failing)
        if later is not None and same_thread:
            _report_interleaved(self._label, token.task, later, failing)


_evals = threading.local()
_orphaned_guards: list[Any] = []


def _open_evals() -> list[_EvalToken]:
    stack: list[_EvalToken] | None = getattr(_evals, "stack", None)
    if stack is None:
        stack = _evals.stack = []
    return stack


def exit_leaked_entries(leaked: dict[int, int]) -> list[str]:
    """Exit, as their ``with`` would have, this thread's open scopes holding a leaked hold.

    For cleanup after code that entered a scope and never exited it (the pytest plugin between
    tests): ``leaked`` maps ``id(hold)`` to how many entries too many hold it, and is counted
    down. Innermost first, each found entry is exited normally, which puts back the training
    flags, this thread's grad mode, the GG001 hook and watch, and optimizers switched to eval;
    what its exit reports is silenced (the misuse is reported by the caller). Entries of other
    threads are left alone: their grad mode is not this thread's to put back.

    Returns:
        The labels of the scopes exited, e.g. ``["evaluating(Sequential)"]``.
    """
    exited: list[str] = []
    stack = _open_evals()
    for token in reversed(list(stack)):
        hold = token.hold
        if hold is None or leaked.get(id(hold), 0) <= 0:
            continue
        leaked[id(hold)] -= 1
        scope = token.scope
        checks = tuple(_findings.CHECKS)
        allowed = _findings.push_allowed(checks)
        try:
            scope._exit_entry(token)
        except Exception:  # cleanup for later code must not fail it; the caller releases
            pass
        finally:
            _findings.pop_allowed(checks, allowed)
        exited.append(scope._label)
    return exited


def _task_name() -> str:
    asyncio = sys.modules.get("asyncio")  # not imported: no event loop can be running
    if asyncio is None:
        return ""
    loop = asyncio._get_running_loop()
    if loop is None:
        return ""
    task = asyncio.current_task(loop)
    return "" if task is None else f"task {task.get_name()!r}"


def _close_eval(token: _EvalToken) -> tuple[bool, _EvalToken | None]:
    """Take ``token`` off its thread's stack: (was it the innermost, the scope entered after it).

    What ``token`` would restore is handed to that later scope (mode="grad" restores nothing).
    """
    stack = token.evals
    assert stack is not None
    if stack and stack[-1] is token:
        stack.pop()
        return True, None
    for position in range(len(stack) - 1, -1, -1):
        if stack[position] is token:
            del stack[position]
            later = stack[position] if position < len(stack) else None
            if later is None or token.allowed is not None:
                return False, None
            later.grad_before = token.grad_before
            later.inherited = True
            later.deferred.extend(token.deferred)
            return False, later
    return True, None


def _report_interleaved(label: str, task: str, later: _EvalToken, failing: bool) -> None:
    where = f" in {task}" if task else ""
    other = f" (entered in {later.task})" if later.task else ""
    _report_changed(
        failing,
        f"{label} exited{where} while a scope entered after it{other} is still open in this "
        "thread: `with` scopes held across an `await` interleave with other tasks' scopes, and "
        "the grad mode is per thread, not per task (each exit would put back what the other "
        "task had set, leaving gradients disabled on the event loop); the grad mode from before "
        "this scope is restored when the later one closes",
        "decorate the coroutine with @gradguard.inference_fn, which holds the scope only while "
        "the coroutine runs, or do not await inside the with-block",
    )


def grad_mode_changed(mode: str, grad_before: bool = True) -> str:
    """What code inside an open scope of ``mode`` did to its grad mode; "" when nothing.

    ``grad_before`` is the grad mode when a ``mode="grad"`` scope was entered (it keeps it).
    """
    if mode == "no_grad" and torch.is_grad_enabled():
        return "gradients were re-enabled"
    if mode == "inference" and not torch.is_inference_mode_enabled():
        return "inference mode was switched off"
    if mode == "grad" and torch.is_grad_enabled() is not grad_before:
        return "gradients were disabled" if grad_before else "gradients were enabled"
    return ""


def report_eval_changes(
    label: str, mode: str, changed: list[nn.Module], grad_changed: str, failing: bool
) -> None:
    """Report GG006 for modules switched back to training and for a grad mode changed."""
    if changed:
        names = ", ".join(sorted({type(m).__name__ for m in changed}))
        _report_changed(
            failing,
            f"code inside {label} switched {len(changed)} module(s) back to training "
            f"mode ({names}): from there to the end of the scope they ran in training mode "
            "(dropout active, BatchNorm statistics updated); at exit each module got its own "
            "flag back",
            "move model.train() after the with-block (or after the decorated call); "
            "the scope restores the training flags itself",
        )
    if grad_changed:
        _report_changed(
            failing,
            f"{grad_changed} inside {label} (mode={mode!r}) and not turned back; "
            "the grad mode from before the scope was restored at exit",
            "use a nested `with torch.no_grad():` block instead of torch.set_grad_enabled(False)"
            if grad_changed == "gradients were disabled"
            else "use a nested `with torch.enable_grad():` block instead of "
            "torch.set_grad_enabled(True), or use mode='grad'",
        )


def _hold_optimizer(optimizer: Any) -> None:
    with _state._lock:
        entry = _optimizer_counts.get(id(optimizer))
        if entry is not None:
            entry[0] += 1
            return
        was_training = _optimizer_in_train_mode(optimizer)
        _optimizer_counts[id(optimizer)] = [1, was_training, optimizer]
    if was_training:
        # User code: never under the engine's lock.
        try:
            optimizer.eval()
        except BaseException:
            with _state._lock:
                del _optimizer_counts[id(optimizer)]
            raise


def _release_optimizer(optimizer: Any) -> None:
    with _state._lock:
        entry = _optimizer_counts[id(optimizer)]
        entry[0] -= 1
        if entry[0] > 0:
            return
        del _optimizer_counts[id(optimizer)]
    if entry[1]:
        optimizer.train()


class _FrozenToken:
    __slots__ = ("eval_hold", "params")

    def __init__(self) -> None:
        self.params: _state.ParamHold | None = None
        self.eval_hold: _state.Hold | None = None


class frozen(_Scope):
    """Freeze parameters for a block (``requires_grad=False``), then give each its own flag back.

    For fine-tuning a subset: parameters of the given modules stop requiring gradients while the
    scope is open and get back their *own* ``requires_grad`` on exit, normal or by exception. With
    ``eval=True`` the modules are also held in eval mode (freezing BatchNorm statistics and
    dropout) and their training flags are restored exactly. The grad mode is not touched. Also works
    as a decorator; every call gets a fresh scope.

    Thread locality: ``requires_grad`` and ``module.training`` are shared by all threads; scopes
    over the same parameters in many threads are counted, and the last one restores. The scope
    may be exited on another thread than the one that entered it. Not traceable by
    ``torch.compile``: use it around the compiled call.

    Args:
        *modules: the modules whose parameters to freeze.
        eval: also hold the modules in eval mode.

    Raises:
        TypeError: no module, or something that is not an ``nn.Module``.
        Exception: whatever a parameter or ``train()`` override raises when it refuses to switch:
            on enter after everything was given back, on exit after the rest was restored.

    Warns:
        ScopeStateChangedWarning: (GG006) code inside the scope turned ``requires_grad`` back on
            or switched a held module to training; it is put right, then reported.

    Example:
        >>> import torch, gradguard
        >>> backbone, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
        >>> with gradguard.frozen(backbone, eval=True):
        ...     loss = head(backbone(torch.randn(2, 4))).sum()
        >>> backbone.weight.requires_grad
        True
    """

    _what = "frozen"

    def __init__(self, *modules: nn.Module, eval: bool = False) -> None:
        super().__init__()
        check_modules(modules, "frozen(...)")
        if not isinstance(eval, bool):
            raise TypeError(f"frozen(eval=...) takes True or False, not {eval!r}")
        self.modules: tuple[nn.Module, ...] = modules
        self.eval: bool = eval
        self._label = f"frozen({describe(modules)})"

    def _clone(self) -> frozen:
        return frozen(*self.modules, eval=self.eval)

    def _enter(self) -> _FrozenToken:
        token = _FrozenToken()
        try:
            token.params = _state.hold_frozen(_state.unique_parameters(self.modules))
            if self.eval:
                token.eval_hold = _state.hold_eval(_state.tree_of(self.modules))
        except BaseException:
            self._exit(token, True)
            raise
        return token

    def _exit(self, token: _FrozenToken, failing: bool) -> None:
        changed_params: list[torch.Tensor] = []
        changed_modules: list[nn.Module] = []
        try:
            if token.eval_hold is not None:
                changed_modules = _state.release_eval(token.eval_hold)
        finally:
            if token.params is not None:
                changed_params = _state.release_frozen(token.params)
        if changed_params:
            _report_changed(
                failing,
                f"code inside {self._label} set requires_grad=True on {len(changed_params)} "
                "parameter(s): they stayed trainable to the end of the scope; at exit each "
                "parameter got its own flag back",
                "unfreeze parameters after the with-block; the scope restores requires_grad itself",
            )
        if changed_modules:
            names = ", ".join(sorted({type(m).__name__ for m in changed_modules}))
            _report_changed(
                failing,
                f"code inside {self._label} switched {len(changed_modules)} module(s) back to "
                f"training mode ({names}): from there to the end of the scope they ran in "
                "training mode; at exit each module got its own flag back",
                "move model.train() after the with-block; the scope restores the flags itself",
            )


class allow(_Scope):
    """Silence the named checks within a block, for intended uses.

    Thread locality: silences checks in the current thread only (exited from another thread, it
    still ends the silence of the thread that entered it). Also works as a decorator.

    Args:
        *checks: check names (``"train-mode-without-grad"``) or codes (``"GG002"``).

    Raises:
        ValueError: no check, or an unknown one; the message lists the valid names.

    Example:
        >>> import gradguard
        >>> with gradguard.allow("train-mode-without-grad"):  # Monte-Carlo dropout
        ...     pass
    """

    _what = "allow"

    def __init__(self, *checks: str) -> None:
        super().__init__()
        self.checks: tuple[str, ...] = _findings.resolve_checks(checks)

    def _clone(self) -> allow:
        return allow(*self.checks)

    def _enter_compiling(self) -> None:
        return None  # compiled code reports nothing, so there is nothing to silence

    def _exit_compiling(self, token: None) -> None:
        return None

    def _enter(self) -> dict[str, int]:
        return _findings.push_allowed(self.checks)

    def _exit(self, token: dict[str, int], failing: bool) -> None:
        # The counts of the thread that entered: exited elsewhere, that thread's checks come back.
        _findings.pop_allowed(self.checks, token)
