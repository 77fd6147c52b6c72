"""JSON output: ``{"version": 1, "findings": [...]}``.

Each finding: ``code``, ``name``, ``severity`` (``"error"``, ``"warning"``, ``"note"``),
``message``, ``fix``, ``file`` (as the path was given), ``line``, ``column``, ``end_line``,
``end_column`` (1-based, as the text output and SARIF count them; ``end_column`` is the column
just past the flagged code) and ``related``: a list of ``{"file", "line", "message"}``, the lines
that caused the state. The order is file, then line. New keys may be added in version 1; a
change of meaning bumps ``version``.
"""

from __future__ import annotations

import json
from typing import Any

from gradguard.lint._driver import LintResult
from gradguard.lint._finding import Finding
from gradguard.lint._reporters import Context

VERSION = 1


def as_dict(finding: Finding) -> dict[str, Any]:
    """One finding as the JSON object the format documents."""
    return {
        "code": finding.code,
        "name": finding.name,
        "severity": finding.severity,
        "message": finding.message,
        "fix": finding.fix,
        "file": finding.file,
        "line": finding.line,
        "column": finding.column + 1,
        "end_line": finding.end_line,
        "end_column": finding.end_column + 1,
        "related": [
            {"file": r.file, "line": r.line, "message": r.message} for r in finding.related
        ],
    }


def render(result: LintResult, context: Context) -> str:
    """The JSON document, indented, with a final newline."""
    document = {"version": VERSION, "findings": [as_dict(f) for f in result.findings]}
    return json.dumps(document, indent=2) + "\n"
