"""One round of fixing one file with libcst: plan every fix, keep those that do not overlap."""

from __future__ import annotations

from dataclasses import dataclass

from gradguard.lint._finding import Finding
from gradguard.lint._fix._edits import Edit, apply_edits, constant
from gradguard.lint._fix._plan import Context, Fixer, Left
from gradguard.lint._fix._safe import (
    fix_accumulations,
    fix_async_decorators,
    fix_eval_no_grad_pairs,
)
from gradguard.lint._fix._tree import Tree
from gradguard.lint._fix._unsafe import (
    fix_eval_forward_with_grad,
    fix_grad_disabled,
    fix_step_in_eval,
    fix_train_restores_snapshot,
)

FIXERS: dict[str, Fixer] = {
    "GG110": fix_eval_no_grad_pairs,
    "GG108": fix_async_decorators,
    "GG106": fix_accumulations,
    "GG102": fix_eval_forward_with_grad,
    "GG109": fix_train_restores_snapshot,
    "GG103": fix_step_in_eval,
    "GG104": fix_grad_disabled,
}


@dataclass
class Round:
    """What one round made of a file: the new text (None: nothing to change), edits, reasons."""

    text: str | None
    edits: list[Edit]
    left: list[Left]


class ParseError(Exception):
    """libcst cannot parse the file (the analysis could)."""


def _choose(edits: list[Edit]) -> list[Edit]:
    """The edits that claim nothing an earlier one claimed, in the order of their findings."""
    chosen: list[Edit] = []
    claimed: set[tuple[str, int, int]] = set()
    for edit in sorted(edits, key=lambda e: min((f.line, f.column) for f in e.findings)):
        if edit.claims & claimed:
            continue
        claimed |= edit.claims
        chosen.append(edit)
    return chosen


def _rewrite(context: Context, edits: list[Edit]) -> str:
    needed = set().union(*(edit.imports for edit in edits))
    ops, changes = context.names.import_ops(needed)
    imports = Edit([], "imports", safe=True, blocks=ops)
    for node, replacement in changes.items():
        imports.node(node, constant(replacement))
    return apply_edits(context.tree.module, [*edits, imports]).code


def fix_round(text: str, findings: list[Finding]) -> Round:
    """Plan the fixes of ``findings`` on ``text`` and apply the ones that do not overlap.

    Raises:
        ParseError: libcst cannot parse ``text``.
    """
    import libcst as cst

    try:
        context = Context(Tree(text))
    except cst.ParserSyntaxError as error:
        raise ParseError(error.message) from None
    edits: list[Edit] = []
    left: list[Left] = []
    for code, fixer in FIXERS.items():
        mine = [f for f in findings if f.code == code]
        for result in fixer(context, mine) if mine else ():
            if isinstance(result, Left):
                left.append(result)
            else:
                edits.append(result)
    chosen = _choose(edits)
    if not chosen:
        return Round(None, [], left)
    return Round(_rewrite(context, chosen), chosen, left)
