"""Edits to a libcst module and one pass that applies many of them together.

An edit names the original nodes it changes. Node replacements rebuild one node from its updated
self; block operations replace a run of statements of one block (a module or an indented block)
with new ones. Both are applied bottom-up in a single transform, so an edit inside a statement
survives another edit that wraps that statement. Two edits that claim the same statement slot or
node conflict: the later one waits for the next round, on the re-analysed result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import libcst as cst

from gradguard.lint._finding import Finding
from gradguard.lint._fix._tree import Owner

Statements = list[cst.BaseStatement]


@dataclass
class BlockOp:
    """Replace ``owner.body[start:end]`` by what ``build`` makes of the updated statements.

    Comments and blank lines above the statements that disappear move to the statement that
    follows them (or to the block's footer), so no comment is lost.
    """

    owner: Owner
    start: int
    end: int
    build: Callable[[Statements], Statements]


@dataclass
class Edit:
    """The change that fixes some findings, with a sentence saying what it did."""

    findings: list[Finding]
    description: str
    safe: bool
    replace: dict[cst.CSTNode, Callable[[cst.CSTNode], cst.CSTNode]] = field(default_factory=dict)
    blocks: list[BlockOp] = field(default_factory=list)
    claims: set[tuple[str, int, int]] = field(default_factory=set)
    imports: set[tuple[str, str]] = field(default_factory=set)  # (module, member) to import

    def claim_slots(self, owner: Owner, start: int, end: int) -> None:
        for index in range(start, max(end, start + 1)):
            self.claims.add(("slot", id(owner), index))

    def claim_lines(self, first: int, last: int) -> None:
        """Claim source lines this edit rewrites or re-indents: another fix there waits."""
        for line in range(first, last + 1):
            self.claims.add(("line", line, 0))

    def claim_node(self, node: cst.CSTNode) -> None:
        self.claims.add(("node", id(node), 0))

    def block(
        self, owner: Owner, start: int, end: int, build: Callable[[Statements], Statements]
    ) -> None:
        self.blocks.append(BlockOp(owner, start, end, build))
        self.claim_slots(owner, start, end)

    def node(self, original: cst.CSTNode, build: Callable[[cst.CSTNode], cst.CSTNode]) -> None:
        self.replace[original] = build
        self.claim_node(original)


def _leading(statement: cst.BaseStatement) -> Sequence[cst.EmptyLine]:
    return getattr(statement, "leading_lines", ())


def with_leading(statement: cst.BaseStatement, lines: Sequence[cst.EmptyLine]) -> cst.BaseStatement:
    """``statement`` with ``lines`` above the ones it already has."""
    if not lines:
        return statement
    merged = [*lines, *_leading(statement)]
    return statement.with_changes(leading_lines=merged)


def trailing_comment(statement: cst.BaseStatement) -> cst.EmptyLine | None:
    """The end-of-line comment of a simple statement, as a comment line of its own."""
    if isinstance(statement, cst.SimpleStatementLine) and statement.trailing_whitespace.comment:
        return cst.EmptyLine(indent=True, comment=statement.trailing_whitespace.comment)
    return None


def comments_of(removed: Sequence[cst.BaseStatement]) -> list[cst.EmptyLine]:
    """What must survive of statements that are deleted: the lines above and their comments."""
    kept: list[cst.EmptyLine] = []
    for statement in removed:
        kept.extend(_leading(statement))
        comment = trailing_comment(statement)
        if comment is not None:
            kept.append(comment)
    return kept


class _Apply(cst.CSTTransformer):
    def __init__(self, edits: Sequence[Edit], extra_blocks: Sequence[BlockOp]) -> None:
        super().__init__()
        self.replace: dict[int, Callable[[cst.CSTNode], cst.CSTNode]] = {}
        self.blocks: dict[int, list[BlockOp]] = {}
        for edit in edits:
            for node, build in edit.replace.items():
                self.replace[id(node)] = build
            for op in edit.blocks:
                self.blocks.setdefault(id(op.owner), []).append(op)
        for op in extra_blocks:
            self.blocks.setdefault(id(op.owner), []).append(op)

    def on_leave(  # type: ignore[override]  # every node type passes through here
        self, original_node: cst.CSTNode, updated_node: cst.CSTNode
    ) -> cst.CSTNode:
        build = self.replace.get(id(original_node))
        result = build(updated_node) if build is not None else updated_node
        ops = self.blocks.get(id(original_node))
        if ops and isinstance(result, (cst.Module, cst.IndentedBlock)):
            result = _apply_blocks(result, ops)
        return result


def _apply_blocks(owner: cst.Module | cst.IndentedBlock, ops: list[BlockOp]) -> cst.CSTNode:
    body: Statements = list(owner.body)
    footer = list(owner.footer)
    # From the bottom up, so that the indices of the ops still to apply stay right; at one index
    # the wider op goes first, so an insertion lands before what another op put there.
    for op in sorted(ops, key=lambda o: (o.start, o.end), reverse=True):
        old = body[op.start : op.end]
        new = op.build(list(old))
        carried = comments_of(old) if old and not new else []
        if carried:
            if op.end < len(body):
                body[op.end] = with_leading(body[op.end], carried)
            else:
                footer = [*carried, *footer]
        body[op.start : op.end] = new
    return owner.with_changes(body=body, footer=footer)


def apply_edits(
    module: cst.Module, edits: Sequence[Edit], extra_blocks: Sequence[BlockOp] = ()
) -> cst.Module:
    """The module with every edit applied in one pass."""
    return module.visit(_Apply(edits, extra_blocks))


def wrap(
    item: cst.BaseExpression,
    statements: Statements,
    *,
    leading: Sequence[cst.EmptyLine] | None = None,
    header_comment: cst.Comment | None = None,
    footer: Sequence[cst.EmptyLine] = (),
) -> cst.With:
    """``with item:`` over ``statements``.

    ``leading`` goes above the ``with``; without it, the lines above the first statement move
    there, so a comment that introduced the statement still introduces the block.
    """
    first, *rest = statements
    if leading is None:
        leading = _leading(first)
        first = first.with_changes(leading_lines=[]) if leading else first
    header = (
        cst.TrailingWhitespace(whitespace=cst.SimpleWhitespace("  "), comment=header_comment)
        if header_comment is not None
        else cst.TrailingWhitespace()
    )
    return cst.With(
        items=[cst.WithItem(item=item)],
        body=cst.IndentedBlock(body=[first, *rest], header=header, footer=list(footer)),
        leading_lines=list(leading),
    )


def constant(node: cst.CSTNode) -> Callable[[cst.CSTNode], cst.CSTNode]:
    """A node replacement that puts ``node`` in place, whatever was there."""

    def build(_old: cst.CSTNode) -> cst.CSTNode:
        return node

    return build


def attribute_call(value: cst.BaseExpression, method: str) -> cst.Call:
    """``value.method()``, with parentheses around ``value`` where precedence needs them."""
    atom = isinstance(value, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or bool(
        getattr(value, "lpar", ())
    )
    if not atom:
        value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.Call(func=cst.Attribute(value=value, attr=cst.Name(method)))
