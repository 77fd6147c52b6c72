"""Text output, like ruff's: ``path:line:col: CODE name: message``, then the fix and the cause."""

from __future__ import annotations

from collections import Counter

from gradguard.lint._driver import LintResult
from gradguard.lint._finding import Finding
from gradguard.lint._reporters import Context
from gradguard.lint._rules import RULES

_COLORS = {"error": "\033[31m", "warning": "\033[33m", "note": "\033[36m"}
_BOLD = "\033[1m"
_RESET = "\033[0m"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def format_finding(finding: Finding, *, color: bool = False) -> str:
    """One finding as the lines the text format prints (columns are 1-based)."""
    location = f"{finding.file}:{finding.line}:{finding.column + 1}:"
    head = f"{finding.code} {finding.name}:"
    if color:
        location = f"{_BOLD}{location}{_RESET}"
        head = f"{_COLORS[finding.severity]}{head}{_RESET}"
    lines = [f"{location} {head} {finding.message}", f"  fix: {finding.fix}"]
    for related in finding.related:
        lines.append(f"  {related.file}:{related.line}: {related.message}")
    return "\n".join(lines)


def statistics(result: LintResult) -> str:
    """Findings per rule, most frequent first."""
    counts = Counter(f.code for f in result.findings)
    lines = []
    for code, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        rule = RULES[code]
        lines.append(f"{count:5d}  {code}  {rule.name:<34} {rule.severity}")
    return "\n".join(lines)


def summary(result: LintResult) -> str:
    """The closing line: how many findings of which severity, in how many files."""
    files = _plural(result.files, "file")
    extra = []
    if result.silenced:
        extra.append(f"{result.silenced} silenced by comments")
    if result.baselined:
        extra.append(f"{result.baselined} in the baseline")
    if result.skipped_files:
        extra.append(f"{_plural(result.skipped_files, 'file')} skipped by 'gradguard: skip-file'")
    if result.internal_errors:
        extra.append(f"{_plural(len(result.internal_errors), 'file')} not analysed (see above)")
    tail = f" ({'; '.join(extra)})" if extra else ""
    if not result.findings:
        return f"No findings in {files}{tail}."
    severities = Counter(f.severity for f in result.findings)
    parts = [
        _plural(severities[s], s) for s in ("error", "warning", "note") if severities[s]
    ]
    with_findings = len({f.file for f in result.findings})
    return (
        f"Found {_plural(len(result.findings), 'finding')} ({', '.join(parts)}) in "
        f"{with_findings} of {files}{tail}."
    )


def render(result: LintResult, context: Context) -> str:
    """The text report; with ``--statistics`` the per-rule counts replace the list."""
    if context.statistics:
        body = statistics(result)
    else:
        body = "\n".join(format_finding(f, color=context.color) for f in result.findings)
    return f"{body}\n{summary(result)}\n" if body else f"{summary(result)}\n"
