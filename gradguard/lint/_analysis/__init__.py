"""The static analysis behind ``gradguard lint``: one parse, one flow pass per function, all rules.

Only the standard library is used (``ast``); nothing here imports torch.
"""

from __future__ import annotations

import ast
import contextlib

from gradguard.lint._analysis._flow import run_flow, walk_module
from gradguard.lint._analysis._module import Function, build_index
from gradguard.lint._analysis._names import collect_aliases
from gradguard.lint._analysis._report import Reporter
from gradguard.lint._analysis._syntax_rules import check_async_decorators, check_eval_no_grad_pairs
from gradguard.lint._finding import Finding

__all__ = ["analyze"]


def analyze(source: str, path: str) -> list[Finding]:
    """Every rule's findings for one file, sorted by (line, column, code).

    Args:
        source: the file's text.
        path: the name findings carry (as the reporters print it).

    Returns:
        All findings, GG110 included (selection is the caller's business). A file that does not
        parse gives a single GG100 finding at the SyntaxError's line instead of raising.
    """
    reporter = Reporter(path)
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as error:
        line = getattr(error, "lineno", None) or 1
        column = max((getattr(error, "offset", None) or 1) - 1, 0)
        detail = getattr(error, "msg", None) or str(error)
        reporter.add(
            "GG100",
            ast.Pass(),
            f"the file does not parse: {detail}",
            "Fix the syntax error; the other rules skip this file until it parses.",
            line=line,
            column=column,
        )
        return reporter.sorted()
    except RecursionError:
        reporter.add(
            "GG100",
            ast.Pass(),
            "the file does not parse: it is nested deeper than Python's parser allows",
            "Split the deeply nested expression; the other rules skip this file until it parses.",
            line=1,
            column=0,
        )
        return reporter.sorted()
    # Nested deeper than Python's stack (generated code): what was found so far stands.
    with contextlib.suppress(RecursionError):
        _analyze_tree(tree, reporter)
    return reporter.sorted()


def _analyze_tree(tree: ast.Module, reporter: Reporter) -> None:
    """The syntactic rules, then two flow walks: summaries and call sites, then findings."""
    nodes, facts = walk_module(tree)
    aliases = collect_aliases(nodes)
    check_async_decorators(nodes, aliases, reporter)
    check_eval_no_grad_pairs(nodes, aliases, reporter)
    index = build_index(tree, aliases)
    scopes: list[Function | ast.Module] = [tree]
    scopes.extend(
        node for node in nodes if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    )
    index.scopes.update(facts)
    defined = {scope.name for scope in scopes if not isinstance(scope, ast.Module)}
    called = set().union(*(f.called for f in facts.values()))
    # First walk, only where it can matter: what a called function leaves its arguments in, and
    # the grad mode each local function is called in.
    for scope in scopes:
        is_callee = not isinstance(scope, ast.Module) and scope.name in called
        if not is_callee and not facts[id(scope)].called & defined:
            continue
        flow = run_flow(index, scope, None, summaries=False)
        if is_callee:
            index.summaries[id(scope)] = flow.summary()
        for target, grads in flow.call_grads:
            index.call_grads.setdefault(id(target), []).append(grads)
    for scope in scopes:
        run_flow(index, scope, reporter, summaries=True)
