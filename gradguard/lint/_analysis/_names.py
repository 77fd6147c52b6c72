"""How names in a module resolve: import aliases, dotted receivers, torch's grad-mode spellings."""

from __future__ import annotations

import ast

#: Module methods that return the module itself, so ``net.to(device).train()`` acts on ``net``.
SELF_RETURNING = frozenset(
    {
        "to",
        "cuda",
        "cpu",
        "float",
        "half",
        "double",
        "bfloat16",
        "type",
        "train",
        "eval",
        "requires_grad_",
        "share_memory",
        "to_empty",
        "xpu",
        "mps",
    }
)


class Aliases:
    """Local names bound by imports, mapped to what they import (``nn`` -> ``torch.nn``)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def add_import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.names[alias.asname] = alias.name
                else:
                    root = alias.name.split(".", 1)[0]
                    self.names.setdefault(root, root)
            return
        if node.level or not node.module:
            return
        for alias in node.names:
            if alias.name != "*":
                self.names[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def qualify(self, node: ast.expr) -> str | None:
        """The dotted name an expression spells, imports resolved; None if it is not one."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.names.get(node.id, node.id))
        return ".".join(reversed(parts))


def collect_aliases(nodes: list[ast.AST]) -> Aliases:
    """Every import in the module, wherever it is (function-level imports included)."""
    aliases = Aliases()
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            aliases.add_import(node)
    return aliases


def strip_chain(node: ast.expr) -> ast.expr:
    """``Net().to(device).train()`` -> ``Net()``: where a chain of self-returning calls starts."""
    while (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in SELF_RETURNING
    ):
        node = node.func.value
    return node


def receiver_key(node: ast.expr) -> str | None:
    """``model``, ``self.model``, ``net.to(device)`` -> ``net``; None for anything else."""
    while (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in SELF_RETURNING
    ):
        node = node.func.value
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def torch_member(qualified: str | None) -> str | None:
    """The last part of a ``torch``-rooted name (``torch.autograd.no_grad`` -> ``no_grad``)."""
    if qualified is None or not (qualified == "torch" or qualified.startswith("torch.")):
        return None
    return qualified.rsplit(".", 1)[-1]


_GRAD_MANAGERS = frozenset(
    {"no_grad", "inference_mode", "enable_grad", "set_grad_enabled", "_set_grad_enabled"}
)


def grad_mode_call(aliases: Aliases, node: ast.expr) -> tuple[str, ast.Call | None] | None:
    """Which grad-mode manager an expression is: (member, call) for ``torch.no_grad()`` and kin.

    Members are ``no_grad``, ``inference_mode``, ``enable_grad``, ``set_grad_enabled``; the call is
    None for a bare ``@torch.no_grad``.
    """
    call = node if isinstance(node, ast.Call) else None
    target = call.func if call is not None else node
    member = torch_member(aliases.qualify(target))
    if member in _GRAD_MANAGERS:
        return ("set_grad_enabled" if member == "_set_grad_enabled" else member, call)
    return None


def literal_bool(call: ast.Call | None, keyword: str, default: bool | None) -> bool | None:
    """The literal True/False a grad-mode call was given (first argument or ``keyword=``)."""
    if call is None:
        return default
    arg: ast.expr | None = call.args[0] if call.args else None
    for kw in call.keywords:
        if kw.arg == keyword:
            arg = kw.value
    if arg is None:
        return default
    if isinstance(arg, ast.Constant) and isinstance(arg.value, bool):
        return arg.value
    return None
