"""Every rule's invalid snippets report exactly the marked lines; its valid snippets stay silent."""

from __future__ import annotations

import re

import pytest

from gradguard.lint._analysis import analyze
from gradguard.lint._rules import RULES
from tests.lint.cases import INVALID, VALID

_EXPECT = re.compile(r"#\s*expect:\s*([A-Z0-9, ]+)")


def expected(source: str) -> set[tuple[int, str]]:
    """The (line, code) pairs a snippet marks with ``# expect: GG1xx``."""
    out: set[tuple[int, str]] = set()
    for number, line in enumerate(source.splitlines(), start=1):
        match = _EXPECT.search(line)
        if match:
            out.update((number, code.strip()) for code in match.group(1).split(","))
    return out


def found(source: str, *, with_notes: bool) -> set[tuple[int, str]]:
    findings = analyze(source, "snippet.py")
    return {(f.line, f.code) for f in findings if with_notes or RULES[f.code].enabled_by_default}


def _cases(table: dict[str, list[str]]) -> list[object]:
    return [
        pytest.param(code, source, id=f"{code}-{number}")
        for code, sources in table.items()
        for number, source in enumerate(sources, start=1)
    ]


@pytest.mark.parametrize(("code", "source"), _cases(INVALID))
def test_invalid_snippet_reports_exactly_the_marked_lines(code: str, source: str) -> None:
    marked = expected(source)
    assert any(marked_code == code for _, marked_code in marked), "a case marks its own rule"
    assert found(source, with_notes=code == "GG110") == marked


@pytest.mark.parametrize(("code", "source"), _cases(VALID))
def test_valid_snippet_is_silent(code: str, source: str) -> None:
    assert found(source, with_notes=code == "GG110") == set()


def test_every_rule_has_invalid_and_valid_snippets() -> None:
    flow_rules = {code for code in RULES if code not in ("GG100", "GG190")}
    assert set(INVALID) == flow_rules
    assert set(VALID) == flow_rules


@pytest.mark.parametrize(("code", "source"), _cases(INVALID))
def test_invalid_finding_names_its_receiver_or_call_and_the_causing_line(
    code: str, source: str
) -> None:
    for finding in analyze(source, "snippet.py"):
        assert finding.related, finding
        assert f"line {finding.related[0].line}" in finding.message
        assert "`" in finding.message
        assert finding.fix.endswith(".")
        assert finding.fix.count(". ") == 0, "the fix is one sentence"
