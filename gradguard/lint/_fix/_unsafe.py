"""The unsafe fixes, applied only with ``--unsafe-fixes``: GG102, GG109, GG103 and GG104.

Each is what the finding recommends, but changes what runs in a way the analysis cannot prove
harmless (a block now runs without gradients, a restore now keeps each submodule's own flag, a
``train()`` call is added), so a person reads the diff first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import libcst as cst

from gradguard.lint._finding import Finding
from gradguard.lint._fix._edits import Edit, Statements, comments_of, wrap
from gradguard.lint._fix._plan import Context, Left, expression
from gradguard.lint._fix._safe import grad_manager
from gradguard.lint._fix._tree import (
    Slot,
    Tree,
    calls_in,
    dotted,
    mentions,
    method_call,
    names_in,
    simple_call,
)


def _has_backward(node: cst.CSTNode) -> bool:
    """Whether ``node`` calls a backward (``loss.backward()``, ``torch.autograd.grad``)."""
    for call in calls_in(node):
        func = call.func
        last = func.attr.value if isinstance(func, cst.Attribute) else dotted(func)
        if last in ("backward", "grad", "manual_backward"):
            return True
    return False


# ------------------------------------------------------------------------------- GG102


def fix_eval_forward_with_grad(context: Context, findings: list[Finding]) -> list[Edit | Left]:
    """GG102: the statement with the forward goes into ``with torch.no_grad():``.

    Flagged statements next to each other in one block share one ``with``.
    """
    results: list[Edit | Left] = []
    runs: dict[int, list[tuple[Slot, Finding]]] = {}
    for finding in findings:
        slot = context.tree.innermost_statement(finding.line)
        if slot is None:
            results.append(Left(finding, "no statement found at the reported line"))
            continue
        if isinstance(slot.statement, (cst.FunctionDef, cst.ClassDef)):
            results.append(Left(finding, "the forward is in a definition's header"))
            continue
        if _has_backward(slot.statement):
            results.append(Left(finding, "the statement also runs a backward"))
            continue
        runs.setdefault(id(slot.owner), []).append((slot, finding))
    for entries in runs.values():
        entries.sort(key=lambda entry: entry[0].index)
        groups: list[list[tuple[Slot, Finding]]] = []
        for entry in entries:
            if groups and entry[0].index <= groups[-1][-1][0].index + 1:
                groups[-1].append(entry)
            else:
                groups.append([entry])
        for group in groups:
            results.append(_wrap_no_grad(context, group))
    return results


def _wrap_no_grad(context: Context, group: list[tuple[Slot, Finding]]) -> Edit:
    owner = group[0][0].owner
    start = group[0][0].index
    end = group[-1][0].index + 1
    edit = Edit([finding for _, finding in group], "", safe=False)
    no_grad = context.torch(edit, "no_grad")
    item = expression(f"{no_grad}()")
    edit.block(owner, start, end, lambda old: [wrap(item, old)])
    # A graph-accumulation fix fed by these lines waits: without a graph there is nothing to fix.
    for slot, _ in group:
        edit.claim_lines(
            context.tree.statement_start(slot.statement), context.tree.end_line(slot.statement)
        )
    lines = sorted({context.tree.statement_start(slot.statement) for slot, _ in group})
    where = f"line {lines[0]}" if len(lines) == 1 else f"lines {lines[0]}-{lines[-1]}"
    edit.description = (
        f"wrapped the evaluation at {where} in `with {no_grad}():`: no graph is built for it"
    )
    return edit


# ------------------------------------------------------------------------------- GG109


def fix_train_restores_snapshot(context: Context, findings: list[Finding]) -> list[Edit | Left]:
    """GG109: ``was = R.training; R.eval(); ...; R.train(was)`` -> ``with evaluating(R): ...``."""
    return [_snapshot(context, finding) for finding in findings]


def _snapshot_of(statement: cst.BaseStatement, receiver: str) -> str | None:
    """``was`` when the statement is ``was = receiver.training``."""
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return None
    small = statement.body[0]
    if (
        isinstance(small, cst.Assign)
        and len(small.targets) == 1
        and isinstance(small.targets[0].target, cst.Name)
        and isinstance(small.value, cst.Attribute)
        and small.value.attr.value == "training"
        and dotted(small.value.value) == receiver
    ):
        return small.targets[0].target.value
    return None


def _eval_statement(statement: cst.BaseStatement, receiver: str) -> bool:
    found = method_call(statement, "eval")
    return found is not None and found[0] == receiver and not found[1].args


def _first_mention(
    statements: Sequence[cst.BaseStatement], receiver: str
) -> tuple[int, bool] | None:
    """The index of the first statement mentioning ``receiver``, and whether it is its eval()."""
    for index, statement in enumerate(statements):
        if mentions(statement, receiver):
            return index, _eval_statement(statement, receiver)
    return None


def _finally_of(tree: Tree, slot: Slot) -> cst.Try | None:
    """The ``try`` whose ``finally:`` block holds ``slot``, if it is one."""
    finally_ = tree.parents.get(slot.owner)
    owner = tree.parents.get(finally_) if isinstance(finally_, cst.Finally) else None
    return owner if isinstance(owner, cst.Try) else None


def _snapshot(context: Context, finding: Finding) -> Edit | Left:
    tree = context.tree
    slot = tree.innermost_statement(finding.line)
    found = method_call(slot.statement, "train") if slot is not None else None
    if slot is None or found is None or len(found[1].args) != 1:
        return Left(finding, "the `train(...)` call is not a statement of its own")
    receiver, call = found
    argument = call.args[0].value
    if not isinstance(argument, cst.Name):
        return Left(finding, "the restored flag is not a local name")
    flag = argument.value
    # The restore is either a statement after the code, or the `finally:` of a try around it.
    guarded = _finally_of(tree, slot)
    if guarded is not None and (guarded.handlers or guarded.orelse is not None):
        return Left(finding, "the `try` around the code also has `except` or `else` blocks")
    outer = tree.slots[guarded] if guarded is not None else slot
    body = outer.owner.body
    snap = next(
        (i for i in range(outer.index - 1, -1, -1) if _snapshot_of(body[i], receiver) == flag),
        None,
    )
    if snap is None:
        return Left(
            finding, f"`{flag} = {receiver}.training` is not in the same statements as the restore"
        )
    mention = _first_mention(body[snap + 1 : outer.index], receiver)
    eval_inside: int | None = None
    if mention is not None:
        if not mention[1]:
            return Left(finding, f"`{receiver}` is used before its `eval()`")
        start = snap + 1 + mention[0]
    elif guarded is not None and isinstance(guarded.body, cst.IndentedBlock):
        inside = _first_mention(guarded.body.body, receiver)
        if inside is None or not inside[1]:
            return Left(finding, f"no `{receiver}.eval()` opens the code in the `try`")
        start, eval_inside = outer.index, inside[0]
    else:
        return Left(finding, f"no `{receiver}.eval()` opens the code between snapshot and restore")
    scope = tree.enclosing_scope(slot.statement)
    flag_reads = [n for n in names_in(scope) if n.value == flag and n is not argument]
    keep_snapshot = len(flag_reads) > 1  # the snapshot's own target is one of them
    edit = Edit([finding], "", safe=False)
    evaluating = context.gradguard(edit, "evaluating")
    assert isinstance(call.func, cst.Attribute)
    receiver_code = tree.code(call.func.value)
    restore_index = slot.index

    def build(old: Statements) -> Statements:
        carried: list[cst.EmptyLine] = []
        if guarded is None:
            carried, inner, tail = comments_of(old[:1]), old[1:-1], comments_of(old[-1:])
        else:
            if eval_inside is None:
                carried, inner = comments_of(old[:1]), old[1:-1]
            else:
                inner = []
            try_node = old[-1]
            assert isinstance(try_node, cst.Try)
            assert isinstance(try_node.body, cst.IndentedBlock)
            assert try_node.finalbody is not None
            assert isinstance(try_node.finalbody.body, cst.IndentedBlock)
            protected = list(try_node.body.body)
            if eval_inside is not None:
                carried = comments_of(protected[eval_inside : eval_inside + 1])
                del protected[eval_inside]
            rest = list(try_node.finalbody.body.body)
            tail = comments_of(rest[restore_index : restore_index + 1])
            del rest[restore_index]
            if rest:
                kept = try_node.with_changes(
                    body=try_node.body.with_changes(body=protected),
                    finalbody=try_node.finalbody.with_changes(
                        body=try_node.finalbody.body.with_changes(body=rest)
                    ),
                )
                inner = [*inner, kept]
            else:
                inner = [*inner, *protected]
        scope_with = _evaluating_block(evaluating, receiver_code, inner, tail)
        return [scope_with.with_changes(leading_lines=[*carried, *scope_with.leading_lines])]

    edit.block(outer.owner, start, outer.index + 1, build)
    edit.claim_lines(tree.statement_start(body[snap]), tree.end_line(body[outer.index]))
    if not keep_snapshot:
        edit.block(outer.owner, snap, snap + 1, _remove)
    edit.description = (
        f"replaced `{flag} = {receiver}.training`, `{receiver}.eval()` and `{tree.code(call)}` "
        f"by `with {evaluating}({receiver_code}):` (`mode=\"grad\"` unless the code was one "
        f"no_grad block), which restores each submodule's own flag where `{tree.code(call)}` "
        "woke the frozen ones"
    )
    return edit


def _evaluating_block(
    evaluating: str,
    receiver_code: str,
    inner: Statements,
    tail: Sequence[cst.EmptyLine],
) -> cst.With:
    """``with evaluating(R):`` over ``inner``; a lone ``with torch.no_grad():`` becomes it."""
    single = inner[0] if len(inner) == 1 else None
    if isinstance(single, cst.With) and single.asynchronous is None and len(single.items) == 1:
        manager = grad_manager(single.items[0])
        if manager is not None:
            mode = ', mode="inference"' if manager == "inference_mode" else ""
            item = expression(f"{evaluating}({receiver_code}{mode})")
            merged = single.with_changes(items=[single.items[0].with_changes(item=item)])
            if tail and isinstance(merged.body, cst.IndentedBlock):
                footer = [*merged.body.footer, *tail]
                merged = merged.with_changes(body=merged.body.with_changes(footer=footer))
            return merged
    item = expression(f'{evaluating}({receiver_code}, mode="grad")')
    return wrap(item, inner, footer=tail)


def _remove(old: Statements) -> Statements:
    return []


def _prepend(statement: cst.BaseStatement) -> Callable[[Statements], Statements]:
    def build(old: Statements) -> Statements:
        return [statement, *old]

    return build


# ------------------------------------------------------------------------------- GG103

_EVAL_RECEIVER = re.compile(r"while `([^`]+)` is in eval mode")


def fix_step_in_eval(context: Context, findings: list[Finding]) -> list[Edit | Left]:
    """GG103: ``R.train()`` at the head of the training loop's body."""
    results: list[Edit | Left] = []
    planned: dict[tuple[int, int], Edit] = {}
    for finding in findings:
        outcome = _train_at_loop_head(context, finding)
        if isinstance(outcome, Left):
            results.append(outcome)
            continue
        key, receiver, owner, index = outcome
        if key in planned:
            planned[key].findings.append(finding)
            continue
        edit = Edit([finding], "", safe=False)
        statement = cst.parse_statement(f"{receiver}.train()\n")
        edit.block(owner, index, index, _prepend(statement))
        line = context.tree.statement_start(owner.body[index]) if index < len(owner.body) else 0
        edit.description = (
            f"inserted `{receiver}.train()` before line {line}, so every training step runs "
            "in training mode"
        )
        planned[key] = edit
        results.append(edit)
    return results


def _train_at_loop_head(
    context: Context, finding: Finding
) -> tuple[tuple[int, int], str, cst.IndentedBlock | cst.Module, int] | Left:
    tree = context.tree
    match = _EVAL_RECEIVER.search(finding.message)
    receiver = match.group(1) if match else None
    try:
        parsed = expression(receiver) if receiver else None
    except cst.ParserSyntaxError:
        parsed = None
    if receiver is None or parsed is None or dotted(parsed) != receiver:
        return Left(finding, "the model is not a plain name or attribute")
    slot = tree.innermost_statement(finding.line)
    if slot is None:
        return Left(finding, "no statement found at the reported line")
    loops: list[cst.For | cst.While] = []
    for ancestor in tree.ancestors(slot.statement):
        if isinstance(ancestor, (cst.FunctionDef, cst.ClassDef)):
            break
        if isinstance(ancestor, (cst.For, cst.While)):
            loops.append(ancestor)
    cause = finding.related[0].line if finding.related else None
    chosen = next(
        (
            loop
            for loop in loops
            if cause is not None and tree.start_line(loop) <= cause <= tree.end_line(loop)
        ),
        loops[-1] if loops else None,
    )
    if chosen is None:
        if not isinstance(slot.owner, (cst.IndentedBlock, cst.Module)):
            return Left(finding, "the step is not in a block of statements")
        return (id(slot.owner), slot.index), receiver, slot.owner, slot.index
    if not isinstance(chosen.body, cst.IndentedBlock):
        return Left(finding, "the loop's body is on the loop's own line")
    body = chosen.body.body
    step_child = _child_holding(tree, body, finding.line)
    cause_child = _child_holding(tree, body, cause) if cause is not None else None
    if cause_child is not None and step_child is not None and cause_child <= step_child:
        # The eval() runs before the step in the same iteration: a train() at the head of the
        # loop would run before the eval(), and fix nothing.
        return Left(
            finding,
            f"`{receiver}.eval()` at line {cause} runs before the step in the same iteration; "
            f"move it after the training steps, or call `{receiver}.train()` after it",
        )
    head = method_call(body[0], "train") if body else None
    if head is not None and head[0] == receiver:
        return Left(finding, f"the loop already starts with `{receiver}.train()`")
    root = receiver.split(".", 1)[0]
    for name in names_in(chosen.body):
        parent = tree.parents.get(name)
        if name.value == root and isinstance(parent, cst.AssignTarget):
            return Left(finding, f"`{root}` is assigned inside the loop")
    return (id(chosen.body), 0), receiver, chosen.body, 0


def _child_holding(tree: Tree, body: Sequence[cst.BaseStatement], line: int) -> int | None:
    """The index of the statement of ``body`` whose lines hold ``line``."""
    for index, statement in enumerate(body):
        if tree.statement_start(statement) <= line <= tree.end_line(statement):
            return index
    return None


# ------------------------------------------------------------------------------- GG104


def fix_grad_disabled(context: Context, findings: list[Finding]) -> list[Edit | Left]:
    """GG104: ``torch.set_grad_enabled(False)`` -> a ``with`` block over the code after it."""
    return [_grad_block(context, finding) for finding in findings]


def _set_grad_call(statement: cst.BaseStatement, value: str) -> cst.Call | None:
    call = simple_call(statement)
    if call is None or len(call.args) != 1:
        return None
    name = dotted(call.func) or ""
    if name.rsplit(".", 1)[-1] not in ("set_grad_enabled", "_set_grad_enabled"):
        return None
    argument = call.args[0].value
    if isinstance(argument, cst.Name) and argument.value == value:
        return call
    return None


def _grad_block(context: Context, finding: Finding) -> Edit | Left:
    tree = context.tree
    slot = next(
        (s for s in tree.statements_at(finding.line) if _set_grad_call(s.statement, "False")),
        None,
    )
    if slot is None:
        return Left(finding, "the `set_grad_enabled(False)` call is not a statement of its own")
    call = _set_grad_call(slot.statement, "False")
    assert call is not None
    body = slot.owner.body
    restore = next(
        (i for i in range(slot.index + 1, len(body)) if _set_grad_call(body[i], "True")), None
    )
    end = restore if restore is not None else len(body)
    if end == slot.index + 1:
        return Left(finding, "no code follows it in its block")
    edit = Edit([finding], "", safe=False)
    name = dotted(call.func) or ""
    if name.rsplit(".", 1)[-1] == "set_grad_enabled":
        item: cst.BaseExpression = call
        spelled = tree.code(call)
    else:
        spelled = f"{context.torch(edit, 'set_grad_enabled')}(False)"
        item = expression(spelled)
    statement = slot.statement
    assert isinstance(statement, cst.SimpleStatementLine)
    comment = statement.trailing_whitespace.comment
    stop = end - slot.index

    def build(old: Statements) -> Statements:
        inner = old[1:stop]
        footer = comments_of(old[stop:]) if restore is not None else []
        return [
            wrap(
                item,
                inner,
                leading=list(statement.leading_lines),
                header_comment=comment,
                footer=footer,
            )
        ]

    last = end + 1 if restore is not None else end
    edit.block(slot.owner, slot.index, last, build)
    edit.claim_lines(tree.statement_start(statement), tree.end_line(body[last - 1]))
    covered = "up to the restore" if restore is not None else "to the end of its block"
    edit.description = (
        f"turned `{tree.code(call)}` into `with {spelled}:` over the code after it ({covered}): "
        "the caller gets its grad mode back"
    )
    return edit

