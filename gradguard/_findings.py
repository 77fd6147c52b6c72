"""The findings channel: check codes, warning and error classes, once-per-site reporting, allow().

Every check in gradguard, whether owned by a scope or by the watchdog, reports through
:func:`report`. A finding points at the user's line (the first frame outside gradguard, torch and
the standard library's context-manager plumbing), is warned once per code location, is recorded for
:func:`findings`, and is raised as :class:`GradGuardError` instead when strict.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType
from typing import ClassVar, TypeVar

from typing_extensions import ParamSpec

from gradguard import _config

P = ParamSpec("P")
R = TypeVar("R")


class GradGuardWarning(UserWarning):
    """Base class of every warning gradguard emits; one subclass per check."""

    code: ClassVar[str] = ""
    check: ClassVar[str] = ""


class GraphInInferenceWarning(GradGuardWarning):
    """GG001: an autograd graph was built during inference and not used by backward."""

    code = "GG001"
    check = "graph-in-inference"


class TrainModeWithoutGradWarning(GradGuardWarning):
    """GG002: a model in training mode ran, or was switched to train(), with gradients off."""

    code = "GG002"
    check = "train-mode-without-grad"


class EvalModeTrainingWarning(GradGuardWarning):
    """GG004: an optimizer stepped the parameters of a model left in eval mode."""

    code = "GG004"
    check = "eval-mode-training"


class StepWithoutGradientsWarning(GradGuardWarning):
    """GG005: optimizer.step() ran while none of its parameters had a gradient."""

    code = "GG005"
    check = "step-without-gradients"


class ScopeStateChangedWarning(GradGuardWarning):
    """GG006: code inside a scope changed the state that the scope manages."""

    code = "GG006"
    check = "scope-state-changed"


class InternalCheckWarning(GradGuardWarning):
    """A gradguard check failed internally; the user's code went on unharmed (fail open)."""

    code = "GG000"
    check = "internal-error"


WARNING_CLASSES: dict[str, type[GradGuardWarning]] = {
    cls.check: cls
    for cls in (
        GraphInInferenceWarning,
        TrainModeWithoutGradWarning,
        EvalModeTrainingWarning,
        StepWithoutGradientsWarning,
        ScopeStateChangedWarning,
        InternalCheckWarning,
    )
}
# Shown as gradguard.X in tracebacks and reprs: the public name, not the private module.
for _public in (GradGuardWarning, *WARNING_CLASSES.values()):
    _public.__module__ = "gradguard"

#: check name -> code, in code order. GG003 has no warning class: it is always an error.
CHECKS: dict[str, str] = {
    "graph-in-inference": "GG001",
    "train-mode-without-grad": "GG002",
    "backward-without-grad": "GG003",
    "eval-mode-training": "GG004",
    "step-without-gradients": "GG005",
    "scope-state-changed": "GG006",
}
_CODES_TO_CHECKS = {code: check for check, code in CHECKS.items()}

_ALWAYS_ERRORS = frozenset({"backward-without-grad"})


@dataclass
class Finding:
    """One finding, as recorded by :func:`findings`.

    Attributes:
        code: the stable code, e.g. ``"GG006"``.
        check: the check's name, e.g. ``"scope-state-changed"`` (what :func:`allow` takes).
        message: what happened, where, and what to do.
        filename: the user's file where it happened.
        lineno: the line in ``filename``.
        count: how many times it happened at that location.
        fix: the one-line fix.
    """

    code: str
    check: str
    message: str
    filename: str
    lineno: int
    count: int = 1
    fix: str = ""


class GradGuardError(RuntimeError):
    """A finding raised as an error: always for GG003, for every check when strict.

    It is a RuntimeError, so handlers written for PyTorch's own errors keep working.

    Attributes:
        finding: the :class:`Finding` that was raised.
    """

    def __init__(self, finding: Finding) -> None:
        super().__init__(format_finding(finding))
        self.finding = finding


GradGuardError.__module__ = "gradguard"
Finding.__module__ = "gradguard"


def format_finding(finding: Finding) -> str:
    """Render a finding as its warning/error text."""
    text = f"{finding.code} {finding.check}: {finding.message}"
    if finding.fix:
        text += f"\nFix: {finding.fix}"
    return text


_lock = threading.Lock()
_records: list[Finding] = []
_by_site: dict[tuple[str, str, int], Finding] = {}
_local = threading.local()

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _skipped_prefixes() -> tuple[str, ...]:
    prefixes = [_PACKAGE_DIR + os.sep]
    torch_module = sys.modules.get("torch")
    torch_file = getattr(torch_module, "__file__", None)
    if torch_file:
        prefixes.append(os.path.dirname(os.path.abspath(torch_file)) + os.sep)
    for name in ("contextlib", "threading", "asyncio", "functools", "wrapt"):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            prefixes.append(
                os.path.dirname(path) + os.sep
                if path.endswith("__init__.py")
                else os.path.abspath(path)
            )
    return tuple(prefixes)


_skip_cache: tuple[str, ...] | None = None


def user_frame(start: FrameType | None = None) -> FrameType | None:
    """The innermost frame that belongs to the user: not gradguard, torch or context plumbing."""
    global _skip_cache
    skip = _skip_cache
    if skip is None:
        skip = _skip_cache = _skipped_prefixes()
    frame: FrameType | None = start if start is not None else sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(skip) and not filename.startswith("<frozen"):
            return frame
        frame = frame.f_back
    return None


def user_site(start: FrameType | None = None) -> tuple[str, int]:
    """(filename, line) of the user's frame; ``("<unknown>", 0)`` when there is none."""
    frame = user_frame(start if start is not None else sys._getframe(1))
    if frame is None:
        return ("<unknown>", 0)
    return (frame.f_code.co_filename, frame.f_lineno)


def _allowed_counts() -> dict[str, int]:
    counts: dict[str, int] | None = getattr(_local, "allowed", None)
    if counts is None:
        counts = _local.allowed = {}
    return counts


def is_allowed(check: str) -> bool:
    """Whether ``check`` is silenced by an :func:`allow` scope open in this thread."""
    counts: dict[str, int] | None = getattr(_local, "allowed", None)
    return counts is not None and counts.get(check, 0) > 0


def _rank_prefix() -> str:
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return f"[rank {dist.get_rank()}] "
    except Exception:  # a half-torn-down process group must not hide the finding
        return ""
    return ""


def report(
    check: str,
    message: str,
    fix: str,
    *,
    site: tuple[str, int] | None = None,
    strict: bool | None = None,
) -> Finding | None:
    """Report a finding through the one channel.

    Silenced (returns None) when ``check`` is allowed in this thread. Otherwise the finding is
    recorded (once per code location, counted after that), then raised as
    :class:`GradGuardError` when strict or when the check is always an error, else warned once
    per location with the check's warning class, pointing at the user's line.

    Args:
        check: the check's name, a key of :data:`CHECKS`.
        message: what happened and where.
        fix: the one-line fix.
        site: ``(filename, line)`` to point at; by default the user's innermost frame.
        strict: overrides :func:`gradguard.configure` / ``GRADGUARD_STRICT`` when not None
            (``watch(strict=...)`` passes its own).
    """
    if is_allowed(check):
        return None
    code = CHECKS.get(check, "GG000")
    if site is None:
        site = user_site(sys._getframe(1))
    filename, lineno = site
    key = (code, filename, lineno)
    with _lock:
        record = _by_site.get(key)
        first = record is None
        if record is None:
            record = Finding(code, check, _rank_prefix() + message, filename, lineno, 1, fix)
            _by_site[key] = record
            _records.append(record)
        else:
            record.count += 1
    if check in _ALWAYS_ERRORS or (_config.is_strict() if strict is None else strict):
        raise GradGuardError(replace(record))
    if first:
        category = WARNING_CLASSES.get(check, GradGuardWarning)
        warnings.warn_explicit(format_finding(record), category, filename, lineno)
    return record


def findings() -> list[Finding]:
    """Every finding reported so far in this process (copies), in the order first seen.

    Example:
        >>> import gradguard
        >>> gradguard.clear_findings()
        >>> gradguard.findings()
        []
    """
    with _lock:
        return [replace(record) for record in _records]


def clear_findings() -> None:
    """Forget every recorded finding, so each location warns again the next time."""
    with _lock:
        _records.clear()
        _by_site.clear()


def resolve_checks(checks: tuple[str, ...]) -> tuple[str, ...]:
    """Validate check names (or codes) and return the names.

    Raises:
        TypeError: a check is not a string.
        ValueError: no check was given, or one is unknown; the message lists the valid ones.
    """
    valid = ", ".join(f"{name!r} ({code})" for name, code in CHECKS.items())
    if not checks:
        raise ValueError(f"allow() needs at least one check name; valid names are {valid}")
    names = []
    for check in checks:
        if not isinstance(check, str):
            raise TypeError(f"allow() takes check names as strings, not {check!r}; valid: {valid}")
        name = _CODES_TO_CHECKS.get(check.upper(), check)
        if name not in CHECKS:
            raise ValueError(f"allow() got an unknown check {check!r}; valid names are {valid}")
        names.append(name)
    return tuple(names)


def push_allowed(names: tuple[str, ...]) -> dict[str, int]:
    """Silence ``names`` in this thread until the matching :func:`pop_allowed`.

    Returns this thread's counts, for a :func:`pop_allowed` that may run in another thread.
    """
    counts = _allowed_counts()
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def pop_allowed(names: tuple[str, ...], counts: dict[str, int] | None = None) -> None:
    """Undo one :func:`push_allowed` of ``names`` (in this thread, or in ``counts``' thread)."""
    if counts is None:
        counts = _allowed_counts()
    for name in names:
        left = counts.get(name, 0) - 1
        if left > 0:
            counts[name] = left
        else:
            counts.pop(name, None)


def fail_open(where: str) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorate an internal check so that an error inside it never breaks the user's code.

    The error is reported once as an :class:`InternalCheckWarning` (raised when strict) and the
    check returns None.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R | None]:
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return fn(*args, **kwargs)
            except (GradGuardError, GradGuardWarning):
                raise  # a finding (strict, or a warning the user's filters turned into an error)
            except Exception as error:  # fail open: the user's step must go on
                report(
                    "internal-error",
                    f"gradguard's {where} check failed internally and was skipped: "
                    f"{type(error).__name__}: {error}",
                    "nothing to change in your code; please report this to gradguard",
                )
                return None

        guarded.__name__ = getattr(fn, "__name__", "guarded")
        guarded.__qualname__ = getattr(fn, "__qualname__", "guarded")
        return guarded

    return decorate
