"""``gradguard lint``: find no_grad/eval mistakes in source files before they run.

``gradguard lint [PATH ...] [--select ...] [--ignore ...] [--format text|json|sarif|github]
[--output FILE] [--fail-on error|warning|note|never] [--statistics] [--explain RULE]
[--warn-unused-ignores] [--baseline FILE | --write-baseline FILE] [--fix | --diff]
[--unsafe-fixes]``. Exit status 0 when nothing at or above ``--fail-on`` was found (after
``--fix``: what remains), 1 when something was, 2 for bad usage. Imports no torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gradguard.lint._config import FAIL_ON, FileConfig, find, load
from gradguard.lint._errors import LintUsageError
from gradguard.lint._files import IgnoreList, exclude_list
from gradguard.lint._select import Selection, resolve, split_list

if TYPE_CHECKING:
    from gradguard.lint._driver import LintResult

SEVERITY_RANK = {"note": 1, "warning": 2, "error": 3}
FAIL_RANK = {"note": 1, "warning": 2, "error": 3, "never": 4}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``gradguard lint``'s options to its subparser."""
    from gradguard.lint._reporters import FORMATS

    parser.epilog = (
        "Rules are given by code (GG103), name (step-in-eval-mode), prefix (GG1) or ALL. "
        "Configuration: [tool.gradguard.lint] in the nearest pyproject.toml above the paths; "
        "options given here override it. Exit status: 0 clean, 1 findings at or above "
        "--fail-on, 2 bad usage."
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="files and directories to lint (default: .)"
    )
    parser.add_argument(
        "--select", action="append", metavar="RULES",
        help="only these rules (comma-separated codes, names or prefixes; default: all rules "
        "on by default, that is all but GG110 and GG190)",
    )
    parser.add_argument(
        "--ignore", action="append", metavar="RULES", help="leave these rules out"
    )
    parser.add_argument(
        "--exclude", action="append", metavar="PATTERN",
        help=".gitignore-style pattern of files or directories to skip (repeatable)",
    )
    parser.add_argument(
        "--no-gitignore", action="store_true", help="lint files that .gitignore excludes too"
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="text", help="output format (default: text)"
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE")
    parser.add_argument(
        "--fail-on", choices=FAIL_ON, default=None,
        help="lowest severity that makes the exit status 1 (default: warning)",
    )
    parser.add_argument(
        "--statistics", action="store_true", help="count findings per rule instead of listing them"
    )
    parser.add_argument(
        "--explain", metavar="RULE", help="print a rule's documentation with examples and exit"
    )
    parser.add_argument(
        "--warn-unused-ignores", action="store_true",
        help="report suppression comments that silence nothing or name no rule (GG190)",
    )
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument(
        "--baseline", metavar="FILE", help="report only findings that FILE does not record"
    )
    baseline.add_argument(
        "--write-baseline", metavar="FILE",
        help="record every current finding in FILE and exit 0 (adopt on an existing codebase)",
    )
    parser.add_argument(
        "--jobs", "-j", type=_positive, metavar="N",
        help="worker processes (default: one per CPU; 1 lints in one process)",
    )
    fixing = parser.add_argument_group(
        "fixes", "rewrite findings into gradguard's scopes (needs: pip install 'gradguard[fix]')"
    )
    fixing.add_argument(
        "--fix", action="store_true",
        help="apply the safe fixes (GG106, GG108, GG110) in place, then report what remains",
    )
    fixing.add_argument(
        "--diff", action="store_true",
        help="print the fixes as a unified diff and write nothing (text format only)",
    )
    fixing.add_argument(
        "--unsafe-fixes", action="store_true",
        help="with --fix or --diff: also the fixes that change behaviour (GG102, GG103, GG104, "
        "GG109)",
    )
    config = parser.add_mutually_exclusive_group()
    config.add_argument(
        "--config", metavar="PYPROJECT", help="read [tool.gradguard.lint] from this file"
    )
    config.add_argument(
        "--no-config", action="store_true", help="ignore pyproject.toml configuration"
    )


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return number


def _selectors(values: list[str] | None, where: str) -> frozenset[str] | None:
    if values is None:
        return None
    return resolve([token for value in values for token in split_list(value)], where=where)


def _load_config(args: argparse.Namespace, paths: list[str]) -> FileConfig:
    if args.no_config:
        return FileConfig()
    if args.config:
        return load(Path(args.config))
    found = find(paths)
    return load(found) if found is not None else FileConfig()


def _exclude(args: argparse.Namespace, config: FileConfig) -> list[IgnoreList]:
    if args.exclude is not None:
        patterns = [p for value in args.exclude for p in value.split(",") if p.strip()]
        return [exclude_list(patterns, Path.cwd().resolve(), where="--exclude")]
    return [config.exclude] if config.exclude is not None else []


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as error:
        raise LintUsageError(f"--output {output}: cannot write it: {error.strerror}") from None


def _color(args: argparse.Namespace) -> bool:
    if args.output is not None or args.format != "text" or os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or sys.stdout.isatty()


def run(args: argparse.Namespace) -> int:
    """Lint as ``args`` say; returns the exit status.

    Raises:
        LintUsageError: bad arguments or configuration.
    """
    from gradguard.lint._baseline import Baseline, write
    from gradguard.lint._driver import LintOptions, lint_paths, report_internal_errors
    from gradguard.lint._reporters import Context, reporter
    from gradguard.lint._reporters._text import statistics, summary

    if args.explain is not None:
        from gradguard.lint._explain import explain

        _write(explain(args.explain), args.output)
        return 0
    fixing = _check_fix_arguments(args)
    paths = list(args.paths) or ["."]
    config = _load_config(args, paths)
    select = _selectors(args.select, "--select")
    ignore = _selectors(args.ignore, "--ignore")
    selection = Selection(
        select=select if select is not None else config.select,
        ignore=ignore if ignore is not None else (config.ignore or frozenset()),
    )
    fail_on = args.fail_on or config.fail_on or "warning"
    options = LintOptions(
        selection=selection,
        exclude=_exclude(args, config),
        config=config,
        respect_gitignore=not args.no_gitignore,
        warn_unused_ignores=args.warn_unused_ignores,
        baseline=Baseline(Path(args.baseline)) if args.baseline else None,
    )
    result = lint_paths(paths, options, jobs=args.jobs)
    report_internal_errors(result)
    if fixing:
        from gradguard.lint._fix import fix_result

        fixed = fix_result(
            result, options, unsafe=args.unsafe_fixes, diff=args.diff, baseline=args.baseline
        )
        result.findings, result.fingerprints = fixed.remaining, fixed.fingerprints
        if args.diff:
            _write(fixed.diff, args.output)
        sys.stderr.write(fixed.summary())
        if args.diff:
            return _status(result, fail_on)
    if args.write_baseline:
        pairs = [(f, result.fingerprints[f]) for f in result.findings]
        count = write(Path(args.write_baseline), pairs)
        print(
            f"gradguard lint: wrote {count} finding(s) to the baseline {args.write_baseline}; "
            f"run with --baseline {args.write_baseline} to report only new ones",
            file=sys.stderr,
        )
        return 0
    context = Context(root=Path.cwd(), statistics=args.statistics, color=_color(args))
    _write(reporter(args.format)(result, context), args.output)
    if args.format != "text" or args.output is not None:
        # The report went to a file or is for a machine: the person reading the terminal still
        # gets the counts.
        if args.statistics and args.format != "text" and result.findings:
            print(statistics(result), file=sys.stderr)
        print(summary(result), file=sys.stderr)
    return _status(result, fail_on)


def _status(result: LintResult, fail_on: str) -> int:
    threshold = FAIL_RANK[fail_on]
    failing = any(SEVERITY_RANK[f.severity] >= threshold for f in result.findings)
    return 1 if failing else 0


def _check_fix_arguments(args: argparse.Namespace) -> bool:
    """Whether fixes are asked for; bad combinations are usage errors, found before any work."""
    fixing = bool(args.fix or args.diff)
    if args.unsafe_fixes and not fixing:
        raise LintUsageError("--unsafe-fixes goes with --fix (apply) or --diff (show)")
    if not fixing:
        return False
    if args.diff and args.format != "text":
        raise LintUsageError(
            f"--diff prints a unified diff, not --format {args.format}; use --fix to apply "
            "the fixes and report what remains in that format"
        )
    if args.write_baseline:
        raise LintUsageError("--write-baseline records findings; run it without --fix/--diff")
    from gradguard.lint._fix import require_libcst

    require_libcst()
    return True


def main(args: argparse.Namespace) -> int:
    """Entry point of ``gradguard lint`` (called by ``gradguard.cli``)."""
    try:
        return run(args)
    except LintUsageError as error:
        print(f"gradguard lint: error: {error}", file=sys.stderr)
        return 2
