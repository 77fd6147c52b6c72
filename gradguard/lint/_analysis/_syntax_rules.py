"""Rules that need no flow: grad-mode decorators on async functions (GG108)."""

from __future__ import annotations

import ast

from gradguard.lint._analysis._names import Aliases, grad_mode_call
from gradguard.lint._analysis._report import Reporter, snippet


def check_async_decorators(tree: ast.Module, aliases: Aliases, reporter: Reporter) -> None:
    """GG108: ``@torch.no_grad()`` and kin on an ``async def`` (torch leaves the body alone)."""
    for node in ast.walk(tree):
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
                f"`@{spelled}` on `async def {node.name}` does nothing for its body: torch's "
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
