"""Which rules run: codes, names and prefixes from ``--select``/``--ignore`` and configuration."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gradguard.lint._errors import LintUsageError
from gradguard.lint._rules import RULES

_BY_NAME = {rule.name: rule.code for rule in RULES.values()}


def valid_selectors() -> str:
    """The valid rule selectors, for error messages."""
    rules = ", ".join(f"{rule.code} ({rule.name})" for rule in RULES.values())
    return f"ALL, a code prefix such as GG1 or GG10, or one of: {rules}"


def lookup(token: str) -> str | None:
    """The code of one rule given by code or name (any case), or ``None`` if it is not a rule."""
    token = token.strip()
    upper = token.upper()
    if upper in RULES:
        return upper
    return _BY_NAME.get(token.lower())


def resolve(tokens: Iterable[str], *, where: str) -> frozenset[str]:
    """The codes meant by selector tokens: codes, names, code prefixes or ``ALL``.

    Args:
        tokens: the selectors as given (``"GG103"``, ``"step-in-eval-mode"``, ``"GG1"``).
        where: where they came from (``"--select"``, a configuration key), named in the error.

    Raises:
        LintUsageError: a token that is not a rule, a prefix of one or ``ALL``; the message
            lists the valid ones.
    """
    codes: set[str] = set()
    for raw in tokens:
        token = raw.strip()
        if not token:
            continue
        code = lookup(token)
        if code is not None:
            codes.add(code)
            continue
        upper = token.upper()
        if upper == "ALL":
            codes.update(RULES)
            continue
        matched = {c for c in RULES if c.startswith(upper)} if upper.startswith("GG") else set()
        if not matched:
            raise LintUsageError(f"{where}: unknown rule {token!r}; valid: {valid_selectors()}")
        codes.update(matched)
    return frozenset(codes)


def split_list(value: str) -> list[str]:
    """``"GG101,GG102 GG103"`` as a list: commas and spaces both separate."""
    return [part for part in value.replace(",", " ").split() if part]


@dataclass(frozen=True)
class Selection:
    """The rules that report: ``select`` (``None``: those on by default) minus ``ignore``."""

    select: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()

    def enabled(self, code: str) -> bool:
        """Whether findings of ``code`` are reported."""
        if code in self.ignore:
            return False
        if self.select is None:
            rule = RULES.get(code)
            return rule is not None and rule.enabled_by_default
        return code in self.select
