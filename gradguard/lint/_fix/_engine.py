"""Fixing files: rewrite with libcst, re-analyse, repeat until nothing more to fix.

Only files with a fixable finding are read again; findings whose fix certainly cannot apply are
screened out on the ``ast`` first, and libcst is imported and parses a file only when something
in it will be rewritten. Each round applies every fix that does not overlap another; the file
is then analysed again, so a later round works on the real result (a fix that made another
finding disappear, or one that waited for its turn). A rewrite that does not compile is dropped
and reported: the file is never written broken.
"""

from __future__ import annotations

import ast
import difflib
import io
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from gradguard.lint._baseline import Baseline
from gradguard.lint._driver import Analyze, LintOptions, LintResult, check_source, default_analyze
from gradguard.lint._errors import LintUsageError
from gradguard.lint._finding import Finding
from gradguard.lint._fix._report import Applied, FixReport, LeftAlone
from gradguard.lint._fix._screen import screen
from gradguard.lint._fix._write import write_atomically

if TYPE_CHECKING:
    from gradguard.lint._fix._rewrite import Round

SAFE_CODES = frozenset({"GG106", "GG108", "GG110"})
UNSAFE_CODES = frozenset({"GG102", "GG103", "GG104", "GG109"})
# A round fixes every independent finding; only fixes that overlap wait for another round.
MAX_ROUNDS = 8
INSTALL_HINT = (
    "--fix and --diff need libcst, which gradguard's 'fix' extra installs: "
    "pip install 'gradguard[fix]' (or: pip install libcst)"
)

Check = Callable[[str, str], list[tuple[Finding, str]]]


@dataclass
class FileFix:
    """One file's fixing: its text before and after, what was applied and left."""

    path: str
    original: str
    fixed: str
    encoding: str
    applied: list[Applied] = field(default_factory=list)
    left: list[LeftAlone] = field(default_factory=list)
    findings: list[tuple[Finding, str]] = field(default_factory=list)
    error: str | None = None


def _read(path: str) -> tuple[str, str]:
    with open(path, "rb") as handle:
        data = handle.read()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding), encoding


def _libcst_half() -> ModuleType:
    """The libcst half, imported on first use: a run with nothing to rewrite never loads it."""
    try:
        from gradguard.lint._fix import _rewrite
    except ImportError as error:
        if (error.name or "").split(".")[0] != "libcst":
            raise
        raise LintUsageError(f"{INSTALL_HINT}; importing it failed: {error}") from None
    return _rewrite


def fix_file(path: str, codes: frozenset[str], check: Check) -> FileFix:
    """Fix one file in memory (nothing is written here)."""
    text, encoding = _read(path)
    outcome = FileFix(path, text, text, encoding, findings=check(path, text))
    lefts: list[LeftAlone] = []
    done_before: set[tuple[tuple[str, ...], str]] = set()
    for _ in range(MAX_ROUNDS):
        fixable = [f for f, _ in outcome.findings if f.code in codes]
        hopeless = screen(outcome.fixed, fixable)
        lefts = [LeftAlone(f, hopeless[id(f)]) for f in fixable if id(f) in hopeless]
        feasible = [f for f in fixable if id(f) not in hopeless]
        if not feasible:
            break
        rewrite = _libcst_half()
        try:
            done: Round = rewrite.fix_round(outcome.fixed, feasible)
        except rewrite.ParseError as error:
            outcome.error = f"{path}: not fixed, libcst cannot parse it: {error}"
            break
        lefts.extend(LeftAlone(left.finding, left.reason) for left in done.left)
        if done.text is None or done.text == outcome.fixed:
            break
        try:
            compile(done.text, path, "exec", dont_inherit=True, flags=ast.PyCF_ONLY_AST)
        except SyntaxError as error:
            outcome.error = (
                f"{path}: not fixed, the rewrite would not compile ({error}); please report it"
            )
            break
        signatures = {
            (tuple(sorted({f.code for f in edit.findings})), edit.description)
            for edit in done.edits
        }
        if signatures & done_before:
            # The same rewrite again: an earlier one did not remove its finding. Stop here
            # rather than repeat it; what was applied so far stands.
            repeated = sorted(signatures & done_before)[0][1]
            outcome.error = (
                f"{path}: a fix did not remove its finding ({repeated}); the file was fixed "
                "as far as it goes, please report it"
            )
            break
        done_before |= signatures
        outcome.fixed = done.text
        for edit in done.edits:
            first = min(edit.findings, key=lambda f: (f.line, f.column))
            outcome.applied.append(
                Applied(
                    path,
                    first.line,
                    tuple(sorted({f.code for f in edit.findings})),
                    edit.description,
                    edit.safe,
                )
            )
        outcome.findings = check(path, outcome.fixed)
    still = {id(f) for f, _ in outcome.findings}
    outcome.left = [left for left in lefts if id(left.finding) in still]
    return outcome


def unified_diff(path: str, before: str, after: str) -> str:
    """``before`` -> ``after`` as a unified diff naming ``path`` on both sides."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), path, path
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def fix_result(
    result: LintResult,
    options: LintOptions,
    *,
    unsafe: bool,
    diff: bool,
    baseline: str | None = None,
    analyze: Analyze | None = None,
) -> FixReport:
    """Fix the files of ``result`` that have fixable findings; write them unless ``diff``.

    Args:
        result: what ``lint_paths`` found.
        options: the options it was found with (selection, configuration, suppressions).
        unsafe: apply the unsafe fixes too.
        diff: do not write; put a unified diff of every change in ``FixReport.diff``.
        baseline: the ``--baseline`` file, whose findings stay unreported after the fix.
        analyze: the analysis of one file (default: gradguard's).
    """
    codes = SAFE_CODES | (UNSAFE_CODES if unsafe else frozenset())
    chosen_analyze = analyze or default_analyze()

    def check(path: str, text: str) -> list[tuple[Finding, str]]:
        pairs = check_source(path, text, options, chosen_analyze).findings
        if baseline is None:
            return pairs
        known = Baseline(Path(baseline))
        return [(f, p) for f, p in pairs if not known.absorbs(f, p)]

    report = FixReport(written=not diff)
    by_file: dict[str, list[Finding]] = {}
    for finding in result.findings:
        by_file.setdefault(finding.file, []).append(finding)
    diffs: list[str] = []
    for path, findings in by_file.items():
        if not any(f.code in codes for f in findings):
            _keep(report, findings, result)
            continue
        try:
            outcome = fix_file(path, codes, check)
        except LintUsageError:
            raise
        except (OSError, UnicodeDecodeError, SyntaxError) as error:
            report.errors.append(f"{path}: not fixed, cannot read it again: {error}")
            _keep(report, findings, result)
            continue
        except Exception as error:  # fail open: the file stays as it is, its findings reported
            report.errors.append(f"{path}: internal error while fixing: {error!r}; please report")
            _keep(report, findings, result)
            continue
        if outcome.error is not None:
            report.errors.append(outcome.error)
        if outcome.fixed != outcome.original:
            if diff:
                diffs.append(unified_diff(path, outcome.original, outcome.fixed))
            else:
                try:
                    write_atomically(path, outcome.fixed.encode(outcome.encoding))
                except OSError as error:
                    report.errors.append(f"{path}: not fixed, cannot write it: {error}")
                    _keep(report, findings, result)
                    continue
            report.changed_files.append(path)
            report.applied.extend(outcome.applied)
        report.left.extend(outcome.left)
        kept = (
            outcome.findings
            if not diff
            else [(f, result.fingerprints.get(f, "")) for f in findings]
        )
        for finding, print_ in kept:
            report.remaining.append(finding)
            report.fingerprints[finding] = print_
    report.diff = "".join(diffs)
    if not unsafe:
        report.unsafe_available = sum(1 for f in report.remaining if f.code in UNSAFE_CODES)
    return report


def _keep(report: FixReport, findings: list[Finding], result: LintResult) -> None:
    for finding in findings:
        report.remaining.append(finding)
        report.fingerprints[finding] = result.fingerprints.get(finding, "")
