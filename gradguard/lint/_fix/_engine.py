"""Fixing files: parse with libcst, rewrite, re-analyse, repeat until nothing more to fix.

Only files with a fixable finding are read again and parsed with libcst. Each round applies every
fix that does not overlap another; the file is then analysed again, so a later round works on
the real result (a fix that made another finding disappear, or one that waited for its turn).
A rewrite that does not compile is dropped and reported: the file is never written broken.
"""

from __future__ import annotations

import difflib
import io
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from gradguard.lint._baseline import Baseline
from gradguard.lint._driver import Analyze, LintOptions, LintResult, check_source, default_analyze
from gradguard.lint._finding import Finding
from gradguard.lint._fix._edits import Edit, apply_edits, constant
from gradguard.lint._fix._plan import Context, Fixer, Left
from gradguard.lint._fix._report import Applied, FixReport, LeftAlone
from gradguard.lint._fix._safe import (
    fix_accumulations,
    fix_async_decorators,
    fix_eval_no_grad_pairs,
)
from gradguard.lint._fix._tree import Tree
from gradguard.lint._fix._unsafe import (
    fix_eval_forward_with_grad,
    fix_grad_disabled,
    fix_step_in_eval,
    fix_train_restores_snapshot,
)
from gradguard.lint._fix._write import write_atomically

SAFE_FIXERS: dict[str, Fixer] = {
    "GG110": fix_eval_no_grad_pairs,
    "GG108": fix_async_decorators,
    "GG106": fix_accumulations,
}
UNSAFE_FIXERS: dict[str, Fixer] = {
    "GG102": fix_eval_forward_with_grad,
    "GG109": fix_train_restores_snapshot,
    "GG103": fix_step_in_eval,
    "GG104": fix_grad_disabled,
}
# A round fixes every independent finding; only fixes that overlap wait for another round.
MAX_ROUNDS = 8

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


def _choose(edits: list[Edit]) -> list[Edit]:
    """The edits that claim nothing an earlier one claimed, in the order of their findings."""
    chosen: list[Edit] = []
    claimed: set[tuple[str, int, int]] = set()
    for edit in sorted(edits, key=lambda e: min((f.line, f.column) for f in e.findings)):
        if edit.claims & claimed:
            continue
        claimed |= edit.claims
        chosen.append(edit)
    return chosen


def _rewrite(context: Context, edits: list[Edit]) -> str:
    needed = set().union(*(edit.imports for edit in edits))
    ops, changes = context.names.import_ops(needed)
    imports = Edit([], "imports", safe=True, blocks=ops)
    for node, replacement in changes.items():
        imports.node(node, constant(replacement))
    return apply_edits(context.tree.module, [*edits, imports]).code


def fix_file(path: str, fixers: dict[str, Fixer], check: Check) -> FileFix:
    """Fix one file in memory (nothing is written here)."""
    text, encoding = _read(path)
    outcome = FileFix(path, text, text, encoding, findings=check(path, text))
    lefts: list[Left] = []
    for _ in range(MAX_ROUNDS):
        fixable = [f for f, _ in outcome.findings if f.code in fixers]
        lefts = []
        if not fixable:
            break
        try:
            context = Context(Tree(outcome.fixed))
        except cst.ParserSyntaxError as error:
            outcome.error = f"{path}: not fixed, libcst cannot parse it: {error.message}"
            break
        edits: list[Edit] = []
        for code, fixer in fixers.items():
            mine = [f for f in fixable if f.code == code]
            for result in fixer(context, mine) if mine else ():
                (lefts if isinstance(result, Left) else edits).append(result)  # type: ignore[arg-type]
        chosen = _choose(edits)
        if not chosen:
            break
        rewritten = _rewrite(context, chosen)
        try:
            compile(rewritten, path, "exec", dont_inherit=True, flags=0x400)  # ast.PyCF_ONLY_AST
        except SyntaxError as error:
            outcome.error = (
                f"{path}: not fixed, the rewrite would not compile ({error}); please report it"
            )
            break
        if rewritten == outcome.fixed:
            break
        outcome.fixed = rewritten
        for edit in chosen:
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
    outcome.left = [LeftAlone(x.finding, x.reason) for x in lefts if id(x.finding) in still]
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
    fixers = {**SAFE_FIXERS, **(UNSAFE_FIXERS if unsafe else {})}
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
        if not any(f.code in fixers for f in findings):
            _keep(report, findings, result)
            continue
        try:
            outcome = fix_file(path, fixers, check)
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
        report.unsafe_available = sum(1 for f in report.remaining if f.code in UNSAFE_FIXERS)
    return report


def _keep(report: FixReport, findings: list[Finding], result: LintResult) -> None:
    for finding in findings:
        report.remaining.append(finding)
        report.fingerprints[finding] = result.fingerprints.get(finding, "")
