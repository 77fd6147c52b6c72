"""What ``gradguard run`` prints while a script runs: short live lines, wrapped, trimmed tracebacks.

Under ``gradguard run`` each finding is shown in full once, in the summary at exit; while the
script runs, a finding's warning is one line pointing there (``train.py:41: GG002
train-mode-without-grad (see summary)``). Lines are wrapped to the terminal's width (or
``COLUMNS``); output to a pipe or a file is not wrapped. A ``GradGuardError``'s traceback ends
at the program's own frame. Plain :func:`gradguard.watch` keeps Python's warnings unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import textwrap
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any

from gradguard import _findings


def end_at_user_frame(tb: TracebackType | None) -> None:
    """Cut the frames of gradguard and torch below the last frame of the program's own.

    A finding is raised from inside gradguard's hooks and wrappers, called by PyTorch; the
    program's line is what matters. The chained PyTorch error keeps its own traceback.
    """
    last = None
    node = tb
    while node is not None:
        name = node.tb_frame.f_code.co_filename
        if not _findings.is_internal_file(name):
            last = node
        node = node.tb_next
    if last is not None:
        last.tb_next = None


def point_to_summary(error: _findings.GradGuardError) -> None:
    """Make an uncaught finding's error print as one line: the summary that follows has it all."""
    error.args = (f"{error.finding.code} {error.finding.check} (see summary)",)


def terminal_width() -> int | None:
    """The width to wrap to: the terminal's, or ``COLUMNS``; None (no wrapping) for a pipe."""
    if "COLUMNS" in os.environ or sys.stderr.isatty():
        return max(shutil.get_terminal_size().columns, 40)
    return None


def wrap(text: str, width: int | None, indent: str, more: str) -> list[str]:
    """``text`` as lines of at most ``width`` (``indent`` first, ``more`` after); no path is
    broken. ``width=None``: one line, unwrapped."""
    if width is None:
        return [indent + text]
    return textwrap.wrap(
        text,
        width,
        initial_indent=indent,
        subsequent_indent=more,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent]


def _short_path(filename: str) -> str:
    """A path under the current directory relative to it; any other as it is."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive
        return filename
    return filename if relative.startswith(os.pardir) else relative


def short_live_warnings(width: int | None) -> Callable[[], None]:
    """Show each finding's warning as one line pointing to the summary, which has it in full.

    Other warnings, and findings whose warning the program turns into an error, are untouched.
    Returns the function that puts the previous ``warnings.showwarning`` back.
    """
    original = warnings.showwarning

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        finding = isinstance(category, type) and issubclass(category, _findings.GradGuardWarning)
        if not finding or not getattr(category, "code", ""):
            original(message, category, filename, lineno, file, line)
            return
        code, check = getattr(category, "code", ""), getattr(category, "check", "")
        text = f"{_short_path(filename)}:{lineno}: {code} {check} (see summary)"
        stream = file if file is not None else sys.stderr
        # As Python's own showwarning: a closed or missing stderr loses the line, nothing more.
        with contextlib.suppress(OSError, AttributeError):
            stream.write("\n".join(wrap(text, width, "", "    ")) + "\n")

    warnings.showwarning = showwarning

    def restore() -> None:
        if warnings.showwarning is showwarning:
            warnings.showwarning = original

    return restore
