"""gradguard's layers on a class's ``__call__``: put on top, and taken out from anywhere below.

The scopes (GG001 inside ``evaluating``) and the watchdog both check a model's calls through its
class rather than through hooks stored on the model. Both may sit on one class at once, in either
order, and either may be removed first: each layer reads what it calls through a mutable
:class:`Inner`, so a layer under another gradguard layer is spliced out instead of being left
behind. Only a layer of other code on top keeps ours in place (passing every call straight on).

A class that cloudpickle copies by value (one defined in a script's ``__main__``, sent to a Ray,
Dask or submitit worker) takes its class dict along, layer included. A layer is therefore named
as an attribute of this module, so that it is pickled by reference: in the process that put it
on, the name is the layer itself; in any other, :func:`__getattr__` gives a function that calls
on as if no layer were there. A class's own ``__call__`` under a layer is kept on
the class too (:data:`OWN`), so that the copy still has it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

ABSENT: Any = object()  # the class had no ``__call__`` of its own
OWN = "_gradguard_own_call"  # the class's own ``__call__`` while a layer is on it
_PREFIX = "layer_"
_numbers = itertools.count()


def _passthrough(name: str) -> Callable[..., Any]:
    """What the layer ``name`` of another process is here: the call it wraps, unchecked."""

    def passthrough(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Called for the class that holds it, or through super() from a subclass: found by
        # identity, each class's layer having its own name.
        cls = type(self)
        mro = cls.__mro__
        here = next(
            (i for i, klass in enumerate(mro) if klass.__dict__.get("__call__") is passthrough),
            len(mro),
        )
        own = mro[here].__dict__.get(OWN) if here < len(mro) else None
        if own is not None:
            return own.__get__(self, cls)(*args, **kwargs)
        for klass in mro[here + 1 :]:
            call = klass.__dict__.get("__call__")
            if call is not None:
                return call.__get__(self, cls)(*args, **kwargs)
        raise TypeError(f"{cls.__name__!r} object is not callable")

    passthrough.__module__ = __name__
    passthrough.__qualname__ = name
    return passthrough


def __getattr__(name: str) -> Any:
    if name.startswith(_PREFIX) and name[len(_PREFIX) :].isdigit():
        # A layer of another process, unpickled here with its class: one function per name,
        # kept, so that every class copied here finds its own.
        found = globals().setdefault(name, _passthrough(name))
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_layer(call: Any) -> bool:
    """Whether ``call`` is one of gradguard's layers."""
    return hasattr(call, "_gradguard_inner")


class Inner:
    """What a layer calls under it: the class's own ``__call__``, another layer, or ABSENT."""

    __slots__ = ("own",)

    def __init__(self, own: Any) -> None:
        self.own = own


def put_on(cls: type, make: Callable[[Inner], Callable[..., Any]]) -> tuple[Any, Inner]:
    """Give ``cls`` the ``__call__`` that ``make(inner)`` builds, over what it has now."""
    inner = Inner(cls.__dict__.get("__call__", ABSENT))
    layer = make(inner)
    layer._gradguard_inner = inner  # type: ignore[attr-defined]
    name = f"{_PREFIX}{next(_numbers)}"
    layer.__module__ = __name__
    layer.__qualname__ = name
    globals()[name] = layer
    if inner.own is not ABSENT and not is_layer(inner.own):
        setattr(cls, OWN, inner.own)
    cls.__call__ = layer  # type: ignore[method-assign]
    return layer, inner


def reaches(cls: type, layer: Any) -> bool:
    """Whether calls of ``cls`` may still reach ``layer``: False once other code took it off.

    Walks down gradguard's layers from the class's ``__call__``. Other code's callable on top, or
    at the bottom of ours, may hold ``layer`` under it: True (as a layer kept under a wrapper).
    Only the class's own call (or none) where the walk ends means that ``layer`` is gone.
    """
    call = cls.__dict__.get("__call__", ABSENT)
    while call is not layer:
        holder: Inner | None = getattr(call, "_gradguard_inner", None)
        if holder is None:
            return call is not ABSENT and call is not cls.__dict__.get(OWN)
        call = holder.own
    return True


def take_off(cls: type, layer: Any, inner: Inner) -> bool:
    """Take ``layer`` out of ``cls``'s chain; False when other code's layer sits above it."""
    above = cls.__dict__.get("__call__", ABSENT)
    if above is layer:
        if inner.own is ABSENT:
            delattr(cls, "__call__")
        else:
            cls.__call__ = inner.own  # type: ignore[method-assign]
        if not is_layer(inner.own) and OWN in cls.__dict__:
            delattr(cls, OWN)  # the last layer is off: the class's own call is in its place
        forget(layer)
        return True
    holder: Inner | None = getattr(above, "_gradguard_inner", None)
    while holder is not None:
        if holder.own is layer:
            holder.own = inner.own
            forget(layer)
            return True
        holder = getattr(holder.own, "_gradguard_inner", None)
    return False


def forget(layer: Any) -> None:
    """Take the name of ``layer`` (off its class now) out of this module."""
    name: str = layer.__qualname__
    if globals().get(name) is layer:
        del globals()[name]
