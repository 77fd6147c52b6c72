"""--explain: every rule's documentation and both examples are printed, and GG190's are true."""

from __future__ import annotations

import textwrap

import pytest

from gradguard.lint._driver import LintOptions, check_source
from gradguard.lint._explain import explain
from gradguard.lint._rules import RULES
from gradguard.lint._select import Selection

EXPLAINED = [code for code in RULES if code != "GG100"]


@pytest.mark.parametrize("code", EXPLAINED)
def test_explain_prints_the_doc_both_examples_and_the_twin_once(code: str) -> None:
    """Header, the whole doc, each example line (indented) and the runtime twin exactly once."""
    rule = RULES[code]
    text = explain(code)
    default = "on by default" if rule.enabled_by_default else "off unless selected"
    assert text.startswith(f"{rule.code} {rule.name} ({rule.severity}, {default})\n")
    assert textwrap.dedent(rule.doc).strip() in text
    bad, good = text.index("\nBad:\n"), text.index("\nGood:\n")
    assert bad < good
    for example, section in ((rule.bad_example, text[bad:good]), (rule.good_example, text[good:])):
        for line in textwrap.dedent(example).strip().splitlines():
            assert ("    " + line).rstrip() in section
    if rule.runtime_twin:
        assert text.count(f"Runtime twin: {rule.runtime_twin}") == 1
    assert explain(rule.name.upper()) == text


def _unused_ignores(source: str) -> list[str]:
    options = LintOptions(selection=Selection(), warn_unused_ignores=True)
    outcome = check_source("example.py", source, options, lambda _source, _path: [])
    return [finding.code for finding, _ in outcome.findings]


def test_gg190_examples_tell_the_truth() -> None:
    """GG190's bad example gets a GG190 under --warn-unused-ignores; its good example does not."""
    rule = RULES["GG190"]
    assert _unused_ignores(rule.bad_example) == ["GG190"]
    assert _unused_ignores(rule.good_example) == []
