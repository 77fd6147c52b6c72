"""SARIF 2.1.0 output, for GitHub code scanning and other SARIF viewers.

One run; the driver lists every rule (id, name, short and full description, help text and
markdown with the bad and good examples, default level). Each result has its rule, level,
message (with the fix), a physical location relative to ``%SRCROOT%`` (the directory the command
ran in), related locations for the lines that caused the state, and a ``partialFingerprints``
entry (the statement fingerprint the baseline uses) so that code scanning follows a finding
across line shifts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gradguard.lint._driver import LintResult
from gradguard.lint._finding import Finding
from gradguard.lint._reporters import Context
from gradguard.lint._rules import RULES, Rule

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT_KEY = "gradguardStatement/v1"
_LEVEL = {"error": "error", "warning": "warning", "note": "note"}


def _artifact(file: str, root: Path) -> dict[str, Any]:
    absolute = Path(file).resolve()
    try:
        relative = absolute.relative_to(root)
    except ValueError:
        return {"uri": absolute.as_uri()}
    return {"uri": relative.as_posix(), "uriBaseId": "%SRCROOT%"}


def _region(line: int, column: int, end_line: int, end_column: int) -> dict[str, int]:
    region = {"startLine": max(line, 1), "startColumn": column + 1}
    if end_line >= line:
        region["endLine"] = end_line
        if end_column > column or end_line > line:
            region["endColumn"] = end_column + 1
    return region


def _help(rule: Rule) -> tuple[str, str]:
    text = [rule.summary]
    markdown = [rule.summary]
    if rule.doc:
        text.append(rule.doc.strip())
        markdown.append(rule.doc.strip())
    if rule.bad_example:
        text.append("Bad:\n" + rule.bad_example.strip())
        markdown.append("Bad:\n\n```python\n" + rule.bad_example.strip() + "\n```")
    if rule.good_example:
        text.append("Good:\n" + rule.good_example.strip())
        markdown.append("Good:\n\n```python\n" + rule.good_example.strip() + "\n```")
    if rule.runtime_twin:
        twin = f"Runtime twin: {rule.runtime_twin} (the watchdog's check for the same mistake)."
        text.append(twin)
        markdown.append(twin)
    return "\n\n".join(text), "\n\n".join(markdown)


def rule_descriptor(rule: Rule) -> dict[str, Any]:
    """The ``reportingDescriptor`` of one rule."""
    text, markdown = _help(rule)
    properties: dict[str, Any] = {"tags": ["pytorch", "correctness"]}
    if rule.runtime_twin:
        properties["runtimeTwin"] = rule.runtime_twin
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": (rule.doc.strip() or rule.summary)},
        "help": {"text": text, "markdown": markdown},
        "defaultConfiguration": {
            "level": _LEVEL[rule.severity],
            "enabled": rule.enabled_by_default,
        },
        "properties": properties,
    }


def result_object(
    finding: Finding, print_: str, root: Path, rule_index: dict[str, int]
) -> dict[str, Any]:
    """The SARIF ``result`` of one finding."""
    related = [
        {
            "id": index,
            "message": {"text": r.message},
            "physicalLocation": {
                "artifactLocation": _artifact(r.file, root),
                "region": {"startLine": max(r.line, 1)},
            },
        }
        for index, r in enumerate(finding.related)
    ]
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "ruleIndex": rule_index[finding.code],
        "level": _LEVEL[finding.severity],
        "message": {"text": f"{finding.message}\nFix: {finding.fix}"},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": _artifact(finding.file, root),
                    "region": _region(
                        finding.line, finding.column, finding.end_line, finding.end_column
                    ),
                }
            }
        ],
        "partialFingerprints": {FINGERPRINT_KEY: print_},
    }
    if related:
        result["relatedLocations"] = related
    return result


def document(result: LintResult, root: Path) -> dict[str, Any]:
    """The SARIF log as a dictionary."""
    from gradguard import __version__

    root = root.resolve()
    rule_index = {code: index for index, code in enumerate(RULES)}
    srcroot = root.as_uri()
    if not srcroot.endswith("/"):
        srcroot += "/"
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "gradguard",
                        "semanticVersion": __version__,
                        "version": __version__,
                        "rules": [rule_descriptor(rule) for rule in RULES.values()],
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": srcroot}},
                "columnKind": "unicodeCodePoints",
                "results": [
                    result_object(f, result.fingerprints.get(f, ""), root, rule_index)
                    for f in result.findings
                ],
            }
        ],
    }


def render(result: LintResult, context: Context) -> str:
    """The SARIF log as JSON text."""
    root = context.root if context.root.is_absolute() else Path(os.getcwd()) / context.root
    return json.dumps(document(result, root), indent=2) + "\n"
