"""The findings channel: check codes, warning and error classes, once-per-site reporting, allow().

Every check in gradguard, whether owned by a scope or by the watchdog, reports through
:func:`report`. A finding points at the user's line (the innermost frame outside gradguard,
torch, the standard library and installed third-party libraries: :func:`user_location`), is
warned once per code location, is recorded for :func:`findings`, and is raised as
:class:`GradGuardError` instead when strict.
"""

from __future__ import annotations

import contextlib
import os
import site
import sys
import sysconfig
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
        processes: the processes it happened in, by ``multiprocessing`` name, when findings were
            gathered from the program's child processes (``gradguard run``); empty otherwise.
    """

    code: str
    check: str
    message: str
    filename: str
    lineno: int
    count: int = 1
    fix: str = ""
    processes: tuple[str, ...] = ()


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

# What a frame's file is, as far as finding the user's line goes.
_SKIP = 0  # gradguard, torch, context plumbing (contextlib, threading, ...), frozen importlib
_STDLIB = 1  # the rest of the standard library
_LIBRARY = 2  # an installed third-party distribution (site-packages and the like)
_USER = 3  # everything else: the script, its directory, editable installs, the working tree

_PLUMBING_MODULES = ("contextlib", "threading", "asyncio", "functools", "wrapt")

# filename -> (kind, top-level package of a library); a frame's file never changes its kind.
_kinds: dict[str, tuple[int, str]] = {}
_roots: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None = None


def _directory(path: str) -> str:
    return os.path.join(os.path.abspath(path), "")


def _find_roots() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(skipped prefixes, third-party install directories, standard library directories).

    Third-party directories come first and longest first: a venv's site-packages, or the base
    interpreter's, sits inside a standard library directory.
    """
    skipped = [_directory(_PACKAGE_DIR)]
    torch_file = getattr(sys.modules.get("torch"), "__file__", None)
    if torch_file:  # an installed torch is skipped by name; this covers a source checkout
        skipped.append(_directory(os.path.dirname(torch_file)))
    libraries: set[str] = set()
    with contextlib.suppress(Exception):  # site may be trimmed down (embedded interpreters)
        libraries.update(site.getsitepackages())
        libraries.add(site.getusersitepackages())
    paths = sysconfig.get_paths()
    libraries.update(paths[key] for key in ("purelib", "platlib") if key in paths)
    libraries.update(
        entry
        for entry in sys.path
        if os.path.basename(entry.rstrip(os.sep)) in ("site-packages", "dist-packages")
    )
    stdlib = {paths[key] for key in ("stdlib", "platstdlib") if key in paths}
    stdlib.add(os.path.dirname(os.__file__))
    return (
        tuple(skipped),
        tuple(sorted({_directory(p) for p in libraries if p}, key=len, reverse=True)),
        tuple(_directory(p) for p in stdlib if p),
    )


def _kind(filename: str) -> tuple[int, str]:
    known = _kinds.get(filename)
    if known is not None:
        return known
    global _roots
    if _roots is None:
        _roots = _find_roots()
    skipped, libraries, stdlib = _roots
    path = os.path.abspath(filename) if not filename.startswith("<") else filename
    kind: tuple[int, str] = (_USER, "")
    if filename.startswith("<frozen") or path.startswith(skipped):
        kind = (_SKIP, "")
    else:
        for root in (*libraries, *stdlib):
            if path.startswith(root):
                package = path[len(root) :].split(os.sep, 1)[0].removesuffix(".py")
                if package == "torch" or package in _PLUMBING_MODULES:
                    kind = (_SKIP, "")
                elif root in libraries:
                    kind = (_LIBRARY, package)
                else:
                    kind = (_STDLIB, "")
                break
    _kinds[filename] = kind
    return kind


def is_internal_file(filename: str) -> bool:
    """Whether frames of ``filename`` are gradguard's, torch's or plumbing: never the user's."""
    return _kind(filename)[0] == _SKIP


def user_location(start: FrameType | None = None) -> tuple[FrameType | None, str]:
    """The user's innermost frame, and the library the work happened inside ("" when none).

    The user's frame is the innermost one that is not gradguard, torch, the standard library or
    an installed third-party distribution; the script, its directory, editable installs and the
    working tree are the user's. The library is the outermost third-party frame below it, as
    ``"transformers GenerationMixin.generate"``. With no user frame at all (a library-only run),
    the frame is the innermost one outside gradguard, torch and context plumbing, as before.
    """
    frame: FrameType | None = start if start is not None else sys._getframe(1)
    fallback: FrameType | None = None
    library = ""
    while frame is not None:
        kind, package = _kind(frame.f_code.co_filename)
        if kind == _USER:
            return frame, library
        if kind != _SKIP and fallback is None:
            fallback = frame
        if kind == _LIBRARY:
            code = frame.f_code
            name = getattr(code, "co_qualname", code.co_name)
            # A decorator's wrapper (a closure) says less than the method it wraps.
            if "<" not in name or not library:
                library = f"{package} {name}"
        frame = frame.f_back
    return fallback, ""


def user_frame(start: FrameType | None = None) -> FrameType | None:
    """The innermost frame that belongs to the user (see :func:`user_location`)."""
    return user_location(start if start is not None else sys._getframe(1))[0]


def user_site(start: FrameType | None = None) -> tuple[str, int]:
    """(filename, line) of the user's frame; ``("<unknown>", 0)`` when there is none."""
    frame = user_frame(start if start is not None else sys._getframe(1))
    if frame is None:
        return ("<unknown>", 0)
    return (frame.f_code.co_filename, frame.f_lineno)


def user_site_inside(start: FrameType | None = None) -> tuple[tuple[str, int], str]:
    """:func:`user_site` and the library the work happened inside, as ``" (inside X)"`` or ""."""
    frame, library = user_location(start if start is not None else sys._getframe(1))
    site = ("<unknown>", 0) if frame is None else (frame.f_code.co_filename, frame.f_lineno)
    return site, f" (inside {library})" if library else ""


def _allowed_counts() -> dict[str, int]:
    counts: dict[str, int] | None = getattr(_local, "allowed", None)
    if counts is None:
        counts = _local.allowed = {}
    return counts


# Checks allowed in every thread (the pytest plugin's marker, for the test's duration).
_allowed_everywhere: dict[str, int] = {}


def is_allowed(check: str) -> bool:
    """Whether ``check`` is silenced in this thread (:func:`allow`) or everywhere."""
    counts: dict[str, int] | None = getattr(_local, "allowed", None)
    if counts is not None and counts.get(check, 0) > 0:
        return True
    return _allowed_everywhere.get(check, 0) > 0


def push_allowed_everywhere(names: tuple[str, ...]) -> None:
    """Allow ``names`` in every thread until :func:`pop_allowed_everywhere` (counted)."""
    with _lock:
        for name in names:
            _allowed_everywhere[name] = _allowed_everywhere.get(name, 0) + 1


def pop_allowed_everywhere(names: tuple[str, ...]) -> None:
    """Undo one :func:`push_allowed_everywhere` of ``names``."""
    with _lock:
        for name in names:
            left = _allowed_everywhere.get(name, 0) - 1
            if left > 0:
                _allowed_everywhere[name] = left
            else:
                _allowed_everywhere.pop(name, None)


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
    if check in _ALWAYS_ERRORS or (_strict_now() if strict is None else strict):
        raise GradGuardError(replace(record))
    if first:
        category = WARNING_CLASSES.get(check, GradGuardWarning)
        warnings.warn_explicit(format_finding(record), category, filename, lineno)
    return record


def _strict_now() -> bool:
    # GRADGUARD_STRICT is validated where it is first used (watch(), the pytest plugin, gradguard
    # run); a value made invalid later must not turn a finding into a ValueError in the user's
    # forward or a scope's exit: the finding warns.
    try:
        return _config.is_strict()
    except ValueError:
        return False


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


def fail_open(
    where: str, strict: Callable[[], bool | None] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorate an internal check so that an error inside it never breaks the user's code.

    The error is reported once as an :class:`InternalCheckWarning` (raised when strict: ``strict``
    gives the owner's own setting, such as ``watch(strict=...)``) and the check returns None.
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
                    strict=strict() if strict is not None else None,
                )
                return None

        guarded.__name__ = getattr(fn, "__name__", "guarded")
        guarded.__qualname__ = getattr(fn, "__qualname__", "guarded")
        return guarded

    return decorate
