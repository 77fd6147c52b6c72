"""``gradguard lint --explain CODE``: a rule's documentation, with a bad and a good example."""

from __future__ import annotations

import textwrap

from gradguard.lint._errors import LintUsageError
from gradguard.lint._rules import RULES, Rule
from gradguard.lint._select import lookup, valid_selectors


def find_rule(token: str) -> Rule:
    """The rule named by a code or a name (any case).

    Raises:
        LintUsageError: no rule has that code or name; the message lists them.
    """
    code = lookup(token)
    if code is None:
        raise LintUsageError(f"--explain: unknown rule {token!r}; valid: {valid_selectors()}")
    return RULES[code]


def _block(code: str) -> str:
    return textwrap.indent(textwrap.dedent(code).strip(), "    ")


def explain(token: str) -> str:
    """The text ``--explain`` prints for a code or name."""
    rule = find_rule(token)
    default = "on by default" if rule.enabled_by_default else "off unless selected"
    parts = [
        f"{rule.code} {rule.name} ({rule.severity}, {default})",
        "",
        rule.summary[:1].upper() + rule.summary[1:] + ".",
    ]
    if rule.doc:
        parts += ["", textwrap.dedent(rule.doc).strip()]
    if rule.bad_example:
        parts += ["", "Bad:", "", _block(rule.bad_example)]
    if rule.good_example:
        parts += ["", "Good:", "", _block(rule.good_example)]
    if rule.runtime_twin and "Runtime twin" not in rule.doc:
        parts += [
            "",
            f"Runtime twin: {rule.runtime_twin}, what `gradguard run` and `pytest --gradguard` "
            "report when the same mistake runs.",
        ]
    parts += [
        "",
        f"Silence one finding with `# gradguard: ignore[{rule.name}]` (or `# noqa: {rule.code}`) "
        "on its line or on the line that caused the state.",
    ]
    return "\n".join(parts) + "\n"
