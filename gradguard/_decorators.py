"""Turning a scope into a decorator that works on every callable kind.

A decorated callable enters a *fresh* scope on every call (so recursion and threads each get their
own). For generators, coroutines and async generators the scope holds only while the body runs: it
is entered around every ``send``/``throw``/``close`` into the body and left before the yielded value
(or, for ``async def``, the awaited object) goes back to the caller or the event loop. A suspended
body therefore never leaks its mode into the code that runs while it waits.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

import torch
import wrapt

F = TypeVar("F", bound=Callable[..., Any])
ScopeFactory = Callable[[], AbstractContextManager[Any]]
#: Called after every step with the step's scope and the value it produced (yielded or returned).
StepCheck = Callable[[Any, Any], None]


def refuse_class(target: object, what: str) -> None:
    """Raise the TypeError that tells a user to decorate methods, not a class."""
    if isinstance(target, type):
        raise TypeError(
            f"{what} cannot decorate a class ({target.__qualname__}); decorate its methods "
            f"instead, e.g. put @{what} on {target.__qualname__}.forward or .predict"
        )


def kind_of(fn: Any) -> str:
    """``"generator"``, ``"coroutine"``, ``"async_generator"`` or ``"function"``."""
    inner = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
    if inspect.isgeneratorfunction(inner):
        return "generator"
    if inspect.iscoroutinefunction(inner):
        return "coroutine"
    if inspect.isasyncgenfunction(inner):
        return "async_generator"
    return "function"


_autograd = torch._C._autograd
# Private, but the only way to read the hook stack; without it a body's hooks are left as they are.
_top_hooks: Callable[[bool], Any] | None = getattr(
    _autograd, "_top_saved_tensors_default_hooks", None
)
_push_hooks = _autograd._push_saved_tensors_default_hooks
_pop_hooks = _autograd._pop_saved_tensors_default_hooks
_is_grad_enabled = torch.is_grad_enabled
_set_grad_enabled = torch._C._set_grad_enabled


class BodyState:
    """A suspended body's own thread-local autograd state: its grad mode and its hooks.

    A generator or coroutine that suspends inside its own ``with torch.no_grad():`` or
    ``with torch.autograd.graph.save_on_cpu():`` would otherwise leave that state to whoever runs
    while it waits, and find the caller's state when it resumes. At every suspension the body's
    grad mode and the saved-tensors hooks it pushed above the step's own are taken off the thread
    and kept here; they are put back when the body resumes (also to be closed or thrown into).
    """

    __slots__ = ("grad", "hooks")

    def __init__(self) -> None:
        self.grad: bool | None = None
        self.hooks: list[Any] = []

    def resume(self) -> None:
        """Inside a step's scope: give the body back its grad mode and hooks."""
        if self.grad is not None:
            _set_grad_enabled(self.grad)
            self.grad = None
        hooks = self.hooks
        while hooks:
            _push_hooks(*hooks.pop())

    def suspend(self, base_hooks: Any, base_grad: bool) -> None:
        """Inside a step's scope, the body just suspended: take its own state off the thread."""
        grad = _is_grad_enabled()
        if grad is not base_grad:
            self.grad = grad
            _set_grad_enabled(base_grad)
        if _top_hooks is None:
            return
        top = _top_hooks(False)
        if top is None:
            return
        # Hooks the body pushed since the step began lie above the step's top: keep them here.
        for _ in range(1000):  # a bound, in case the body popped hooks that were not its own
            if top is None or (
                base_hooks is not None and top[0] is base_hooks[0] and top[1] is base_hooks[1]
            ):
                return
            self.hooks.append(top)
            _pop_hooks()
            top = _top_hooks(False)


def _hooks_now() -> Any:
    return _top_hooks(False) if _top_hooks is not None else None


def scoped_generator(
    generator: Generator[Any, Any, Any],
    new_scope: ScopeFactory,
    check: StepCheck | None = None,
) -> Generator[Any, Any, Any]:
    """Run ``generator`` with a fresh ``new_scope()`` around every step, and none between steps."""
    request: Any = None
    error: BaseException | None = None
    body = BodyState()
    while True:
        scope = new_scope()
        with scope:
            base_hooks = _hooks_now()
            base_grad = _is_grad_enabled()
            if body.grad is not None or body.hooks:
                body.resume()
            try:
                response = generator.send(request) if error is None else generator.throw(error)
            except StopIteration as stop:
                # Leave the scope normally: running to the end is not a failure.
                result = stop.value
                break
            if _is_grad_enabled() is not base_grad or _hooks_now() is not None:
                body.suspend(base_hooks, base_grad)
        error = None
        if check is not None:
            check(scope, response)
        try:
            request = yield response
        except GeneratorExit:
            with new_scope():
                body.resume()
                generator.close()
            raise
        except BaseException as thrown:
            error = thrown
            request = None
    if check is not None:
        check(scope, result)
    return result


@types.coroutine
def _scoped_steps(
    steps: Any,
    new_scope: ScopeFactory,
    check: StepCheck | None,
    body: BodyState,
    yields: bool = False,
) -> Generator[Any, Any, Any]:
    # Drives any coroutine-like object (a coroutine, or the awaitable of an async generator's
    # asend/athrow/aclose): the scope is entered around each send/throw into it and left before
    # the awaited object it gives up goes back to the event loop.
    sent: Any = None
    error: BaseException | None = None
    end: StopAsyncIteration | None = None
    while True:
        scope = new_scope()
        with scope:
            base_hooks = _hooks_now()
            base_grad = _is_grad_enabled()
            if body.grad is not None or body.hooks:
                body.resume()
            try:
                awaited = steps.send(sent) if error is None else steps.throw(error)
            except StopIteration as stop:
                result = stop.value
                # An async generator's yield: the body is suspended until the next asend.
                if yields and (_is_grad_enabled() is not base_grad or _hooks_now() is not None):
                    body.suspend(base_hooks, base_grad)
                break
            except StopAsyncIteration as stop:
                # Raised again below, outside the scope: an async generator's end is no failure.
                end = stop
                break
            if _is_grad_enabled() is not base_grad or _hooks_now() is not None:
                body.suspend(base_hooks, base_grad)
        error = None
        try:
            sent = yield awaited
        except GeneratorExit:
            with new_scope():
                body.resume()
                steps.close()
            raise
        except BaseException as thrown:
            error = thrown
            sent = None
    if end is not None:
        raise end
    if check is not None:
        check(scope, result)
    return result


async def scoped_coroutine(
    coroutine: Coroutine[Any, Any, Any],
    new_scope: ScopeFactory,
    check: StepCheck | None = None,
) -> Any:
    """Await ``coroutine`` with a fresh ``new_scope()`` around every step, none while suspended."""
    return await _scoped_steps(coroutine, new_scope, check, BodyState())


async def scoped_async_generator(
    agen: AsyncGenerator[Any, Any],
    new_scope: ScopeFactory,
    check: StepCheck | None = None,
) -> AsyncGenerator[Any, Any]:
    """Iterate ``agen`` with a fresh ``new_scope()`` around every step of its body."""
    sent: Any = None
    error: BaseException | None = None
    body = BodyState()
    while True:
        try:
            if error is None:
                item = await _scoped_steps(agen.asend(sent), new_scope, check, body, True)
            else:
                item = await _scoped_steps(agen.athrow(error), new_scope, check, body, True)
        except StopAsyncIteration:
            return
        error = None
        try:
            sent = yield item
        except GeneratorExit:
            await _scoped_steps(agen.aclose(), new_scope, None, body)
            raise
        except BaseException as thrown:
            error = thrown
            sent = None


#: What a plain function may return whose body runs later, step by step.
LAZY_KINDS = frozenset({types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType})


def scoped_result(result: Any, new_scope: ScopeFactory, check: StepCheck | None) -> Any:
    """Wrap a coroutine, generator or async generator object so each of its steps is scoped."""
    if isinstance(result, types.CoroutineType):
        return _named(scoped_coroutine(result, new_scope, check), result)
    if isinstance(result, types.GeneratorType):
        return scoped_generator(result, new_scope, check)
    return _named(scoped_async_generator(result, new_scope, check), result)


def _named(coroutine: Any, fn: Any) -> Any:
    # The wrapper coroutine carries the user's name, so "coroutine 'predict' was never awaited"
    # and task reprs name the user's function rather than gradguard's plumbing.
    coroutine.__name__ = getattr(fn, "__name__", coroutine.__name__)
    coroutine.__qualname__ = getattr(fn, "__qualname__", coroutine.__qualname__)
    return coroutine


#: Given a call's (instance, args, kwargs), the scope factory for that call's steps.
CallScopes = Callable[[Any, tuple[Any, ...], dict[str, Any]], ScopeFactory]


def wrap_stepwise(fn: Any, kind: str, scopes_for: CallScopes, check: StepCheck | None) -> Any:
    """Wrap a generator, coroutine or async generator function: a fresh scope around each step.

    ``scopes_for`` is asked once per call for the factory of that call's scopes, so a scope may
    depend on the call's arguments (``inference_fn`` holds the models it was given).
    """
    if kind == "generator":

        def call_generator(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            new_scope = scopes_for(instance, args, kwargs)
            return scoped_generator(wrapped(*args, **kwargs), new_scope, check)

        return wrapt.FunctionWrapper(fn, call_generator)

    if kind == "coroutine":

        def call_coroutine(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            new_scope = scopes_for(instance, args, kwargs)
            return _named(scoped_coroutine(wrapped(*args, **kwargs), new_scope, check), wrapped)

        return wrapt.FunctionWrapper(fn, call_coroutine)

    if kind == "async_generator":

        def call_async_generator(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            new_scope = scopes_for(instance, args, kwargs)
            steps = scoped_async_generator(wrapped(*args, **kwargs), new_scope, check)
            return _named(steps, wrapped)

        return wrapt.FunctionWrapper(fn, call_async_generator)

    raise ValueError(f"wrap_stepwise() wraps generators and async functions, not a {kind}")


def scoped(fn: F, new_scope: ScopeFactory, what: str) -> F:
    """Wrap ``fn`` so that each call (each step, for generators and async) runs in ``new_scope()``.

    The wrapper keeps ``__name__``, ``__qualname__``, ``__doc__``, ``__module__``, ``__wrapped__``
    and the signature, and binds like the original on classes (methods, classmethods,
    staticmethods). Coroutine functions stay coroutine functions and async generator functions
    stay async generator functions for ``inspect``.
    """
    refuse_class(fn, what)
    if not callable(fn) and not isinstance(fn, (classmethod, staticmethod)):
        raise TypeError(f"{what} decorates functions and methods, not {fn!r}")
    kind = kind_of(fn)
    if kind != "function":
        return cast(F, wrap_stepwise(fn, kind, lambda _i, _a, _k: new_scope, None))

    def call(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        with new_scope():
            result = wrapped(*args, **kwargs)
        if result.__class__ in LAZY_KINDS:
            # A plain function that returns a coroutine or generator (a functools.wraps wrapper
            # of an async def): its body runs later, so the scope goes around each of its steps.
            return scoped_result(result, new_scope, None)
        return result

    return cast(F, wrapt.FunctionWrapper(fn, call))
