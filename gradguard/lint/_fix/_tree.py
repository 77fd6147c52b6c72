"""Where things are in a libcst module: statements by line, their blocks, enclosing nodes.

The analysis reports ``ast`` positions (1-based lines, 0-based UTF-8 byte columns); libcst counts
columns in characters, so columns are converted per line before they are compared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

Owner = cst.Module | cst.IndentedBlock


@dataclass(frozen=True)
class Slot:
    """A statement and where it sits: the block that owns it and its index there."""

    statement: cst.BaseStatement
    owner: Owner
    index: int


class Tree:
    """A parsed module with positions, parents and every statement's slot."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = source.splitlines()
        wrapper = MetadataWrapper(cst.parse_module(source), unsafe_skip_copy=True)
        self.module = wrapper.module
        self.positions: dict[cst.CSTNode, CodeRange] = dict(wrapper.resolve(PositionProvider))
        self.parents = _parents(self.module)
        self.slots: dict[cst.BaseStatement, Slot] = {}
        self._add_slots(self.module)
        for node in self.positions:
            if isinstance(node, cst.IndentedBlock):
                self._add_slots(node)

    def _add_slots(self, owner: Owner) -> None:
        for index, statement in enumerate(owner.body):
            self.slots[statement] = Slot(statement, owner, index)

    def char_column(self, line: int, byte_column: int) -> int:
        """The character column of an ``ast`` byte offset on a 1-based line."""
        if not 0 < line <= len(self.lines):
            return byte_column
        encoded = self.lines[line - 1].encode("utf-8")
        return len(encoded[:byte_column].decode("utf-8", errors="ignore"))

    def start_line(self, node: cst.CSTNode) -> int:
        return self.positions[node].start.line

    def end_line(self, node: cst.CSTNode) -> int:
        return self.positions[node].end.line

    def statement_start(self, statement: cst.BaseStatement) -> int:
        """The line of a statement's own first token (decorators included, comments above not)."""
        if isinstance(statement, (cst.FunctionDef, cst.ClassDef)) and statement.decorators:
            return self.start_line(statement.decorators[0])
        return self.start_line(statement)

    def innermost_statement(self, line: int) -> Slot | None:
        """The deepest statement whose text covers ``line`` (its header, for a compound one)."""
        best: Slot | None = None
        best_depth = -1
        for statement, slot in self.slots.items():
            if not self.statement_start(statement) <= line <= self.end_line(statement):
                continue
            depth = self.depth(statement)
            if depth > best_depth:
                best, best_depth = slot, depth
        return best

    def depth(self, node: cst.CSTNode) -> int:
        count = 0
        while node in self.parents:
            node = self.parents[node]
            count += 1
        return count

    def ancestors(self, node: cst.CSTNode) -> Iterator[cst.CSTNode]:
        while node in self.parents:
            node = self.parents[node]
            yield node

    def enclosing_scope(self, node: cst.CSTNode) -> cst.FunctionDef | cst.Module:
        """The function (or the module) whose local names ``node`` sees."""
        for parent in self.ancestors(node):
            if isinstance(parent, cst.FunctionDef):
                return parent
        return self.module

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def statements_at(self, line: int) -> list[Slot]:
        """Every statement that starts on ``line``, outermost first."""
        found = [
            slot
            for statement, slot in self.slots.items()
            if self.statement_start(statement) == line
        ]
        return sorted(found, key=lambda slot: self.depth(slot.statement))


def _parents(root: cst.CSTNode) -> dict[cst.CSTNode, cst.CSTNode]:
    """Every node's parent (libcst's ParentNodeProvider gives the same, twenty times slower)."""
    parents: dict[cst.CSTNode, cst.CSTNode] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        for name in node.__dataclass_fields__:
            value = getattr(node, name)
            if isinstance(value, cst.CSTNode):
                parents[value] = node
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                for child in value:
                    if isinstance(child, cst.CSTNode):
                        parents[child] = node
                        stack.append(child)
    return parents


def simple_call(statement: cst.BaseStatement) -> cst.Call | None:
    """The call of a statement that is nothing but one call expression (``model.eval()``)."""
    if (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, cst.Call)
    ):
        return statement.body[0].value
    return None


def dotted(node: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a name or a chain of attributes on a name, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def method_call(statement: cst.BaseStatement, method: str) -> tuple[str, cst.Call] | None:
    """``(receiver, call)`` when the statement is ``receiver.method(...)`` on a dotted receiver."""
    call = simple_call(statement)
    if call is None or not isinstance(call.func, cst.Attribute) or call.func.attr.value != method:
        return None
    receiver = dotted(call.func.value)
    return None if receiver is None else (receiver, call)


def names_in(node: cst.CSTNode) -> Iterator[cst.Name]:
    """Every ``Name`` node under ``node`` (attribute names excluded)."""
    stack: list[cst.CSTNode] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Name):
            yield current
            continue
        if isinstance(current, cst.Attribute):
            stack.append(current.value)
            continue
        stack.extend(current.children)


def mentions(node: cst.CSTNode, receiver: str) -> bool:
    """Whether the code of ``node`` refers to the dotted ``receiver`` or to its root name."""
    root = receiver.split(".", 1)[0]
    return any(name.value == root for name in names_in(node))


def calls_in(node: cst.CSTNode) -> Iterator[cst.Call]:
    stack: list[cst.CSTNode] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Call):
            yield current
        stack.extend(current.children)


def exits_in(statements: Sequence[cst.BaseStatement]) -> bool:
    """Whether control can leave these statements other than by falling off their end.

    ``return``, ``raise`` and ``yield`` count anywhere outside nested functions and classes;
    ``break``/``continue`` count only outside the loops they contain.
    """
    stack: list[tuple[cst.CSTNode, bool]] = [(s, False) for s in statements]
    while stack:
        node, in_loop = stack.pop()
        if isinstance(node, (cst.Return, cst.Raise, cst.Yield)):
            return True
        if isinstance(node, (cst.Break, cst.Continue)) and not in_loop:
            return True
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        inner = in_loop or isinstance(node, (cst.For, cst.While))
        stack.extend((child, inner) for child in node.children)
    return False
