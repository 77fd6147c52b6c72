"""Turning a scope into a decorator that works on every callable kind.

A decorated callable enters a *fresh* scope on every call (so recursion and threads each get their
own), and for generators the scope holds only while the body runs: it is entered around every
``send``/``throw``/``close`` and left before the value goes back to the caller.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

import wrapt

F = TypeVar("F", bound=Callable[..., Any])
ScopeFactory = Callable[[], AbstractContextManager[Any]]


def refuse_class(target: object, what: str) -> None:
    """Raise the TypeError that tells a user to decorate methods, not a class."""
    if isinstance(target, type):
        raise TypeError(
            f"{what} cannot decorate a class ({target.__qualname__}); decorate its methods "
            f"instead, e.g. put @{what} on {target.__qualname__}.forward or .predict"
        )


def _scoped_generator(
    generator: Generator[Any, Any, Any], new_scope: ScopeFactory
) -> Generator[Any, Any, Any]:
    try:
        with new_scope():
            response = generator.send(None)
        while True:
            try:
                request = yield response
            except GeneratorExit:
                with new_scope():
                    generator.close()
                raise
            except BaseException as error:
                with new_scope():
                    response = generator.throw(error)
            else:
                with new_scope():
                    response = generator.send(request)
    except StopIteration as stop:
        return stop.value


def scoped(fn: F, new_scope: ScopeFactory, what: str) -> F:
    """Wrap ``fn`` so that every call (every step, for generators) runs inside ``new_scope()``.

    The wrapper keeps ``__name__``, ``__qualname__``, ``__doc__``, ``__module__``, ``__wrapped__``
    and the signature, and binds like the original on classes (methods, classmethods,
    staticmethods).
    """
    refuse_class(fn, what)
    if not callable(fn) and not isinstance(fn, (classmethod, staticmethod)):
        raise TypeError(f"{what} decorates functions and methods, not {fn!r}")
    inner = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn

    if inspect.isgeneratorfunction(inner):

        def call_generator(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
            return _scoped_generator(wrapped(*args, **kwargs), new_scope)

        return cast(F, wrapt.FunctionWrapper(fn, call_generator))

    def call(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        with new_scope():
            return wrapped(*args, **kwargs)

    return cast(F, wrapt.FunctionWrapper(fn, call))
