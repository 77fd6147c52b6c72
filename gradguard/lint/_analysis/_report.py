"""Building findings: one place that turns a rule code, a node and words into a ``Finding``."""

from __future__ import annotations

import ast

from gradguard.lint._finding import Finding, Related
from gradguard.lint._rules import RULES


class Reporter:
    """Collects the findings of one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: dict[tuple[str, int, int], Finding] = {}

    def related(self, line: int, message: str) -> Related:
        return Related(self.path, line, message)

    def add(
        self,
        code: str,
        node: ast.AST,
        message: str,
        fix: str,
        related: tuple[Related, ...] = (),
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        rule = RULES[code]
        start_line = line if line is not None else getattr(node, "lineno", 1)
        start_col = column if column is not None else getattr(node, "col_offset", 0)
        end_line = getattr(node, "end_lineno", None) or start_line
        end_col = getattr(node, "end_col_offset", None)
        if line is not None or end_col is None:
            end_line, end_col = start_line, start_col
        key = (code, start_line, start_col)
        # Loops are walked more than once; a site reports once.
        self.findings.setdefault(
            key,
            Finding(
                code=code,
                name=rule.name,
                severity=rule.severity,
                message=message,
                fix=fix,
                file=self.path,
                line=start_line,
                column=start_col,
                end_line=end_line,
                end_column=end_col,
                related=related,
            ),
        )

    def sorted(self) -> list[Finding]:
        return sorted(self.findings.values(), key=lambda f: (f.line, f.column, f.code))


def snippet(node: ast.AST, limit: int = 60) -> str:
    """Source-like text of a node for messages, shortened."""
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."
