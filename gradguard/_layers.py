"""gradguard's layers on a class's ``__call__``: put on top, and taken out from anywhere below.

The scopes (GG001 inside ``evaluating``) and the watchdog both check a model's calls through its
class rather than through hooks stored on the model. Both may sit on one class at once, in either
order, and either may be removed first: each layer reads what it calls through a mutable
:class:`Inner`, so a layer under another gradguard layer is spliced out instead of being left
behind. Only a layer of other code on top keeps ours in place (passing every call straight on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ABSENT: Any = object()  # the class had no ``__call__`` of its own


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
    cls.__call__ = layer  # type: ignore[method-assign]
    return layer, inner


def take_off(cls: type, layer: Any, inner: Inner) -> bool:
    """Take ``layer`` out of ``cls``'s chain; False when other code's layer sits above it."""
    above = cls.__dict__.get("__call__", ABSENT)
    if above is layer:
        if inner.own is ABSENT:
            delattr(cls, "__call__")
        else:
            cls.__call__ = inner.own  # type: ignore[method-assign]
        return True
    holder: Inner | None = getattr(above, "_gradguard_inner", None)
    while holder is not None:
        if holder.own is layer:
            holder.own = inner.own
            return True
        holder = getattr(holder.own, "_gradguard_inner", None)
    return False
