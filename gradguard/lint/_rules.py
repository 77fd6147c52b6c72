"""The rules table: every GG1xx code, its name, severity and documentation.

Codes and names are stable: ``--select``/``--ignore``, suppressions and configuration take either.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradguard.lint._finding import Severity


@dataclass(frozen=True)
class Rule:
    """A lint rule's metadata; ``doc`` is what ``gradguard lint --explain CODE`` prints."""

    code: str
    name: str
    severity: Severity
    enabled_by_default: bool
    summary: str
    runtime_twin: str | None
    doc: str = ""
    bad_example: str = ""
    good_example: str = ""


RULES: dict[str, Rule] = {
    rule.code: rule
    for rule in (
        Rule("GG100", "parse-error", "error", True, "the file does not parse", None),
        Rule(
            "GG101",
            "train-mode-forward-without-grad",
            "warning",
            True,
            "a model known to be in training mode runs forward with gradients disabled",
            "GG002",
        ),
        Rule(
            "GG102",
            "eval-forward-with-grad",
            "warning",
            True,
            "a model known to be in eval runs forward with gradients on, and the result never "
            "reaches a backward",
            "GG001",
        ),
        Rule(
            "GG103",
            "step-in-eval-mode",
            "error",
            True,
            "an optimizer steps while the model is left in eval mode",
            "GG004",
        ),
        Rule(
            "GG104",
            "grad-disabled-not-restored",
            "warning",
            True,
            "torch.set_grad_enabled(False) is not undone on some path out of the function",
            "GG002",
        ),
        Rule(
            "GG105",
            "backward-without-grad",
            "error",
            True,
            "backward() on a value computed with gradients disabled",
            "GG003",
        ),
        Rule(
            "GG106",
            "graph-accumulated",
            "warning",
            True,
            "a loss tensor with its graph is accumulated in a loop",
            "GG001",
        ),
        Rule(
            "GG107",
            "step-without-backward",
            "error",
            True,
            "an optimizer steps with no backward since the last zero_grad()",
            "GG005",
        ),
        Rule(
            "GG108",
            "grad-decorator-on-async",
            "error",
            True,
            "a torch grad-mode decorator on an async def does nothing for its body",
            None,
        ),
        Rule(
            "GG109",
            "train-restores-snapshot",
            "warning",
            True,
            "train(was_training) wakes submodules that were frozen in eval",
            "GG006",
        ),
        Rule(
            "GG110",
            "eval-no-grad-pair",
            "note",
            False,
            "a hand-written eval() + no_grad() pair that gradguard.evaluating replaces",
            None,
        ),
        Rule(
            "GG190",
            "unused-ignore",
            "warning",
            False,
            "a suppression comment that suppresses nothing, or names an unknown rule "
            "(reported with --warn-unused-ignores)",
            None,
        ),
    )
}
