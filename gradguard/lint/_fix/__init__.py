"""``gradguard lint --fix`` / ``--diff``: rewrite findings into scopes that cannot get them wrong.

Safe fixes (``--fix``): GG110 (``R.eval()`` + ``with torch.no_grad():`` + ``R.train()`` becomes
``with gradguard.evaluating(R):``), GG108 (``@torch.no_grad()`` on an ``async def`` becomes
``@gradguard.inference_fn(models=[])``), GG106 (``total += loss`` becomes
``total += loss.item()``, or ``.detach()`` where the accumulator is used as a tensor). Unsafe fixes
(``--unsafe-fixes``): GG102, GG109, GG103, GG104.

The fixes use libcst (the ``gradguard[fix]`` extra), imported only when a file has a fixable
finding; the analysis itself stays on the standard library.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from gradguard.lint._errors import LintUsageError
from gradguard.lint._fix._report import Applied, FixReport, LeftAlone

if TYPE_CHECKING:
    from gradguard.lint._driver import Analyze, LintOptions, LintResult

__all__ = [
    "SAFE_CODES",
    "UNSAFE_CODES",
    "Applied",
    "FixReport",
    "LeftAlone",
    "fix_result",
    "require_libcst",
]

SAFE_CODES = ("GG106", "GG108", "GG110")
UNSAFE_CODES = ("GG102", "GG103", "GG104", "GG109")


def require_libcst() -> None:
    """Check that libcst can be imported, without importing it.

    Raises:
        LintUsageError: libcst is not installed; the message says how to install it.
    """
    try:
        found = importlib.util.find_spec("libcst") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        from gradguard.lint._fix._engine import INSTALL_HINT

        raise LintUsageError(INSTALL_HINT)


def fix_result(
    result: LintResult,
    options: LintOptions,
    *,
    unsafe: bool = False,
    diff: bool = False,
    baseline: str | None = None,
    analyze: Analyze | None = None,
) -> FixReport:
    """Fix the files of ``result`` that have fixable findings; write them unless ``diff``.

    Files are written atomically (a temporary file renamed over the original, its mode bits
    kept). Fixed files are analysed again, so ``FixReport.remaining`` is what ``gradguard lint``
    would report next; nothing else of the result changes.

    Args:
        result: what ``lint_paths`` found.
        options: the options it was found with (selection, configuration, suppressions).
        unsafe: apply the unsafe fixes too.
        diff: write nothing; ``FixReport.diff`` holds a unified diff of every change.
        baseline: the ``--baseline`` file, whose findings stay unreported after the fix.
        analyze: the analysis of one file (default: gradguard's).

    Raises:
        LintUsageError: libcst is not installed, or cannot be imported where a file needs it.
    """
    require_libcst()
    from gradguard.lint._fix._engine import fix_result as run

    return run(result, options, unsafe=unsafe, diff=diff, baseline=baseline, analyze=analyze)
