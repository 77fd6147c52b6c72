"""Every rule's documentation: all sections, its runtime twin, examples that tell the truth."""

from __future__ import annotations

import pytest

from gradguard.lint._analysis import analyze
from gradguard.lint._rules import RULES

_DOCUMENTED = [code for code in RULES if code != "GG190"]


@pytest.mark.parametrize("code", _DOCUMENTED)
def test_rule_doc_has_every_section(code: str) -> None:
    rule = RULES[code]
    for section in ("## What it does", "## Why is this bad?", "## Fix"):
        assert section in rule.doc
    if rule.runtime_twin is not None:
        assert rule.runtime_twin in rule.doc


@pytest.mark.parametrize("code", _DOCUMENTED)
def test_bad_example_reports_its_rule(code: str) -> None:
    assert code in {f.code for f in analyze(RULES[code].bad_example, "bad.py")}


@pytest.mark.parametrize("code", _DOCUMENTED)
def test_good_example_reports_nothing_enabled(code: str) -> None:
    found = {f.code for f in analyze(RULES[code].good_example, "good.py")}
    assert code not in found
    assert {c for c in found if RULES[c].enabled_by_default} == set()
