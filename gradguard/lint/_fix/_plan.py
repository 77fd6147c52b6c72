"""What a fixer gets and gives: the parsed file, how it spells names, an edit or a reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import libcst as cst

from gradguard.lint._finding import Finding
from gradguard.lint._fix._edits import Edit
from gradguard.lint._fix._imports import Names
from gradguard.lint._fix._tree import Tree


@dataclass(frozen=True)
class Left:
    """A finding a fix exists for but that was not rewritten, and why."""

    finding: Finding
    reason: str


class Context:
    """One file being fixed: its tree and the spellings of gradguard's and torch's names."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.names = Names(tree.module)

    def gradguard(self, edit: Edit, member: str) -> str:
        spelled, needed = self.names.gradguard(member)
        if needed is not None:
            edit.imports.add(needed)
        return spelled

    def torch(self, edit: Edit, member: str) -> str:
        spelled, needed = self.names.torch(member)
        if needed is not None:
            edit.imports.add(needed)
        return spelled


Fixer = Callable[[Context, list[Finding]], list[Edit | Left]]


def expression(code: str) -> cst.BaseExpression:
    return cst.parse_expression(code)
