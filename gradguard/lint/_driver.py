"""Lint many files: read each, analyse it, keep what the selection, comments and baseline leave.

The driver owns everything between the paths and the reporters; the analysis of one file is
``gradguard.lint._analysis.analyze(source, path)``. A file that cannot be read or decoded is a
GG100 finding and the others are still linted; an internal error of the analysis on one file is
reported on stderr and the others are still linted.
"""

from __future__ import annotations

import io
import sys
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gradguard.lint._baseline import Baseline, fingerprint
from gradguard.lint._config import FileConfig
from gradguard.lint._files import IgnoreList, discover
from gradguard.lint._finding import Finding
from gradguard.lint._rules import RULES
from gradguard.lint._select import Selection
from gradguard.lint._suppress import Suppressions

Analyze = Callable[[str, str], list[Finding]]


@dataclass
class LintOptions:
    """What to lint and what to leave out."""

    selection: Selection = field(default_factory=Selection)
    exclude: Sequence[IgnoreList] = ()
    config: FileConfig = field(default_factory=FileConfig)
    respect_gitignore: bool = True
    warn_unused_ignores: bool = False
    baseline: Baseline | None = None


@dataclass
class LintResult:
    """The findings to report, in file then line order, and what was left out."""

    findings: list[Finding] = field(default_factory=list)
    fingerprints: dict[Finding, str] = field(default_factory=dict)
    files: int = 0
    skipped_files: int = 0
    silenced: int = 0
    baselined: int = 0
    internal_errors: list[str] = field(default_factory=list)


def read_source(path: str) -> str:
    """The text of a Python file, decoded as Python would (PEP 263 coding line, BOM)."""
    with open(path, "rb") as handle:
        data = handle.read()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = data.decode(encoding)
    return text[1:] if text.startswith("\ufeff") else text


def _parse_error(path: str, message: str) -> Finding:
    rule = RULES["GG100"]
    return Finding(
        code=rule.code,
        name=rule.name,
        severity=rule.severity,
        message=message,
        fix="make the file readable as Python source (UTF-8, or the encoding its coding line "
        "declares); the other files were still linted",
        file=path,
        line=1,
        column=0,
        end_line=1,
        end_column=0,
    )


def default_analyze() -> Analyze:
    """The analysis of one file (imported here so that the interface imports without it)."""
    from gradguard.lint._analysis import analyze

    return analyze


def lint_file(
    path: str, source: str, options: LintOptions, analyze: Analyze, result: LintResult
) -> None:
    """Lint one file's source and add what is left to ``result``."""
    suppressions = Suppressions.parse(source)
    if suppressions.skip_file:
        result.skipped_files += 1
        return
    per_file = options.config.ignored_in(Path(path).resolve()) if options.config.per_file_ignores \
        else frozenset()
    active = [
        code for code in RULES
        if options.selection.enabled(code) and code not in per_file and code != "GG190"
    ]
    try:
        found = analyze(source, path)
    except Exception as error:  # fail open: one file's internal error never stops the run
        result.internal_errors.append(f"{path}: internal error in the analysis: {error!r}")
        return
    selected = [f for f in found if f.code in active]
    kept, silenced = suppressions.filter(selected)
    result.silenced += silenced
    if options.warn_unused_ignores and "GG190" not in options.selection.ignore \
            and "GG190" not in per_file:
        kept.extend(suppressions.unused(path, active))
    lines = source.splitlines()
    for finding in sorted(kept, key=lambda f: (f.line, f.column, f.code)):
        print_ = fingerprint(lines, finding)
        if options.baseline is not None and options.baseline.absorbs(finding, print_):
            result.baselined += 1
            continue
        result.findings.append(finding)
        result.fingerprints[finding] = print_


def lint_paths(
    paths: Sequence[str], options: LintOptions, analyze: Analyze | None = None
) -> LintResult:
    """Lint every Python file under ``paths``.

    Raises:
        LintUsageError: a path that does not exist.
    """
    if analyze is None:
        analyze = default_analyze()
    files = discover(paths, options.exclude, respect_gitignore=options.respect_gitignore)
    result = LintResult(files=len(files))
    for path in files:
        try:
            source = read_source(path)
        except (OSError, SyntaxError, UnicodeDecodeError, LookupError) as error:
            finding = _parse_error(path, f"cannot read {path}: {error}")
            if options.selection.enabled("GG100"):
                result.findings.append(finding)
                result.fingerprints[finding] = "0" * 16
            continue
        lint_file(path, source, options, analyze, result)
    return result


def report_internal_errors(result: LintResult) -> None:
    """Say on stderr which files the analysis could not finish (the rest were linted)."""
    for line in result.internal_errors:
        print(f"gradguard lint: {line}; please report it", file=sys.stderr)
