"""The abstract state the flow pass carries through a function, and how two paths join.

Every field maps what is known on the paths reaching a point; a missing key means "unknown here".
Joining unions the facts, and a key known on one path only picks up ``UNKNOWN`` from the other, so
"known on every path" (must) and "possible on some path" (may) can both be read off one state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gradguard.lint._analysis._module import Fact

#: A graph-carrying value's source: ("fwd" | "acc", line, column) of the forward or accumulation.
Origin = tuple[str, int, int]

UNKNOWN: Fact = ("unknown", 0, "", "")
_UNKNOWN_SET = frozenset({UNKNOWN})


@dataclass
class State:
    """What holds at one program point on every path that reaches it."""

    #: receiver ("model", "self.net") -> its train/eval facts.
    modes: dict[str, frozenset[Fact]] = field(default_factory=dict)
    #: grad mode: facts of kind "on", "off" or "unknown".
    grad: frozenset[Fact] = field(default_factory=lambda: _UNKNOWN_SET)
    #: local name -> the forwards/accumulations whose autograd graph its value may carry.
    taint: dict[str, frozenset[Origin]] = field(default_factory=dict)
    #: local name -> facts "off" when its value was computed with gradients disabled.
    off: dict[str, frozenset[Fact]] = field(default_factory=dict)
    #: since the last zero_grad(): facts "zeroed" (none seen since) or "backward".
    zero: frozenset[Fact] = field(default_factory=lambda: _UNKNOWN_SET)
    #: local name -> where it was read from a ``.training`` flag.
    snaps: dict[str, Fact] = field(default_factory=dict)
    #: optimizer receiver -> the receiver whose parameters it was built from here.
    optparams: dict[str, str] = field(default_factory=dict)
    #: receiver -> its construction from an imported class, waiting for load_state_dict().
    built: dict[str, Fact] = field(default_factory=dict)

    def copy(self) -> State:
        return State(
            dict(self.modes),
            self.grad,
            dict(self.taint),
            dict(self.off),
            self.zero,
            dict(self.snaps),
            dict(self.optparams),
            dict(self.built),
        )


def _join_must(
    a: dict[str, frozenset[Fact]], b: dict[str, frozenset[Fact]]
) -> dict[str, frozenset[Fact]]:
    if a is b:
        return dict(a)
    out: dict[str, frozenset[Fact]] = {}
    for key in a.keys() | b.keys():
        out[key] = a.get(key, _UNKNOWN_SET) | b.get(key, _UNKNOWN_SET)
    return out


def _join_may(
    a: dict[str, frozenset[Origin]], b: dict[str, frozenset[Origin]]
) -> dict[str, frozenset[Origin]]:
    out = dict(a)
    for key, value in b.items():
        mine = out.get(key)
        out[key] = value if mine is None else mine | value
    return out


def join(a: State | None, b: State | None) -> State | None:
    """The state where two paths meet (None is a path that does not get here)."""
    if a is None:
        return b
    if b is None:
        return a
    return State(
        _join_must(a.modes, b.modes),
        a.grad | b.grad,
        _join_may(a.taint, b.taint),
        _join_must(a.off, b.off),
        a.zero | b.zero,
        {**b.snaps, **a.snaps},
        {**b.optparams, **a.optparams},
        {**b.built, **a.built},
    )


def join_all(states: list[State | None]) -> State | None:
    out: State | None = None
    for state in states:
        out = join(out, state)
    return out


def all_kind(facts: frozenset[Fact] | None, kind: str) -> bool:
    """Known on every path: there are facts and every one of them is ``kind``."""
    return bool(facts) and all(fact[0] == kind for fact in facts or ())


def first(facts: frozenset[Fact], kind: str) -> Fact | None:
    """The earliest fact of ``kind`` (for the message's "at line N")."""
    found = sorted(fact for fact in facts if fact[0] == kind)
    return min(found, key=lambda fact: fact[1]) if found else None
