"""Configuration: the ``GRADGUARD_*`` environment variables and :func:`configure`.

Environment variables are read when they are needed (not at import), so a change made after import
still counts; :func:`configure` overrides them for the whole process.
"""

from __future__ import annotations

import os
import threading

TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("0", "false", "no", "off", "")

_lock = threading.Lock()
_strict_override: bool | None = None


def env_flag(name: str) -> bool:
    """Read a boolean environment variable, rejecting anything that is not a known spelling.

    Raises:
        ValueError: the variable holds something other than ``1/true/yes/on`` or
            ``0/false/no/off/empty`` (any case).
    """
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ValueError(
        f"{name}={raw!r} is not a valid value: use one of {', '.join(TRUE_VALUES)} to turn it on "
        f"or one of {', '.join(v for v in FALSE_VALUES if v)} (or leave it empty) to turn it off; "
        "any case is accepted"
    )


WATCH_ON = TRUE_VALUES
WATCH_DEEP = ("deep",)


def watch_level() -> str | None:
    """What ``GRADGUARD_WATCH`` asks for: ``None`` (not watching), ``"on"`` or ``"deep"``.

    Raises:
        ValueError: ``GRADGUARD_WATCH`` holds something other than ``1/true/yes/on``, ``deep``
            or ``0/false/no/off/empty`` (any case).
    """
    raw = os.environ.get("GRADGUARD_WATCH", "")
    value = raw.strip().lower()
    if value in FALSE_VALUES:
        return None
    if value in WATCH_DEEP:
        return "deep"
    if value in WATCH_ON:
        return "on"
    raise ValueError(
        f"GRADGUARD_WATCH={raw!r} is not a valid value: use one of {', '.join(WATCH_ON)} to "
        f"watch, 'deep' to also see every model at its first call, or one of "
        f"{', '.join(v for v in FALSE_VALUES if v)} (or leave it empty) to not watch; any case "
        "is accepted"
    )


def is_strict() -> bool:
    """Whether findings raise :class:`~gradguard.GradGuardError` instead of warning."""
    override = _strict_override
    if override is not None:
        return override
    return env_flag("GRADGUARD_STRICT")


def configure(*, strict: bool | None = None) -> None:
    """Set process-wide options, overriding the environment.

    Args:
        strict: ``True`` turns every finding into a :class:`~gradguard.GradGuardError` raised where
            it is detected; ``False`` makes findings warnings whatever ``GRADGUARD_STRICT`` says;
            ``None`` goes back to reading ``GRADGUARD_STRICT``.

    Raises:
        TypeError: ``strict`` is not a bool or None.

    Example:
        >>> import gradguard
        >>> gradguard.configure(strict=True)
        >>> gradguard.configure(strict=None)  # back to GRADGUARD_STRICT
    """
    global _strict_override
    if strict is not None and not isinstance(strict, bool):
        raise TypeError(f"configure(strict=...) takes True, False or None, not {strict!r}")
    with _lock:
        _strict_override = strict
