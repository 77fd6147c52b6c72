"""The safe fixes, applied by ``--fix``: GG110, GG108 and GG106.

Each keeps what the code computes. The one change in behaviour is GG110's, and it is the bug
being fixed: submodules that were in eval before the block stay in eval after it, where the
hand-written ``R.train()`` woke them.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from gradguard.lint._finding import Finding
from gradguard.lint._fix._edits import Edit, Statements, attribute_call
from gradguard.lint._fix._plan import Context, Left, expression
from gradguard.lint._fix._tree import (
    Slot,
    calls_in,
    dotted,
    exits_in,
    mentions,
    method_call,
    names_in,
)

# Builtins that cannot reach a model they are not given: statements calling only these may move
# across the point where the model's mode changes.
_HARMLESS_CALLS = frozenset(
    {"print", "len", "float", "int", "round", "str", "repr", "format", "abs", "min", "max",
     "sum", "range", "enumerate", "zip", "isinstance", "bool", "list", "tuple", "dict", "set"}
)


def harmless(statement: cst.BaseStatement, receiver: str) -> bool:
    """Whether ``statement`` behaves the same whatever mode ``receiver`` is in."""
    if mentions(statement, receiver):
        return False
    return all(
        isinstance(call.func, cst.Name) and call.func.value in _HARMLESS_CALLS
        for call in calls_in(statement)
    )


def grad_manager(item: cst.WithItem) -> str | None:
    """``no_grad`` / ``inference_mode`` for ``with torch.no_grad():`` and kin, without arguments."""
    call = item.item
    if item.asname is not None or not isinstance(call, cst.Call) or call.args:
        return None
    name = dotted(call.func)
    last = name.rsplit(".", 1)[-1] if name else None
    return last if last in ("no_grad", "inference_mode") else None


def _restores_train(statement: cst.BaseStatement, receiver: str) -> bool:
    found = method_call(statement, "train")
    if found is None or found[0] != receiver:
        return False
    args = found[1].args
    if not args:
        return True
    if len(args) != 1 or (args[0].keyword is not None and args[0].keyword.value != "mode"):
        return False
    return isinstance(args[0].value, cst.Name) and args[0].value.value == "True"


# ------------------------------------------------------------------------------- GG110


def fix_eval_no_grad_pairs(context: Context, findings: list[Finding]) -> list[Edit | Left]:
    """GG110: ``R.eval()`` + ``with torch.no_grad():`` + ``R.train()`` -> ``evaluating(R)``."""
    return [_pair(context, finding) for finding in findings]


def _pair(context: Context, finding: Finding) -> Edit | Left:
    tree = context.tree
    slot = next(
        (
            s
            for s in tree.statements_at(finding.line)
            if (found := method_call(s.statement, "eval")) is not None and not found[1].args
        ),
        None,
    )
    if slot is None:
        return Left(finding, "the `eval()` call is not a statement of its own")
    found = method_call(slot.statement, "eval")
    assert found is not None
    receiver, eval_call = found
    body = slot.owner.body
    related = {r.line for r in finding.related}
    with_index: int | None = None
    for index in range(slot.index + 1, len(body)):
        statement = body[index]
        if isinstance(statement, cst.With) and (
            not related or tree.statement_start(statement) in related
        ):
            with_index = index
            break
        if not harmless(statement, receiver):
            return Left(
                finding,
                f"a statement between `{receiver}.eval()` and the block may depend on the mode "
                f"of `{receiver}`",
            )
    if with_index is None:
        return Left(finding, "the no_grad block is not in the same statements as the eval()")
    block = body[with_index]
    assert isinstance(block, cst.With)
    item_index = next(
        (i for i, item in enumerate(block.items) if grad_manager(item) is not None), None
    )
    if item_index is None or block.asynchronous is not None:
        return Left(finding, "the block's grad-mode manager takes arguments or is bound by `as`")
    manager = grad_manager(block.items[item_index])
    if not isinstance(block.body, cst.IndentedBlock) or exits_in(block.body.body):
        return Left(
            finding,
            "the block can be left early (return, break, continue, raise or yield), and "
            f"`{receiver}.train()` does not follow on that path",
        )
    train_index: int | None = None
    for index in range(with_index + 1, len(body)):
        if _restores_train(body[index], receiver):
            train_index = index
            break
        if not harmless(body[index], receiver):
            break
    if train_index is None:
        return Left(
            finding,
            f"no `{receiver}.train()` follows the block on every path, so `evaluating` would "
            f"leave `{receiver}` in a different mode after it",
        )
    edit = Edit([finding], "", safe=True)
    evaluating = context.gradguard(edit, "evaluating")
    assert isinstance(eval_call.func, cst.Attribute)
    receiver_code = tree.code(eval_call.func.value)
    mode = ', mode="inference"' if manager == "inference_mode" else ""
    new_item = expression(f"{evaluating}({receiver_code}{mode})")
    spelled = tree.code(block.items[item_index].item)
    edit.description = (
        f"replaced `{receiver}.eval()` + `with {spelled}:` + `{receiver}.train()` by "
        f"`with {evaluating}({receiver_code}{mode}):`; submodules of `{receiver}` that were in "
        f"eval before the block now stay in eval after it (`{receiver}.train()` woke them)"
    )

    def swap(node: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(node, cst.With)
        items = list(node.items)
        items[item_index] = items[item_index].with_changes(item=new_item)
        return node.with_changes(items=items)

    edit.block(slot.owner, slot.index, slot.index + 1, _remove)
    edit.block(slot.owner, train_index, train_index + 1, _remove)
    edit.claim_lines(tree.statement_start(slot.statement), tree.end_line(body[train_index]))
    edit.claim_slots(slot.owner, with_index, with_index + 1)
    edit.node(block, swap)
    return edit


def _remove(old: Statements) -> Statements:
    return []


def _set_field(name: str, value: cst.CSTNode) -> Callable[[cst.CSTNode], cst.CSTNode]:
    def build(node: cst.CSTNode) -> cst.CSTNode:
        return node.with_changes(**{name: value})

    return build


def _call_on_value(method: str) -> Callable[[cst.CSTNode], cst.CSTNode]:
    """``target += value`` -> ``target += value.method()``."""

    def build(node: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(node, cst.AugAssign)
        return node.with_changes(value=attribute_call(node.value, method))

    return build


# ------------------------------------------------------------------------------- GG108


def fix_async_decorators(context: Context, findings: list[Finding]) -> list[Edit | Left]:
    """GG108: ``@torch.no_grad()`` on an ``async def`` -> ``@gradguard.inference_fn(models=[])``."""
    return [_decorator(context, finding) for finding in findings]


def _literal_false(call: cst.Call | None) -> bool:
    """Whether a ``set_grad_enabled(...)`` call is given a literal ``False``."""
    if call is None or len(call.args) != 1:
        return False
    value = call.args[0].value
    return isinstance(value, cst.Name) and value.value == "False"


def _async_def(context: Context, line: int) -> cst.FunctionDef | None:
    for statement in context.tree.slots:
        if (
            isinstance(statement, cst.FunctionDef)
            and statement.asynchronous is not None
            and context.tree.start_line(statement.name) == line
        ):
            return statement
    return None


def _decorator(context: Context, finding: Finding) -> Edit | Left:
    tree = context.tree
    function = _async_def(context, finding.line)
    if function is None:
        return Left(finding, "no `async def` found at the reported line")
    related = {r.line for r in finding.related}
    edit = Edit([finding], "", safe=True)
    changed: list[str] = []
    for decorator in function.decorators:
        if related and tree.start_line(decorator) not in related:
            continue
        expr = decorator.decorator
        call = expr if isinstance(expr, cst.Call) else None
        name = dotted(call.func if call is not None else expr)
        last = name.rsplit(".", 1)[-1] if name else ""
        if last == "set_grad_enabled" and _literal_false(call):
            last = "no_grad"  # the same mode, spelled as a switch
        elif last not in ("no_grad", "inference_mode"):
            return Left(
                finding,
                f"`@{tree.code(expr)}` may turn gradients on, which no gradguard scope does (use "
                "the `with` form inside the body)",
            )
        if call is not None and call.args and last != "no_grad":
            return Left(finding, f"`@{tree.code(expr)}` takes arguments")
        inference_fn = context.gradguard(edit, "inference_fn")
        mode = ', mode="inference"' if last == "inference_mode" else ""
        replacement = expression(f"{inference_fn}(models=[]{mode})")
        edit.node(decorator, _set_field("decorator", replacement))
        changed.append(f"`@{tree.code(expr)}` by `@{inference_fn}(models=[]{mode})`")
    if not changed:
        return Left(finding, "no grad-mode decorator found on the function")
    edit.description = (
        f"replaced {', '.join(changed)} on `async def {function.name.value}`: its body now really "
        "runs without gradients, and no model is switched (`models=[]`)"
    )
    return edit


# ------------------------------------------------------------------------------- GG106

_NUMBER_FUNCTIONS = frozenset({"print", "float", "int", "round", "str", "repr", "format", "abs"})
_LOG_METHODS = frozenset(
    {"info", "debug", "warning", "error", "critical", "log", "add_scalar", "write",
     "set_postfix", "set_description", "append_text"}
)
_ARITHMETIC = (
    cst.BinaryOperation, cst.UnaryOperation, cst.Comparison, cst.ComparisonTarget,
)


def fix_accumulations(context: Context, findings: list[Finding]) -> list[Edit | Left]:
    """GG106: ``acc += loss`` -> ``acc += loss.item()`` (or ``.detach()``); ``append(t.detach())``.

    ``.item()`` only where the value is a loss and the accumulator is only used as a number.
    """
    return [_accumulation(context, finding) for finding in findings]


def _loss_name(name: str) -> bool:
    """``loss``, ``total_loss``, ``valLoss``: one loss (``losses``, ``loss_per_sample`` are not)."""
    return name.lower().endswith("loss")


def _reduces(call: cst.Call) -> bool:
    return not any(
        arg.keyword is not None and arg.keyword.value == "reduction" for arg in call.args
    )


def _is_loss(context: Context, expr: cst.BaseExpression) -> bool:
    """Whether ``expr`` is a loss, a one-element tensor (``criterion(out, y)``, ``out.loss``).

    A criterion built anywhere in the file with a ``reduction=`` argument may give one loss per
    sample, so its calls do not count.
    """
    if isinstance(expr, cst.Name):
        return _loss_name(expr.value)
    if isinstance(expr, cst.Attribute):
        return _loss_name(expr.attr.value)
    if isinstance(expr, cst.BinaryOperation):
        return _is_loss(context, expr.left) and _is_loss(context, expr.right)
    if isinstance(expr, cst.Call):
        name = (dotted(expr.func) or "").rsplit(".", 1)[-1]
        lowered = name.lower()
        named = lowered.endswith(("loss", "criterion", "cross_entropy")) or lowered in (
            "nll", "loss_fn", "criterion"
        )
        return named and _reduces(expr) and name not in _criteria_with_reduction(context)
    return False


def _criteria_with_reduction(context: Context) -> set[str]:
    """Names assigned anywhere in the file from a call given ``reduction=``."""
    found: set[str] = set()
    for node in context.tree.positions:
        if isinstance(node, cst.Assign) and isinstance(node.value, cst.Call):
            if _reduces(node.value):
                continue
            for target in node.targets:
                name = dotted(target.target) or ""
                found.add(name.rsplit(".", 1)[-1])
    return found


def _number_use(context: Context, name: cst.Name) -> bool:
    """Whether this read of an accumulator works the same on a Python float."""
    parents = context.tree.parents
    node: cst.CSTNode = name
    parent = parents.get(node)
    while isinstance(parent, _ARITHMETIC):
        node, parent = parent, parents.get(parent)
    if isinstance(parent, (cst.FormattedStringExpression, cst.If, cst.While)):
        return True
    if isinstance(parent, cst.Arg):
        call = parents.get(parent)
        if isinstance(call, cst.Call):
            if isinstance(call.func, cst.Name):
                return call.func.value in _NUMBER_FUNCTIONS
            if isinstance(call.func, cst.Attribute):
                return call.func.attr.value in _LOG_METHODS
    return False


def _is_store(context: Context, name: cst.Name) -> bool:
    parent = context.tree.parents.get(name)
    if isinstance(parent, cst.AssignTarget):
        return True
    return isinstance(parent, (cst.AugAssign, cst.AnnAssign)) and parent.target is name


def _only_numbers(context: Context, slot: Slot, accumulator: str) -> bool:
    scope = context.tree.enclosing_scope(slot.statement)
    for name in names_in(scope):
        if name.value != accumulator or _within(context, name, slot.statement):
            continue
        if _is_store(context, name):
            continue
        if not _number_use(context, name):
            return False
    return True


def _within(context: Context, node: cst.CSTNode, ancestor: cst.CSTNode) -> bool:
    return node is ancestor or any(a is ancestor for a in context.tree.ancestors(node))


def _already_plain(expr: cst.BaseExpression) -> bool:
    return (
        isinstance(expr, cst.Call)
        and isinstance(expr.func, cst.Attribute)
        and expr.func.attr.value in ("item", "detach", "tolist")
    )


def _accumulation(context: Context, finding: Finding) -> Edit | Left:
    tree = context.tree
    slot = tree.innermost_statement(finding.line)
    statement = slot.statement if slot is not None else None
    if (
        slot is None
        or not isinstance(statement, cst.SimpleStatementLine)
        or len(statement.body) != 1
    ):
        return Left(finding, "the accumulation is not a statement of its own")
    small = statement.body[0]
    edit = Edit([finding], "", safe=True)
    for related in finding.related:
        edit.claim_lines(related.line, related.line)
    if isinstance(small, cst.AugAssign) and isinstance(small.operator, cst.AddAssign):
        accumulator = dotted(small.target)
        if accumulator is None or _already_plain(small.value):
            return Left(finding, "the accumulated value is already a plain number or detached")
        scalar = _is_loss(context, small.value) and "." not in accumulator
        method = "item" if scalar and _only_numbers(context, slot, accumulator) else "detach"
        value_code = tree.code(attribute_call(small.value, method))
        edit.node(small, _call_on_value(method))
        why = (
            f"`{accumulator}` is only used as a number"
            if method == "item"
            else "the same values, without each iteration's graph"
        )
        edit.description = f"`{accumulator} += ...` now adds `{value_code}`: {why}"
        return edit
    call = small.value if isinstance(small, cst.Expr) else None
    if (
        isinstance(call, cst.Call)
        and isinstance(call.func, cst.Attribute)
        and call.func.attr.value == "append"
        and len(call.args) == 1
        and call.args[0].keyword is None
        and not call.args[0].star
    ):
        if _already_plain(call.args[0].value):
            return Left(finding, "the appended value is already a plain number or detached")
        arg = call.args[0]

        def detach(node: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(node, cst.Arg)
            return node.with_changes(value=attribute_call(node.value, "detach"))

        edit.node(arg, detach)
        edit.description = (
            f"`{tree.code(call.func)}(...)` now appends "
            f"`{tree.code(attribute_call(arg.value, 'detach'))}`: the same values, without each "
            "iteration's graph"
        )
        return edit
    return Left(finding, "only `acc += value` and `list.append(value)` are rewritten")
