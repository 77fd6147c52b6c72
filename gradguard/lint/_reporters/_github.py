"""GitHub Actions workflow commands: one ``::error``/``::warning``/``::notice`` line per finding.

GitHub shows each as an annotation on the pull request's diff, at the finding's line.
"""

from __future__ import annotations

from gradguard.lint._driver import LintResult
from gradguard.lint._finding import Finding
from gradguard.lint._reporters import Context
from gradguard.lint._reporters._text import summary

_LEVEL = {"error": "error", "warning": "warning", "note": "notice"}


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(finding: Finding) -> str:
    """The workflow command for one finding (columns 1-based)."""
    properties = ",".join(
        [
            f"file={_property(finding.file)}",
            f"line={finding.line}",
            f"col={finding.column + 1}",
            f"endLine={finding.end_line}",
            f"endColumn={finding.end_column + 1}",
            f"title={_property(f'{finding.code} {finding.name}')}",
        ]
    )
    body = [finding.message, f"Fix: {finding.fix}"]
    body.extend(f"{r.file}:{r.line}: {r.message}" for r in finding.related)
    return f"::{_LEVEL[finding.severity]} {properties}::{_data(chr(10).join(body))}"


def render(result: LintResult, context: Context) -> str:
    """One annotation per finding, then the summary line."""
    lines = [annotation(f) for f in result.findings]
    lines.append(summary(result))
    return "\n".join(lines) + "\n"
