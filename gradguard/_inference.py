"""``@inference_fn``: an inference scope as a decorator for every callable kind.

Everything that can be decided once is decided at decoration time (the mode, the explicit models,
which parameters default to a module, the callable's kind, the GG001 hook pair), so a call costs an
argument scan, a cached tree lookup, and a hold on the state engine with the checks of
:class:`~gradguard.evaluating`: no signature binding, no validation, no per-call scope object.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

import torch
import wrapt
from torch import nn
from typing_extensions import ParamSpec

from gradguard import _decorators, _findings, _scopes, _state
from gradguard._scopes import Mode, check_mode, check_modules

P = ParamSpec("P")
R = TypeVar("R")

_Module = nn.Module
_Tensor = torch.Tensor
_tree_of = _state.tree_of
is_compiling = torch.compiler.is_compiling


# Markers of the grad mode a mode="grad" call was entered with.
_GRAD_ON = object()
_GRAD_OFF = object()

# (hold or None, grad mode or context to restore, the thread's watch stack when GG001 watches)
Entry = tuple[Any, Any, Any]


class _CallWatch(_scopes._GraphWatch):
    """GG001 inside the calls of one decorated function.

    Built once at decoration time: the same watch goes on the thread's stack of open scopes for
    every call (so recursion and threads can share it), and whether the running call has
    reported already is kept per thread.
    """

    __slots__ = ("local",)

    def __init__(self, what: str, mode: str) -> None:
        self.local = threading.local()
        super().__init__(what, mode)

    @property
    def reported(self) -> bool:
        return bool(getattr(self.local, "reported", False))

    @reported.setter
    def reported(self, value: bool) -> None:
        self.local.reported = value


class _Step:
    """One step of a generator or coroutine: the function's scope on the call's models."""

    __slots__ = ("enter", "entry", "leave", "roots")

    def __init__(
        self,
        enter: Callable[[Any], Entry],
        leave: Callable[[Entry, bool], None],
        roots: Sequence[nn.Module],
    ) -> None:
        self.enter = enter
        self.leave = leave
        self.roots = roots
        self.entry: Entry = (None, None, None)

    def __enter__(self) -> None:
        # Looked up per step: a model changed between two steps is held as it is now.
        self.entry = self.enter(_tree_of(self.roots) if self.roots else None)

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self.leave(self.entry, exc_type is not None)


def _scope_functions(
    mode: str, watch: _CallWatch
) -> tuple[Callable[[Any], Entry], Callable[[Entry, bool], None]]:
    """``enter(tree) -> entry`` and ``leave(entry, failing)`` for one decorated function.

    The same state engine and checks as :class:`~gradguard.evaluating` (exact refcounted
    restoration, GG001 while the scope is open, GG006 at exit), specialised once for ``mode`` so
    that a call allocates nothing but its entry and pays for nothing else.
    """
    hold_eval = _state.hold_eval
    release_eval = _state.release_eval
    is_grad_enabled = torch.is_grad_enabled
    set_grad_enabled = torch.set_grad_enabled
    grad_mode_changed = _scopes.grad_mode_changed
    report_eval_changes = _scopes.report_eval_changes
    label = watch.what
    local = watch.local
    watches = _scopes._watches
    open_watches = _scopes.open_watches
    close_watch = _scopes.close_watch
    no_grad = mode == "no_grad"
    inference = mode == "inference"
    wanted = _scopes._GRAPH_WANTED

    def enter(tree: _state.Tree | None) -> Entry:
        hold = hold_eval(tree) if tree is not None else None
        grad: Any = None
        try:
            if no_grad:
                grad = is_grad_enabled()
                set_grad_enabled(False)
            elif inference:
                context = torch.inference_mode()
                context.__enter__()
                grad = context
            else:
                # mode="grad" asks for graphs in eval mode: GG001 stays silent in this thread.
                # The grad mode is left alone, and remembered to check that the body did too.
                _findings.push_allowed(wanted)
                grad = _GRAD_ON if is_grad_enabled() else _GRAD_OFF
                open_watches().append(None)
                return (hold, grad, None)
            local.reported = False
            watched = getattr(watches, "stack", None)
            if watched is None:
                watched = open_watches()
            watched.append(watch)
            return (hold, grad, watched)
        except BaseException:
            leave((hold, grad, None), True)
            raise

    def leave(entry: Entry, failing: bool) -> None:
        hold, grad, stack = entry
        grad_changed = ""
        changed: Sequence[nn.Module] = ()
        try:
            if grad is _GRAD_ON or grad is _GRAD_OFF:
                close_watch(open_watches(), None)  # a call's steps run in one thread each
                _findings.pop_allowed(wanted)
                grad_changed = grad_mode_changed(mode, grad is _GRAD_ON)
                if grad_changed:
                    set_grad_enabled(grad is _GRAD_ON)
            elif grad is not None:
                if stack is not None:
                    if stack and stack[-1] is watch:
                        stack.pop()
                    else:
                        close_watch(stack, watch)
                if no_grad:
                    if is_grad_enabled():
                        grad_changed = grad_mode_changed(mode)
                    set_grad_enabled(grad)
                else:
                    grad_changed = grad_mode_changed(mode)
                    grad.__exit__(None, None, None)
        finally:
            if hold is not None:
                changed = release_eval(hold)
        if changed or grad_changed:
            report_eval_changes(label, mode, list(changed), grad_changed, failing)

    return enter, leave


_graph_tensor = _scopes.graph_tensor


@_findings.fail_open("inference_fn result")
def _report_graph_result(label: str, mode: str, tensor: torch.Tensor) -> None:
    _findings.report(
        "graph-in-inference",
        f"{label} (mode={mode!r}) returned a tensor that is part of an autograd graph "
        f"(grad_fn={type(tensor.grad_fn).__name__}): the graph and the activations it saved "
        "stay alive as long as the result does, and inference never runs its backward",
        "return a tensor computed inside the function with gradients off, or return "
        "result.detach() if it was made with gradients on",
    )


def _module_defaults(fn: Any) -> tuple[tuple[int | None, str, nn.Module], ...]:
    """(position or None for keyword-only, name, module) for parameters defaulting to a module."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a callable without an introspectable signature
        return ()
    found: list[tuple[int | None, str, nn.Module]] = []
    for position, parameter in enumerate(parameters):
        if isinstance(parameter.default, _Module):
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                found.append((None, parameter.name, parameter.default))
            elif parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
                found.append((position, parameter.name, parameter.default))
            else:
                found.append((position, "", parameter.default))
    return tuple(found)


def _decorate(fn: Any, mode: str, models: tuple[nn.Module, ...] | None) -> Any:
    _decorators.refuse_class(fn, "inference_fn")
    if isinstance(fn, _Module):
        raise TypeError(
            f"inference_fn got the module {type(fn).__qualname__} as the function to decorate; "
            "to name the models to hold in eval use @inference_fn(models=[model]) on a function"
        )
    if not callable(fn) and not isinstance(fn, (classmethod, staticmethod)):
        raise TypeError(
            f"inference_fn decorates functions, methods, generators and async functions, "
            f"not {type(fn).__qualname__} ({fn!r:.80})"
        )
    inner = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
    label = f"inference_fn({getattr(inner, '__qualname__', repr(inner))})"
    watch = _CallWatch(label, mode)
    enter, leave = _scope_functions(mode, watch)
    local = watch.local
    checks_results = mode != "grad"
    fixed: tuple[nn.Module, ...] | None = models
    defaults = _module_defaults(inner) if models is None else ()
    static = isinstance(fn, staticmethod)

    def roots_of(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if fixed is not None:
            return fixed
        found = [instance] if isinstance(instance, _Module) else []
        for arg in args:
            if isinstance(arg, _Module):
                found.append(arg)
        if kwargs:
            for arg in kwargs.values():
                if isinstance(arg, _Module):
                    found.append(arg)
        if defaults:
            given = len(args) + (1 if instance is not None and not static else 0)
            for position, name, module in defaults:
                if (position is None or given <= position) and name not in kwargs:
                    found.append(module)
        return found

    def check_step(step: _Step, value: Any) -> None:
        if value is not None and step.entry[2] is not None and not local.reported:
            tensor = _graph_tensor(value)
            if tensor is not None:
                _report_graph_result(label, mode, tensor)

    step_check = check_step if checks_results else None
    kind = _decorators.kind_of(fn)

    if kind != "function":

        def scopes_for(instance: Any, args: Any, kwargs: Any) -> Callable[[], _Step]:
            roots = roots_of(instance, args, kwargs)
            return lambda: _Step(enter, leave, roots)

        return _decorators.wrap_stepwise(fn, kind, scopes_for, step_check)

    def run(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        roots = roots_of(instance, args, kwargs)
        if is_compiling():
            # Locks, weak references and thread-locals cannot be traced: a plain path instead.
            token = _scopes.compiling_enter(tuple(roots), mode)
            try:
                return wrapped(*args, **kwargs)
            finally:
                _scopes.compiling_exit(token)
        entry = enter(_tree_of(roots) if roots else None)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException:
            leave(entry, True)
            raise
        leave(entry, False)
        if result is None:
            return result
        if result.__class__ in _decorators.LAZY_KINDS:
            # A plain function that returns a coroutine or generator (a functools.wraps wrapper
            # of an async def): its body runs later, so the scope goes around each of its steps.
            return _decorators.scoped_result(result, lambda: _Step(enter, leave, roots), step_check)
        if entry[2] is not None and not local.reported:
            tensor = _graph_tensor(result)
            if tensor is not None:
                _report_graph_result(label, mode, tensor)
        return result

    if not inspect.isfunction(inner):
        # Callable objects, partials, builtins: a wrapt proxy binds (or not) like the original.
        return wrapt.FunctionWrapper(fn, run)

    # A plain function rather than a wrapt proxy: it binds as a method just like the original
    # (self arrives in args), and it is the cheapest wrapper a call can go through.
    @functools.wraps(inner)
    def call(*args: Any, **kwargs: Any) -> Any:
        return run(inner, None, args, kwargs)

    if isinstance(fn, staticmethod):
        return staticmethod(call)
    if isinstance(fn, classmethod):
        return classmethod(call)
    return call


@overload
def inference_fn(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def inference_fn(
    *, mode: Mode = "no_grad", models: Sequence[nn.Module] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def inference_fn(
    fn: Any = None,
    /,
    *,
    mode: Mode = "no_grad",
    models: Sequence[nn.Module] | None = None,
) -> Any:
    """Run a function for inference: its models in eval mode, gradients off, all restored after.

    Without ``models=``, every ``nn.Module`` among the call's arguments (``self`` included, and
    parameters that default to a module) is held in eval mode for the call; with ``models=``,
    exactly those. Each submodule gets back its *own* ``training`` flag afterwards, on return and
    on exceptions (a frozen BatchNorm stays in eval), and the caller's grad mode comes back: the
    restoration of :class:`~gradguard.evaluating`. Modules inside containers passed as arguments
    (a list of models) are not searched; name them with ``models=``.

    Works on functions, methods (also of ``nn.Module`` subclasses), staticmethods, classmethods,
    generator functions, ``async def`` functions and async generators. For generators and
    ``async`` code the scope holds only while the body runs: between yields, and while a
    coroutine waits at an ``await``, the caller's grad mode and the models' own flags are back, so
    a suspended request never leaks ``no_grad`` into the other coroutines of its event loop and an
    abandoned generator never leaves a model in eval. Every call gets a fresh scope, so recursive
    and concurrent calls are safe.

    Thread locality: the grad mode is thread local, but ``module.training`` is shared by all
    threads. Calls in many threads on one model keep it in eval while any of them runs; the last
    one to finish restores the original flags. Work a coroutine hands to another thread
    (``asyncio.to_thread``, an executor) runs outside its scope, with that thread's grad mode:
    decorate the function handed over instead. A body that suspends inside its own
    ``torch.no_grad()`` or saved-tensors hooks gets them back on resume, and its caller never sees
    them. Inside ``torch.compile`` a traceable path is taken (``"inference"`` runs as
    ``no_grad``).

    Usable bare (``@inference_fn``) or called (``@inference_fn(mode=..., models=...)``).

    Args:
        fn: the function, when used bare.
        mode: ``"no_grad"`` (``torch.no_grad``, the default), ``"inference"``
            (``torch.inference_mode``) or ``"grad"`` (gradients left as they are).
        models: the modules to hold in eval instead of those found among the arguments; an empty
            list holds none and only sets the grad mode.

    Raises:
        TypeError: at decoration time: a class (decorate its methods), a module given where the
            function goes, something not callable, ``models=`` that is not a list or tuple of
            ``nn.Module`` objects.
        ValueError: at decoration time: an unknown ``mode``.

    Warns:
        GraphInInferenceWarning: (GG001) in modes ``"no_grad"``/``"inference"``, the function
            returned (or yielded) a tensor with a ``grad_fn``, directly or inside a tuple, list or
            dict (a graph built and dropped inside the call is freed with it and not reported;
            the watchdog reports it).
        ScopeStateChangedWarning: (GG006) the body switched a held module back to training or
            changed the grad mode; it is put right, then reported.

    Example:
        >>> import torch, gradguard
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout())
        >>> @gradguard.inference_fn
        ... def predict(model, x):
        ...     return model(x).argmax(dim=1)
        >>> predict(model, torch.randn(3, 4)).shape, model.training, torch.is_grad_enabled()
        (torch.Size([3]), True, True)
    """
    check_mode(mode, "inference_fn(...)")
    chosen: tuple[nn.Module, ...] | None = None
    if models is not None:
        if isinstance(models, _Module) or not isinstance(models, (list, tuple)):
            raise TypeError(
                "inference_fn(models=...) takes a list or tuple of torch.nn.Module objects, "
                f"e.g. models=[encoder, head]; got {type(models).__qualname__} ({models!r:.80})"
            )
        chosen = tuple(models)
        check_modules(chosen, "inference_fn(models=...)", allow_empty=True)
    if fn is None:

        def decorate(target: Any) -> Any:
            return _decorate(target, mode, chosen)

        return decorate
    return _decorate(fn, mode, chosen)
