"""Rules that need no flow: grad decorators on async functions (GG108), eval + no_grad (GG110)."""

from __future__ import annotations

import ast

from gradguard.lint._analysis._messages import eval_no_grad_pair
from gradguard.lint._analysis._names import Aliases, grad_mode_call, receiver_key
from gradguard.lint._analysis._report import Reporter, snippet


def check_async_decorators(nodes: list[ast.AST], aliases: Aliases, reporter: Reporter) -> None:
    """GG108: ``@torch.no_grad()`` and kin on an ``async def`` (torch leaves the body alone)."""
    for node in nodes:
        if not isinstance(node, ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if grad_mode_call(aliases, decorator) is None:
                continue
            spelled = snippet(decorator)
            kind = "async generator" if _is_generator(node) else "coroutine"
            reporter.add(
                "GG108",
                node,
                f"`@{spelled}` (line {decorator.lineno}) on `async def {node.name}` does nothing "
                "for its body: torch's "
                f"grad-mode decorators do not enter the mode while a {kind} runs",
                "Use the `with` form inside the body, or `@gradguard.inference_fn`, which holds "
                "the mode around every step of the coroutine.",
                (reporter.related(decorator.lineno, f"`@{spelled}` here"),),
                line=node.lineno,
                column=node.col_offset,
            )


def _is_generator(node: ast.AsyncFunctionDef) -> bool:
    stack: list[ast.AST] = list(node.body)
    while stack:
        child = stack.pop()
        if isinstance(child, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(child))
    return False


def check_eval_no_grad_pairs(nodes: list[ast.AST], aliases: Aliases, reporter: Reporter) -> None:
    """GG110: ``R.eval()`` then, within a few statements, ``with torch.no_grad():``."""
    for node in nodes:
        if isinstance(node, (ast.stmt, ast.Module, ast.excepthandler, ast.match_case)):
            for field in ("body", "orelse", "finalbody"):
                stmts = getattr(node, field, None)
                if stmts:
                    _pairs_in(stmts, aliases, reporter)


def _eval_receiver(stmt: ast.stmt) -> str | None:
    if (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Call)
        and isinstance(stmt.value.func, ast.Attribute)
        and stmt.value.func.attr == "eval"
        and not stmt.value.args
    ):
        return receiver_key(stmt.value.func.value)
    return None


def _pairs_in(stmts: list[ast.stmt], aliases: Aliases, reporter: Reporter) -> None:
    for index, stmt in enumerate(stmts):
        receiver = _eval_receiver(stmt)
        if receiver is None:
            continue
        for later in stmts[index + 1 : index + 5]:
            if isinstance(later, ast.With):
                manager = _no_grad_item(later, aliases)
                if manager is not None:
                    message, fix = eval_no_grad_pair(
                        receiver, f"`{snippet(manager)}`", later.lineno
                    )
                    reporter.add(
                        "GG110",
                        stmt,
                        message,
                        fix,
                        (reporter.related(later.lineno, f"`{snippet(manager)}` here"),),
                    )
                break
            if _mentions(later, receiver):
                break


def _mentions(stmt: ast.stmt, receiver: str) -> bool:
    """Whether a statement touches ``receiver`` or an attribute of it (a mode change in between)."""
    return any(
        isinstance(node, ast.Attribute) and receiver_key(node.value) == receiver
        for node in ast.walk(stmt)
    )


def _no_grad_item(node: ast.With, aliases: Aliases) -> ast.expr | None:
    for item in node.items:
        found = grad_mode_call(aliases, item.context_expr)
        if found is not None and found[0] in ("no_grad", "inference_mode"):
            return item.context_expr
    return None
