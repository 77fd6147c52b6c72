"""What a module defines that the flow pass needs: its functions, its module classes, summaries."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gradguard.lint._analysis._names import Aliases

if TYPE_CHECKING:
    from gradguard.lint._analysis._steps import CallSite, Reached, StepSite

Function = ast.FunctionDef | ast.AsyncFunctionDef

#: (kind, line, description, how): one reason a receiver or the grad mode is what it is.
Fact = tuple[str, int, str, str]

#: Layers whose behaviour eval() changes; a class that mentions none of them does not care.
_MODE_SENSITIVE = re.compile(r"dropout|batchnorm|batch_norm|instancenorm|syncbatchnorm|training")
_TORCH_FAMILY = frozenset(
    {
        "torch",
        "torchvision",
        "torchaudio",
        "torchtext",
        "lightning",
        "pytorch_lightning",
        "lightning_fabric",
        "transformers",
        "accelerate",
        "timm",
        "deepspeed",
        "ignite",
        "gradguard",
    }
)
_MODULE_BASE = re.compile(r"(^|\.)(Module|LightningModule|Sequential|ModuleList|ModuleDict)$")


@dataclass
class Summary:
    """What calling a function of this module does to the modes of what it is given.

    ``modes`` maps a receiver rooted at a parameter (``("model", "")``, ``("self", ".net")``) or
    at a global name (``("", "model")``) to the facts at the function's exits.
    """

    params: tuple[str, ...]
    modes: dict[tuple[str, str], frozenset[Fact]] = field(default_factory=dict)
    does_backward: bool = False
    #: its optimizer steps and its calls of this module's functions, with the modes there.
    steps: list[StepSite] = field(default_factory=list)
    calls: list[CallSite] = field(default_factory=list)


@dataclass
class ModuleIndex:
    """One module's definitions, built once before the flow pass."""

    aliases: Aliases
    functions: dict[str, Function] = field(default_factory=dict)
    methods: dict[str, dict[str, Function]] = field(default_factory=dict)
    class_of: dict[int, ast.ClassDef] = field(default_factory=dict)
    module_classes: set[str] = field(default_factory=set)
    class_defs: dict[str, ast.ClassDef] = field(default_factory=dict)
    _sensitive: dict[str, bool] = field(default_factory=dict)
    local_classes: set[str] = field(default_factory=set)
    summaries: dict[int, Summary] = field(default_factory=dict)
    #: whether the module imports torch or a library built on it.
    uses_torch: bool = False
    call_grads: dict[int, list[frozenset[Fact]]] = field(default_factory=dict)
    #: id(scope) -> its ScopeFacts (typed loosely: the flow module defines the class).
    scopes: dict[int, Any] = field(default_factory=dict)
    #: (id(function), receiver) -> the step it reaches there in its given mode (a memo).
    reached: dict[tuple[int, str], Reached | None] = field(default_factory=dict)
    #: id(function) -> whether it (or a function it calls) may switch a model's mode.
    switches: dict[int, bool] = field(default_factory=dict)

    def is_sensitive(self, name: str) -> bool:
        """Whether a module class of this file has a layer whose behaviour eval() changes."""
        known = self._sensitive.get(name)
        if known is not None:
            return known
        self._sensitive[name] = False  # a cycle of classes settles on "no"
        cls = self.class_defs.get(name)
        found = False
        if cls is not None and name in self.module_classes:
            bases = [self.aliases.qualify(base) or "" for base in cls.bases]
            found = any(
                base.startswith("torchvision.models.")
                or (base in self.class_defs and self.is_sensitive(base))
                for base in bases
            ) or mentions_mode_sensitive(cls, self, name)
        self._sensitive[name] = found
        return found

    def resolve_call(self, func: ast.expr, within: Function | None) -> Function | None:
        """The function of this module a call reaches: ``helper(...)`` or ``self.method(...)``."""
        if isinstance(func, ast.Name):
            return self.functions.get(func.id)
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "self"
            and within is not None
        ):
            owner = self.class_of.get(id(within))
            if owner is not None:
                return self.methods.get(owner.name, {}).get(func.attr)
        return None


def _identifiers(node: ast.AST) -> set[str]:
    names: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            names.add(child.id)
        elif isinstance(child, ast.Attribute):
            names.add(child.attr)
        elif isinstance(child, ast.keyword) and child.arg:
            names.add(child.arg)
    return names


def mentions_mode_sensitive(node: ast.AST, index: ModuleIndex, own: str = "") -> bool:
    """Whether code builds a dropout/BatchNorm layer or reads ``.training`` (so eval() matters)."""
    for name in _identifiers(node):
        if _MODE_SENSITIVE.search(name.lower()):
            return True
        if name != own and name in index.class_defs and index.is_sensitive(name):
            return True
    return False


def build_index(tree: ast.Module, aliases: Aliases) -> ModuleIndex:
    """Index the module's top-level functions, classes and their methods."""
    index = ModuleIndex(aliases)
    index.uses_torch = any(
        target.split(".", 1)[0] in _TORCH_FAMILY for target in aliases.names.values()
    )
    classes: list[ast.ClassDef] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            index.functions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            classes.append(node)
    for cls in classes:
        index.local_classes.add(cls.name)
        index.class_defs[cls.name] = cls
        methods = index.methods.setdefault(cls.name, {})
        for item in cls.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                methods[item.name] = item
                index.class_of[id(item)] = cls
    changed = True
    while changed:
        changed = False
        for cls in classes:
            bases = [aliases.qualify(base) or "" for base in cls.bases]
            if cls.name not in index.module_classes and any(
                _MODULE_BASE.search(base) or base in index.module_classes for base in bases
            ):
                index.module_classes.add(cls.name)
                changed = True
    # Inherited methods: self.helper() in a subclass reaches the base class's helper.
    for cls in classes:
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in index.methods:
                for name, method in index.methods[base.id].items():
                    index.methods[cls.name].setdefault(name, method)
    return index
