"""How a file spells ``gradguard.evaluating`` and ``torch.no_grad``, and adding the import once.

The fix follows the file's style: ``import gradguard`` (or ``as gg``) gives ``gradguard.X``;
``from gradguard import ...`` gives a bare ``X`` added to that import; a file with neither gets
``import gradguard`` among its leading imports, in sorted position where it can tell.
"""

from __future__ import annotations

import sys

import libcst as cst

from gradguard.lint._fix._edits import BlockOp, Statements
from gradguard.lint._fix._tree import dotted


def _imports(module: cst.Module) -> list[tuple[int, cst.Import | cst.ImportFrom]]:
    found: list[tuple[int, cst.Import | cst.ImportFrom]] = []
    for index, statement in enumerate(module.body):
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if isinstance(small, (cst.Import, cst.ImportFrom)):
                    found.append((index, small))
    return found


def _module_name(node: cst.Import | cst.ImportFrom) -> str:
    if isinstance(node, cst.Import):
        return dotted(node.names[0].name) or ""
    if node.relative or node.module is None:
        return "."
    return dotted(node.module) or ""


class Names:
    """The spelling of gradguard's and torch's members in one module, before any edit."""

    def __init__(self, module: cst.Module) -> None:
        self.module = module
        self.imports = _imports(module)
        self.gradguard_module: str | None = None
        self.gradguard_from: cst.ImportFrom | None = None
        self.gradguard_members: dict[str, str] = {}
        self.torch_module: str | None = None
        for _, node in self.imports:
            if isinstance(node, cst.Import):
                for alias in node.names:
                    name = dotted(alias.name)
                    bound = alias.asname.name if alias.asname is not None else None
                    bound_name = bound.value if isinstance(bound, cst.Name) else None
                    if name == "gradguard":
                        self.gradguard_module = bound_name or "gradguard"
                    elif name is not None and name.split(".")[0] == "torch":
                        if bound_name is None:
                            self.torch_module = "torch"
                        elif name == "torch":
                            self.torch_module = bound_name
            elif _module_name(node) == "gradguard" and not isinstance(node.names, cst.ImportStar):
                self.gradguard_from = node
                for alias in node.names:
                    member = dotted(alias.name) or ""
                    bound = alias.asname.name if alias.asname is not None else None
                    self.gradguard_members[member] = (
                        bound.value if isinstance(bound, cst.Name) else member
                    )

    def gradguard(self, member: str) -> tuple[str, tuple[str, str] | None]:
        """How to spell ``gradguard.<member>`` here, and the import it needs (None: present)."""
        if self.gradguard_module is not None:
            return f"{self.gradguard_module}.{member}", None
        if self.gradguard_from is not None:
            if member in self.gradguard_members:
                return self.gradguard_members[member], None
            return member, ("gradguard", member)
        return f"gradguard.{member}", ("gradguard", "")

    def torch(self, member: str) -> tuple[str, tuple[str, str] | None]:
        """How to spell ``torch.<member>`` here, and the import it needs (None: present)."""
        if self.torch_module is not None:
            return f"{self.torch_module}.{member}", None
        return f"torch.{member}", ("torch", "")

    def import_ops(self, needed: set[tuple[str, str]]) -> tuple[list[BlockOp], dict[
        cst.CSTNode, cst.CSTNode
    ]]:
        """The block insertions and node changes that add the ``needed`` imports."""
        ops: list[BlockOp] = []
        changes: dict[cst.CSTNode, cst.CSTNode] = {}
        members = sorted(m for module, m in needed if module == "gradguard" and m)
        if members and self.gradguard_from is not None:
            changes[self.gradguard_from] = _add_members(self.gradguard_from, members)
        for module in sorted({module for module, member in needed if not member}):
            ops.append(self._insert_import(module))
        return ops, changes

    def _insert_import(self, name: str) -> BlockOp:
        statement = cst.parse_statement(f"import {name}\n")
        index, takes_leading = self._position(name)
        body = self.module.body

        def build(old: Statements) -> Statements:
            if takes_leading and index < len(body):
                following = old[0] if old else body[index]
                lines = getattr(following, "leading_lines", ())
                moved = statement.with_changes(leading_lines=list(lines))
                return [moved, following.with_changes(leading_lines=[])] if old else [moved]
            return [statement, *old]

        # Taking over the lines above the following statement means replacing it as well.
        if takes_leading and index < len(body):
            return BlockOp(self.module, index, index + 1, build)
        return BlockOp(self.module, index, index, build)

    def _position(self, name: str) -> tuple[int, bool]:
        """Where ``import name`` goes in the module body, and whether it goes before a statement
        whose comments and blank lines above it then belong to the new import."""
        stdlib = sys.stdlib_module_names
        leading: list[tuple[int, str]] = []
        for index, node in self.imports:
            if leading and index > leading[-1][0] + 1:
                break
            leading.append((index, _module_name(node)))
        leading = [(i, m) for i, m in leading if m != "__future__"]
        third_party = [
            (i, m) for i, m in leading if m.split(".")[0] not in stdlib and not m.startswith(".")
        ]
        for index, module_name in third_party:
            if module_name.lower() > name:
                return index, True
        if third_party:
            return third_party[-1][0] + 1, False
        if leading:
            return leading[-1][0] + 1, False
        index = 0
        body = self.module.body
        future = [i for i, node in self.imports if _module_name(node) == "__future__"]
        if future:
            return future[-1] + 1, False
        if body and _is_docstring(body[0]):
            index = 1
        return index, False


def _is_docstring(statement: cst.BaseStatement) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _add_members(node: cst.ImportFrom, members: list[str]) -> cst.ImportFrom:
    assert not isinstance(node.names, cst.ImportStar)
    names = list(node.names)
    present = {dotted(alias.name) for alias in names}
    for member in members:
        if member not in present:
            names.append(cst.ImportAlias(name=cst.Name(member)))
    names.sort(key=lambda alias: (dotted(alias.name) or "").lower())
    last = len(names) - 1
    trailing = node.names[-1].comma if node.names else cst.MaybeSentinel.DEFAULT
    fixed = [
        alias.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        if i < last
        else alias.with_changes(comma=trailing)
        for i, alias in enumerate(names)
    ]
    return node.with_changes(names=fixed)
