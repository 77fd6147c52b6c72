"""Helpers for the ``--fix`` tests: fix one source text through the real driver and fixer."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

from gradguard.lint._driver import LintOptions, lint_paths
from gradguard.lint._fix import FixReport, fix_result
from gradguard.lint._select import Selection, resolve


def options(select: str = "ALL") -> LintOptions:
    """Lint options selecting ``select`` (comma-separated codes, names or ALL)."""
    return LintOptions(
        selection=Selection(select=resolve(select.split(","), where="test"), ignore=frozenset())
    )


def fix_paths(
    paths: list[Path], *, select: str = "ALL", unsafe: bool = False, diff: bool = False
) -> FixReport:
    """Lint ``paths`` and fix what was found, as ``gradguard lint --fix`` does."""
    chosen = options(select)
    result = lint_paths([str(p) for p in paths], chosen, jobs=1)
    return fix_result(result, chosen, unsafe=unsafe, diff=diff)


def fix_text(
    tmp_path: Path, source: str, *, select: str = "ALL", unsafe: bool = False, name: str = "m.py"
) -> tuple[str, FixReport]:
    """Write ``source`` to a file, fix it in place and return the new text with the report."""
    path = tmp_path / name
    path.write_text(source, encoding="utf-8")
    report = fix_paths([path], select=select, unsafe=unsafe)
    return path.read_text(encoding="utf-8"), report


def comments(source: str) -> list[str]:
    """Every comment of a source text, in order."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [token.string for token in tokens if token.type == tokenize.COMMENT]
