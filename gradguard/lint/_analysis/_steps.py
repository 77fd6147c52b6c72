"""Steps inside helpers: whether calling a function of this module steps an optimizer on a model
still in the mode it was handed over in (GG103 at the call).

The first flow walk records, in every function, each optimizer step and each call of another
function of the module with the modes known there. Beside each receiver it keeps a mark
(``~model``) set wherever its mode stops being the one it came in: ``train()``, ``eval()``, a new
object bound to the name, a hand-over to code the pass cannot see, a call of a helper that may
switch modes. A site where the mark is missing on some path is reached in the mode given at the
entry. The marks never reach the mode summaries. The search follows calls a few levels down and
stops at recursion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradguard.lint._analysis._module import Fact

if TYPE_CHECKING:
    from gradguard.lint._analysis._module import Function, ModuleIndex

#: How many calls down a step is looked for (the helper called, and its own helpers).
MAX_DEPTH = 4

#: The fact of a touched mark: on this path the mode was set here, or by code that had the model.
CHANGED: Fact = ("changed", 0, "", "")
#: Marks live beside the receivers, under names no receiver has: ``~model`` for ``model``.
TOUCHED = "~"
#: The receiver standing for every global: a call that may switch modes may switch theirs.
GLOBALS = "*"


def touched(key: str) -> str:
    """The name of the mark that says ``key``'s mode is no longer the one given at the entry."""
    return TOUCHED + key


@dataclass(frozen=True)
class StepSite:
    """One ``optimizer.step()`` in a function, as the first walk saw it."""

    line: int
    spelled: str
    #: the stepped optimizer's receiver, in the function's own names.
    optimizer: str
    #: the receiver whose parameters the optimizer was built from in the function, if any.
    linked: str | None
    modes: dict[str, frozenset[Fact]]


@dataclass(frozen=True)
class CallSite:
    """One call of a function of this module, as the first walk saw it."""

    target: Function
    #: the callee's parameter -> the receiver given for it, in the caller's names.
    bound: dict[str, str]
    modes: dict[str, frozenset[Fact]]


@dataclass(frozen=True)
class Reached:
    """A step that a receiver handed to a call reaches in the mode it was handed over in."""

    site: StepSite
    #: the function the step is in.
    function: str
    #: the stepped optimizer in the searched function's names (None when not expressible there).
    optimizer: str | None
    #: the optimizer is built from the receiver's parameters where it steps.
    owns: bool


def entry_mode_reaches(
    modes: dict[str, frozenset[Fact]], key: str, params: tuple[str, ...]
) -> bool:
    """Whether ``key``'s mode at a site may still be the one it had at the function's entry.

    A mark on the receiver or on a parent (``train()`` on ``model`` covers ``model.head``) on
    every path means it was set since; a mark missing on some path (unknown there after a join)
    says that path left it as it came.
    """
    level = key
    while True:
        if _marked(modes, level):
            return False
        if "." not in level:
            break
        level = level.rsplit(".", 1)[0]
    return level in params or not _marked(modes, GLOBALS)


def _marked(modes: dict[str, frozenset[Fact]], key: str) -> bool:
    facts = modes.get(touched(key))
    return facts is not None and not any(fact[0] == "unknown" for fact in facts)


def may_switch_modes(index: ModuleIndex, target: Function) -> bool:
    """Whether a function, or one it calls by a name this module defines, may switch modes."""
    known = index.switches.get(id(target))
    if known is not None:
        return known
    seen: set[int] = set()
    todo = [(target, 0)]
    found = False
    while todo and not found:
        function, depth = todo.pop()
        if id(function) in seen:
            continue
        seen.add(id(function))
        facts = index.scopes.get(id(function))
        if facts is None:
            continue
        found = facts.switches_modes
        if depth + 1 < MAX_DEPTH:
            for name in facts.called:
                for callee in _defined(index, name, facts):
                    todo.append((callee, depth + 1))
    index.switches[id(target)] = found
    return found


def _defined(index: ModuleIndex, name: str, facts: Any) -> list[Function]:
    """The functions a call by that name may reach: a module function, a method, a closure."""
    out = [function for function in (index.functions.get(name), facts.nested.get(name)) if function]
    out.extend(methods[name] for methods in index.methods.values() if name in methods)
    return out


def into_callee(
    index: ModuleIndex, target: Function, bound: dict[str, str], key: str
) -> str | None:
    """The caller's receiver ``key`` in the callee's names: through a parameter or as a global."""
    for param, given in bound.items():
        if key == given or key.startswith(given + "."):
            return param + key[len(given) :]
        if given.startswith(key + "."):
            return param  # the model's eval() put the part handed over in eval too
    facts = index.scopes.get(id(target))
    root = key.split(".", 1)[0]
    if facts is None or root in facts.params:
        return None
    if root in facts.locals and root not in facts.globals:
        return None
    return key


def out_of_callee(
    bound: dict[str, str], params: tuple[str, ...], key: str | None
) -> str | None:
    """The callee's receiver ``key`` in the caller's names (None for an unbound parameter)."""
    if key is None:
        return None
    root, dot, rest = key.partition(".")
    if root in bound:
        return bound[root] + dot + rest
    return None if root in params else key


def params_of(index: ModuleIndex, target: Function) -> tuple[str, ...]:
    facts = index.scopes.get(id(target))
    return facts.params if facts is not None else ()


def _others_train(modes: dict[str, frozenset[Fact]], key: str) -> bool:
    return any(
        other != key and any(fact[0] == "train" for fact in facts) for other, facts in modes.items()
    )


class StepSearch:
    """Which step of a helper (or of the helpers it calls) a receiver reaches in its given mode."""

    def __init__(self, index: ModuleIndex) -> None:
        self.index = index
        self._memo = index.reached

    def find(self, target: Function, key: str, depth: int = 0) -> Reached | None:
        """The first such step of ``target`` for its receiver ``key``, or None."""
        memo_key = (id(target), key)
        if memo_key in self._memo:
            return self._memo[memo_key]
        self._memo[memo_key] = None  # recursion reaching here again finds nothing new
        found = self._search(target, key, depth)
        self._memo[memo_key] = found
        return found

    def _search(self, target: Function, key: str, depth: int) -> Reached | None:
        summary = self.index.summaries.get(id(target))
        if summary is None:
            return None
        for site in summary.steps:
            if not entry_mode_reaches(site.modes, key, summary.params):
                continue
            owns = site.linked is not None and (
                site.linked == key or site.linked.startswith(key + ".")
            )
            if site.linked is not None and not owns:
                continue  # the optimizer steps another model's parameters
            if not owns and _others_train(site.modes, key):
                continue  # another model is put in training here: `key` is a teacher or target
            return Reached(site, target.name, site.optimizer, owns)
        if depth + 1 >= MAX_DEPTH:
            return None
        for call in summary.calls:
            if not entry_mode_reaches(call.modes, key, summary.params):
                continue
            inner = into_callee(self.index, call.target, call.bound, key)
            if inner is None:
                continue
            found = self.find(call.target, inner, depth + 1)
            if found is None:
                continue
            optimizer = out_of_callee(
                call.bound, params_of(self.index, call.target), found.optimizer
            )
            return Reached(found.site, found.function, optimizer, found.owns)
        return None
