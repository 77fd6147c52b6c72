"""Findings whose fix cannot apply, told apart with the standard library before libcst is loaded.

A GG110 pair with no ``R.train()`` after the block, or a GG109 restore with no snapshot and
``R.eval()`` before it in the same statements, is left as it is whatever libcst would see; most
GG110 notes in real code are of that kind. Screening them on the ``ast`` the analysis already
uses keeps libcst for the files that will change.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from gradguard.lint._finding import Finding


def _bodies(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            value = getattr(node, name, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                yield value
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                yield handler.body


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _method_call(statement: ast.stmt, method: str) -> tuple[str, ast.Call] | None:
    if (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Call)
        and isinstance(statement.value.func, ast.Attribute)
        and statement.value.func.attr == method
    ):
        receiver = _dotted(statement.value.func.value)
        if receiver is not None:
            return receiver, statement.value
    return None


def _find(
    bodies: list[list[ast.stmt]], line: int, method: str
) -> tuple[list[ast.stmt], int, str] | None:
    for body in bodies:
        for index, statement in enumerate(body):
            if statement.lineno == line and (found := _method_call(statement, method)):
                return body, index, found[0]
    return None


def screen(source: str, findings: list[Finding]) -> dict[int, str]:
    """``id(finding) -> why its fix cannot apply`` for the findings that are certainly left."""
    wanted = [f for f in findings if f.code in ("GG110", "GG109")]
    if not wanted:
        return {}
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    bodies = list(_bodies(tree))
    left: dict[int, str] = {}
    for finding in wanted:
        reason = (
            _pair(bodies, finding) if finding.code == "GG110" else _restore(tree, bodies, finding)
        )
        if reason is not None:
            left[id(finding)] = reason
    return left


def _pair(bodies: list[list[ast.stmt]], finding: Finding) -> str | None:
    found = _find(bodies, finding.line, "eval")
    if found is None:
        return "the `eval()` call is not a statement of its own"
    body, index, receiver = found
    related = {r.line for r in finding.related}
    block = next(
        (
            i
            for i in range(index + 1, len(body))
            if isinstance(body[i], ast.With) and (not related or body[i].lineno in related)
        ),
        None,
    )
    if block is None:
        return None  # the libcst pass says why
    follows = any(
        (call := _method_call(statement, "train")) is not None and call[0] == receiver
        for statement in body[block + 1 :]
    )
    if follows:
        return None
    return (
        f"no `{receiver}.train()` follows the block on every path, so `evaluating` would leave "
        f"`{receiver}` in a different mode after it"
    )


def _restore(tree: ast.AST, bodies: list[list[ast.stmt]], finding: Finding) -> str | None:
    found = _find(bodies, finding.line, "train")
    if found is None:
        return None
    body, index, receiver = found
    if any(isinstance(node, ast.Try) and node.finalbody is body for node in ast.walk(tree)):
        return None  # a restore in `finally:`; the libcst pass looks at the code around the try
    opened = any(
        (call := _method_call(statement, "eval")) is not None and call[0] == receiver
        for statement in body[:index]
    )
    if opened:
        return None
    return (
        f"no `{receiver}.eval()` statement comes before the restore in the same block of "
        "statements"
    )
