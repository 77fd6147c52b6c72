"""Lint many files: read each, analyse it, keep what the selection, comments and baseline leave.

The driver owns everything between the paths and the reporters; the analysis of one file is
``gradguard.lint._analysis.analyze(source, path)``. A file that cannot be read or decoded is a
GG100 finding and the others are still linted; an internal error of the analysis on one file is
reported on stderr and the others are still linted.
"""

from __future__ import annotations

import io
import os
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


@dataclass
class FileOutcome:
    """What linting one file gave, before the baseline (which the parent process applies)."""

    findings: list[tuple[Finding, str]] = field(default_factory=list)  # with fingerprints
    silenced: int = 0
    skipped: bool = False
    internal_error: str | None = None


def check_source(path: str, source: str, options: LintOptions, analyze: Analyze) -> FileOutcome:
    """Lint one file's source: the selected, unsilenced findings with their fingerprints."""
    outcome = FileOutcome()
    suppressions = Suppressions.parse(source)
    if suppressions.skip_file:
        outcome.skipped = True
        return outcome
    per_file = (
        options.config.ignored_in(Path(path).resolve())
        if options.config.per_file_ignores
        else frozenset()
    )
    active = [
        code
        for code in RULES
        if options.selection.enabled(code) and code not in per_file and code != "GG190"
    ]
    try:
        found = analyze(source, path)
    except Exception as error:  # fail open: one file's internal error never stops the run
        outcome.internal_error = f"{path}: internal error in the analysis: {error!r}"
        return outcome
    selected = [f for f in found if f.code in active]
    kept, outcome.silenced = suppressions.filter(selected)
    report_unused = (
        options.warn_unused_ignores
        and "GG190" not in options.selection.ignore
        and "GG190" not in per_file
    )
    if report_unused:
        kept.extend(suppressions.unused(path, active))
    lines = source.splitlines()
    for finding in sorted(kept, key=lambda f: (f.line, f.column, f.code)):
        outcome.findings.append((finding, fingerprint(lines, finding)))
    return outcome


def check_file(path: str, options: LintOptions, analyze: Analyze) -> FileOutcome:
    """Read and lint one file; an unreadable one is a GG100 finding."""
    try:
        source = read_source(path)
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError) as error:
        outcome = FileOutcome()
        if options.selection.enabled("GG100"):
            outcome.findings.append((_parse_error(path, f"cannot read {path}: {error}"), "0" * 16))
        return outcome
    return check_source(path, source, options, analyze)


# Parallel linting: worth a process start only for a real project; files go to workers in
# contiguous chunks and come back in order, so the output does not depend on the job count.
_PARALLEL_MIN_FILES = 24
_worker_options: LintOptions | None = None


def _init_worker(options: LintOptions) -> None:
    global _worker_options
    _worker_options = options


def _check_in_worker(path: str) -> FileOutcome:
    assert _worker_options is not None
    return check_file(path, _worker_options, default_analyze())


def _outcomes(
    files: list[str], options: LintOptions, analyze: Analyze | None, jobs: int
) -> list[FileOutcome]:
    if analyze is not None or jobs <= 1 or len(files) < _PARALLEL_MIN_FILES:
        chosen = analyze or default_analyze()
        return [check_file(path, options, chosen) for path in files]
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return [check_file(path, options, default_analyze()) for path in files]
    default_analyze()  # imported once here, inherited by the forked workers
    context = multiprocessing.get_context("fork")
    worker_options = LintOptions(
        selection=options.selection,
        config=options.config,
        warn_unused_ignores=options.warn_unused_ignores,
    )
    chunk = max(1, len(files) // (jobs * 4))
    with context.Pool(jobs, initializer=_init_worker, initargs=(worker_options,)) as pool:
        return pool.map(_check_in_worker, files, chunksize=chunk)


def default_jobs() -> int:
    """Worker processes by default: one per CPU this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def lint_paths(
    paths: Sequence[str],
    options: LintOptions,
    analyze: Analyze | None = None,
    *,
    jobs: int | None = None,
) -> LintResult:
    """Lint every Python file under ``paths``.

    Args:
        paths: files and directories.
        options: selection, exclusions, configuration, baseline.
        analyze: the analysis of one file (default: gradguard's); a custom one runs in-process.
        jobs: worker processes (default: one per CPU; 1 lints in this process).

    Raises:
        LintUsageError: a path that does not exist.
    """
    files = discover(paths, options.exclude, respect_gitignore=options.respect_gitignore)
    result = LintResult(files=len(files))
    for outcome in _outcomes(files, options, analyze, jobs or default_jobs()):
        result.silenced += outcome.silenced
        result.skipped_files += outcome.skipped
        if outcome.internal_error is not None:
            result.internal_errors.append(outcome.internal_error)
        for finding, print_ in outcome.findings:
            if options.baseline is not None and options.baseline.absorbs(finding, print_):
                result.baselined += 1
                continue
            result.findings.append(finding)
            result.fingerprints[finding] = print_
    return result


def report_internal_errors(result: LintResult) -> None:
    """Say on stderr which files the analysis could not finish (the rest were linted)."""
    for line in result.internal_errors:
        print(f"gradguard lint: {line}; please report it", file=sys.stderr)
