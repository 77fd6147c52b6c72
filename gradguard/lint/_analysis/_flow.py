"""The per-function flow pass: modes per receiver, grad mode, graph-carrying values, zero_grad.

One walk over the statements, branches joined, loops iterated to a fixed point (findings are only
taken on the last, stable walk of each loop), ``return``/``break``/``continue`` routed through
``with`` exits and ``finally`` bodies. Calls to functions and methods of the same module apply one
level of summary (what they leave their arguments' modes in); a step inside one of them, found a
few calls down (``_steps``), is a step at the call. Nothing unknown is ever reported.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import cast

from gradguard.lint._analysis import _messages as msg
from gradguard.lint._analysis._module import (
    Fact,
    Function,
    ModuleIndex,
    Summary,
    mentions_mode_sensitive,
)
from gradguard.lint._analysis._names import (
    grad_mode_call,
    literal_bool,
    receiver_key,
    strip_chain,
    torch_member,
)
from gradguard.lint._analysis._report import Reporter, snippet
from gradguard.lint._analysis._state import (
    UNKNOWN,
    Origin,
    State,
    all_kind,
    first,
    join,
    join_all,
)
from gradguard.lint._analysis._steps import (
    CHANGED,
    GLOBALS,
    TOUCHED,
    CallSite,
    StepSearch,
    StepSite,
    into_callee,
    may_switch_modes,
    out_of_callee,
    params_of,
    touched,
)

_MAX_LOOP_WALKS = 6
_EMPTY: frozenset[Origin] = frozenset()
_OTHER = frozenset({UNKNOWN})

#: Results that carry no autograd graph whatever they are called on.
_NO_GRAPH_METHODS = frozenset(
    {
        "item",
        "tolist",
        "numpy",
        "detach",
        "detach_",
        "argmax",
        "argmin",
        "size",
        "dim",
        "numel",
        "nelement",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "long",
        "int",
        "bool",
        "byte",
        "state_dict",
        "parameters",
        "named_parameters",
        "modules",
        "children",
        "keys",
        "format",
        "join",
        "isnan",
        "isinf",
        "isfinite",
        "get_last_lr",
        "data_ptr",
        "stride",
    }
)
_NO_GRAPH_ATTRIBUTES = frozenset(
    {"data", "shape", "dtype", "device", "grad", "requires_grad", "is_leaf", "ndim", "training"}
)
_NO_GRAPH_FUNCTIONS = frozenset(
    {
        "float",
        "int",
        "bool",
        "str",
        "len",
        "print",
        "round",
        "isinstance",
        "range",
        "repr",
        "format",
        "hasattr",
        "getattr",
        "type",
        "id",
        "open",
    }
)
_NO_GRAPH_TORCH = frozenset(
    {"argmax", "argmin", "no_grad", "is_grad_enabled", "numel", "manual_seed", "save", "load"}
)
_AUTOGRAD_BACKWARD = frozenset({"torch.autograd.backward", "torch.autograd.grad"})
_CONTAINER_ADD = frozenset({"append", "extend", "insert", "add", "appendleft"})
_MODEL_WORDS = frozenset(
    {
        "model",
        "models",
        "net",
        "network",
        "encoder",
        "decoder",
        "generator",
        "discriminator",
        "policy",
        "critic",
        "actor",
        "classifier",
        "backbone",
        "teacher",
        "student",
        "transformer",
        "rnn",
        "lstm",
        "gru",
        "vae",
        "unet",
        "g",
        "d",
    }
)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def _within(key: str, receiver: str | None) -> bool:
    """Whether ``key`` is ``receiver`` or one of its attributes."""
    return receiver is not None and (key == receiver or key.startswith(receiver + "."))


def _words(name: str) -> list[str]:
    """``netG`` -> net, g; ``text_encoder`` -> text, encoder."""
    return [word.lower() for word in _WORD.findall(name)]


_NOT_MODEL_WORDS = re.compile(r"loss|criterion|opt|sched|token|metric|data|loader|writer|log")
#: A callable named for what it does (``get_model``, ``build_net``) returns a module; it is not one.
_VERB = re.compile(
    r"(get|create|build|load|make|init|set|list|save|export|prepare|to|from|is|has|apply"
    r"|register|wrap|unwrap|setup|configure|compute|update|reset|freeze|unfreeze|print|log)_"
)
#: Callables that leave a model's mode alone when handed one.
_MODE_SAFE_CALLS = frozenset(
    {
        "print",
        "len",
        "isinstance",
        "id",
        "type",
        "str",
        "repr",
        "hasattr",
        "getattr",
        "sum",
        "list",
        "tuple",
        "zip",
        "enumerate",
        "iter",
        "next",
        "sorted",
        "copy.deepcopy",
        "copy.copy",
    }
)
#: Methods of a model that may change its own or its submodules' modes.
_CHANGES_MODE = re.compile(r"^apply$|freeze|eval|train|mode")
_GRAD_MODE_METHODS = frozenset({"inference_mode", "set_grad_enabled", "_set_grad_enabled"})
_GRAD_DECORATOR = re.compile(r"no_?grad|inference", re.IGNORECASE)
_OPTIMIZER_WORDS = re.compile(r"opt")
_NOT_OPTIMIZER_WORDS = re.compile(r"sched|lr|env|adopt|option")
_CONSTRUCTOR = re.compile(r"^[A-Z][A-Za-z0-9_]*[a-z][A-Za-z0-9_]*$")
_NOT_MODULE_CLASS = re.compile(
    r"(Loss|Optimizer|Dataset|DataLoader|Loader|Scheduler|Sampler|Writer|Logger|Meter|Parser"
    r"|Error|Exception|Tokenizer|Config|Path|Generator|Scaler|Accelerator|Trainer|Fabric)$"
)
#: runtime check names (what gradguard.allow takes) -> the static rules they also silence.
_ALLOW = {
    "graph-in-inference": ("GG102", "GG106"),
    "GG001": ("GG102", "GG106"),
    "train-mode-without-grad": ("GG101", "GG104"),
    "GG002": ("GG101", "GG104"),
    "backward-without-grad": ("GG105",),
    "GG003": ("GG105",),
    "eval-mode-training": ("GG103",),
    "GG004": ("GG103",),
    "step-without-gradients": ("GG107",),
    "GG005": ("GG107",),
}
_ALL_ALLOWED = ("GG101", "GG102", "GG103", "GG104", "GG105", "GG106", "GG107")


@dataclass
class _Loop:
    breaks: list[State] = field(default_factory=list)
    continues: list[State] = field(default_factory=list)


@dataclass
class _Finally:
    pending: dict[str, list[tuple[State, int]]] = field(default_factory=dict)


@dataclass
class _WithExit:
    grad: frozenset[Fact] | None
    modes: dict[str, frozenset[Fact] | None]


_Frame = _Loop | _Finally | _WithExit


@dataclass
class _Candidate:
    code: str
    node: ast.AST
    message: str
    fix: str
    related: tuple[tuple[int, str], ...]
    #: reported only if this receiver is shown to be trained in the function (GG103).
    needs: str | None = None


def contains_backward(nodes: list[ast.stmt]) -> bool:
    """Whether any statement asks for a backward or a gradient (syntactically)."""
    for stmt in nodes:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                name = _callee_name(node.func)
                if name is not None and ("backward" in name or name == "grad"):
                    return True
    return False


def _callee_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _loaded_names(node: ast.AST) -> list[str]:
    callees = {id(child.func) for child in ast.walk(node) if isinstance(child, ast.Call)}
    return [
        child.id
        for child in ast.walk(node)
        if isinstance(child, ast.Name)
        and isinstance(child.ctx, ast.Load)
        and id(child) not in callees
    ]


_NOT_COMPUTING = frozenset(
    {"list", "tuple", "dict", "zip", "iter", "next", "enumerate", "reversed", "sorted", "filter"}
)


def _computes(node: ast.expr) -> bool:
    """Whether an expression makes a new tensor (a call, arithmetic), not just reads one."""
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in _NOT_COMPUTING:
            return any(_computes(arg) for arg in node.args)
        return True
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return True
    if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        return _computes(node.value)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return any(_computes(element) for element in node.elts)
    if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
        return _computes(node.elt)
    if isinstance(node, ast.IfExp):
        return _computes(node.body) or _computes(node.orelse)
    return False


def _weak(origin: Origin) -> Origin:
    kind, line, column = origin
    return origin if kind.startswith("weak") else ("weak" + kind, line, column)


def _is_gradient(attribute: str) -> bool:
    """``.grad``, ``.grad_sample`` (Opacus), ``.main_grad`` (Megatron): gradients set by hand."""
    return "grad" in attribute and attribute != "requires_grad"


def _asks_for_grad(node: ast.AST) -> bool:
    for child in ast.walk(node):
        if isinstance(child, ast.Call):
            name = _callee_name(child.func)
            if name in ("requires_grad_", "Parameter", "Variable"):
                return True
            if any(kw.arg == "requires_grad" for kw in child.keywords):
                return True
    return False


@dataclass
class ScopeFacts:
    """What one scope's code says before any flow: names it binds, loops, ``train()`` calls."""

    params: tuple[str, ...] = ()
    loop_vars: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)
    locals: set[str] = field(default_factory=set)
    trained: set[str] = field(default_factory=set)
    nested: dict[str, Function] = field(default_factory=dict)
    called: set[str] = field(default_factory=set)
    #: whether it calls a method that may switch a model's mode (train, eval, apply, freeze...).
    switches_modes: bool = False


def _params(function: Function) -> tuple[str, ...]:
    args = function.args
    named = (*args.posonlyargs, *args.args, *args.kwonlyargs)
    return tuple(a.arg for a in named) + tuple(
        a.arg for a in (args.vararg, args.kwarg) if a is not None
    )


def walk_module(tree: ast.Module) -> tuple[list[ast.AST], dict[int, ScopeFacts]]:
    """One walk over the whole module: every node, and each scope's own facts.

    A scope's own nodes exclude those of the functions, classes and lambdas inside it. Load and
    Store markers are not nodes here (they are a third of a tree and say nothing new).
    """
    nodes: list[ast.AST] = []
    scopes: dict[int, ScopeFacts] = {id(tree): ScopeFacts()}
    stack: list[tuple[ast.AST, ScopeFacts | None]] = [(tree, scopes[id(tree)])]
    node_type = ast.AST
    while stack:
        node, facts = stack.pop()
        nodes.append(node)
        kind = type(node)
        inner = facts
        if kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if facts is not None:
                facts.nested[node.name] = node
            inner = scopes[id(node)] = ScopeFacts(params=_params(node))
        elif kind is ast.ClassDef or kind is ast.Lambda:
            inner = None
        elif facts is not None and kind in _NOTED:
            _note(node, facts)
        for name in node._fields:
            if name == "ctx":
                continue
            value = getattr(node, name, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, node_type):
                        stack.append((item, inner))
            elif isinstance(value, node_type):
                stack.append((value, inner))
    return nodes, scopes


_NOTED = frozenset(
    {ast.For, ast.AsyncFor, ast.comprehension, ast.Global, ast.Nonlocal, ast.Name, ast.Call}
)


def _note(node: ast.AST, facts: ScopeFacts) -> None:
    if isinstance(node, ast.Name):
        if isinstance(node.ctx, ast.Store):
            facts.locals.add(node.id)
    elif isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            facts.called.add(func.id)
        elif isinstance(func, ast.Attribute):
            facts.called.add(func.attr)
            if _CHANGES_MODE.search(func.attr) and func.attr not in _GRAD_MODE_METHODS:
                facts.switches_modes = True
            if func.attr == "train" and literal_bool(node, "mode", True) is True:
                key = receiver_key(func.value)
                if key is not None:
                    facts.trained.add(key)
    elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
        for name in ast.walk(node.target):
            if isinstance(name, ast.Name):
                facts.loop_vars.add(name.id)
    elif isinstance(node, (ast.Global, ast.Nonlocal)):
        facts.globals.update(node.names)


class FunctionFlow:
    """The flow pass over one function (or a module's top level)."""

    def __init__(
        self,
        index: ModuleIndex,
        scope: Function | ast.Module,
        reporter: Reporter | None,
        *,
        summaries: bool,
    ) -> None:
        self.index = index
        self.aliases = index.aliases
        self.scope = scope
        self.function: Function | None = None if isinstance(scope, ast.Module) else scope
        self.reporter = reporter
        self.use_summaries = summaries
        # The first walk marks where each receiver's mode stops being the one given at the entry.
        self.records = not summaries
        self.step_sites: dict[int, StepSite] = {}
        self.call_sites: dict[int, CallSite] = {}
        self.buffers: list[list[tuple[_Candidate, Origin | None]]] = []
        self.frames: list[_Frame] = []
        self.exits: list[tuple[State, int]] = []
        self.reached: set[Origin] = set()
        self.candidates: dict[Origin, _Candidate] = {}
        self.allowed: set[str] = set()
        self.offblock_backward: list[bool] = []
        self.in_loop = 0
        self.loop_vars: set[str] = set()
        self.params: tuple[str, ...] = ()
        self.globals: set[str] = set()
        self.trained: set[str] = set()
        self.locals: set[str] = set()
        self.call_grads: list[tuple[Function, frozenset[Fact]]] = []
        self.grad_off_lines: dict[int, ast.AST] = {}
        self.does_backward = False
        self.forward_nodes: dict[Origin, ast.Call] = {}
        self.forward_keys: dict[Origin, str] = {}
        self.pending: list[_Candidate] = []
        self.parameters_of: str | None = None
        self.guards: list[ast.expr] = []
        self._prepare()

    # ----------------------------------------------------------------- set-up

    def _body(self) -> list[ast.stmt]:
        return self.scope.body

    def _prepare(self) -> None:
        facts: ScopeFacts = self.index.scopes[id(self.scope)]
        self.params = facts.params
        self.loop_vars = facts.loop_vars
        self.globals = facts.globals
        self.locals = facts.locals
        self.trained = facts.trained
        self.nested = facts.nested

    def _entry(self) -> State:
        state = State()
        if self.function is None:
            state.grad = frozenset({("on", 0, "", "entry")})
            return state
        if isinstance(self.function, ast.FunctionDef):
            for decorator in self.function.decorator_list:
                grad = self._decorator_grad(decorator)
                if grad is not None:
                    state.grad = grad
                    if grad and all_kind(grad, "off"):
                        self.offblock_backward.append(contains_backward(self.function.body))
                    return state
        recorded = self.index.call_grads.get(id(self.function))
        if recorded and all(all_kind(grads, "off") for grads in recorded):
            state.grad = frozenset().union(*recorded)
        return state

    def _decorator_grad(self, decorator: ast.expr) -> frozenset[Fact] | None:
        found = grad_mode_call(self.aliases, decorator)
        line = decorator.lineno
        spelled = f"`@{snippet(decorator)}`"
        if found is None:
            qualified = self.aliases.qualify(
                decorator.func if isinstance(decorator, ast.Call) else decorator
            )
            if qualified in ("gradguard.inference_fn", "gradguard.evaluating"):
                return frozenset({("off", line, spelled, "decorator")})
            if qualified == "gradguard.allow" and isinstance(decorator, ast.Call):
                self.allowed.update(self._allow_codes(decorator))
                return None
            if qualified is not None and _GRAD_DECORATOR.search(qualified.rsplit(".", 1)[-1]):
                # A project's own wrapper (`@smart_inference_mode()`): gradients are probably
                # off, but not known to be, so no rule that needs them on or off speaks.
                return frozenset({("quiet", line, spelled, "decorator")})
            return None
        member, call = found
        if member in ("no_grad", "inference_mode"):
            if member == "inference_mode" and literal_bool(call, "mode", True) is not True:
                return None
            return frozenset({("off", line, spelled, "decorator")})
        if member == "enable_grad":
            return frozenset({("on", line, spelled, "decorator")})
        value = literal_bool(call, "mode", None)
        if value is None:
            return None
        return frozenset({("on" if value else "off", line, spelled, "decorator")})

    # ----------------------------------------------------------------- driver

    def run(self) -> None:
        entry = self._entry()
        end = self.block(self._body(), entry)
        if end is not None and self._body():
            last = self._body()[-1]
            self.exits.append((end, getattr(last, "end_lineno", None) or last.lineno))
        self._finish()

    def summary(self) -> Summary:
        """What this function leaves its parameters' (and globals') modes in."""
        out = Summary(
            self.params,
            does_backward=self.does_backward,
            steps=list(self.step_sites.values()),
            calls=list(self.call_sites.values()),
        )
        states = [state for state, _line in self.exits]
        exit_state = join_all(list(states))
        if exit_state is None:
            return out
        for key, facts in exit_state.modes.items():
            if not any(fact[0] in ("train", "eval") for fact in facts):
                continue
            root, _, rest = key.partition(".")
            suffix = "." + rest if rest else ""
            if root in self.params:
                out.modes[(root, suffix)] = facts
            elif root not in self.locals or root in self.globals:
                out.modes[("", key)] = facts
        return out

    def _finish(self) -> None:
        if self.reporter is None:
            return
        trained_here = {self.forward_keys[o] for o in self.reached if o in self.forward_keys}
        for found in self.pending:
            needs = found.needs or ""
            if any(key == needs or key.startswith(needs + ".") for key in trained_here):
                self.candidates.setdefault(("pending", id(found), 0), found)
        for origin, candidate in self.candidates.items():
            if origin in self.reached:
                continue
            self.reporter.add(
                candidate.code,
                candidate.node,
                candidate.message,
                candidate.fix,
                tuple(self.reporter.related(line, text) for line, text in candidate.related),
            )
        if self.function is None or "GG104" in self.allowed or self._is_context_manager():
            return
        reported: set[int] = set()
        for state, line in self.exits:
            for fact in state.grad:
                if fact[0] == "off" and fact[3].startswith("stmt") and fact[1] not in reported:
                    reported.add(fact[1])
                    node = self.grad_off_lines[fact[1]]
                    message, fix = msg.grad_not_restored(fact[2], self.function.name, line)
                    self.reporter.add(
                        "GG104",
                        node,
                        message,
                        fix,
                        (self.reporter.related(line, f"`{self.function.name}` leaves here"),),
                    )

    def _is_context_manager(self) -> bool:
        """``__enter__`` leaves gradients off on purpose: its ``__exit__`` restores them."""
        if self.function is None:
            return False
        owner = self.index.class_of.get(id(self.function))
        if owner is None:
            return self.function.name in ("__enter__", "__aenter__")
        methods = self.index.methods.get(owner.name, {})
        return any(name in methods for name in ("__exit__", "__aexit__", "exit"))

    def report(
        self, code: str, node: ast.AST, message: str, fix: str, related: list[tuple[int, str]]
    ) -> None:
        if self.reporter is None or code in self.allowed:
            return
        self._emit(_Candidate(code, node, message, fix, tuple(related)), None)

    def candidate(self, origin: Origin, found: _Candidate) -> None:
        """A finding that holds unless its value reaches a backward (decided at the end)."""
        if self.reporter is not None and found.code not in self.allowed:
            self._emit(found, origin)

    def _emit(self, found: _Candidate, origin: Origin | None) -> None:
        # Inside a loop walk, findings wait until the walk proves to be the stable one.
        if self.buffers:
            self.buffers[-1].append((found, origin))
        elif origin is not None:
            self.candidates.setdefault(origin, found)
        elif found.needs is not None:
            self.pending.append(found)
        elif self.reporter is not None:
            self.reporter.add(
                found.code,
                found.node,
                found.message,
                found.fix,
                tuple(self.reporter.related(line, text) for line, text in found.related),
            )

    # ----------------------------------------------------------------- control flow

    def block(self, stmts: list[ast.stmt], state: State | None) -> State | None:
        for stmt in stmts:
            if state is None:
                return None
            state = self.stmt(stmt, state)
        return state

    def leave(self, kind: str, state: State, line: int) -> None:
        """Route a return/break/continue outwards through with-exits and finally bodies."""
        for frame in reversed(self.frames):
            if isinstance(frame, _WithExit):
                state = self._with_exit(frame, state.copy())
            elif isinstance(frame, _Finally):
                frame.pending.setdefault(kind, []).append((state, line))
                return
            elif kind != "return":
                (frame.breaks if kind == "break" else frame.continues).append(state)
                return
        if kind == "return":
            self.exits.append((state, line))

    def stmt(self, node: ast.stmt, state: State) -> State | None:
        if isinstance(node, ast.Expr):
            self.expr(node.value, state, discarded=True)
            return state
        if isinstance(node, ast.Assign):
            self.assign(node, node.targets, node.value, state)
            return state
        if isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.assign(node, [node.target], node.value, state)
            return state
        if isinstance(node, ast.AugAssign):
            self.aug_assign(node, state)
            return state
        if isinstance(node, ast.If):
            self.expr(node.test, state)
            self.guards.append(node.test)
            try:
                taken = self.block(node.body, state.copy())
            finally:
                self.guards.pop()
            return join(taken, self.block(node.orelse, self._test_false(node.test, state)))
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            return self.loop(node, state)
        if isinstance(node, (ast.With, ast.AsyncWith)):
            return self.with_(node, state)
        if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            # `try`/`except*` (3.11) has the same fields as `try`.
            return self.try_(cast(ast.Try, node), state)
        if isinstance(node, ast.Return):
            if node.value is not None:
                self._reach(self.expr(node.value, state))
            self.leave("return", state, node.lineno)
            return None
        if isinstance(node, ast.Break):
            self.leave("break", state, node.lineno)
            return None
        if isinstance(node, ast.Continue):
            self.leave("continue", state, node.lineno)
            return None
        if isinstance(node, ast.Raise):
            if node.exc is not None:
                self.expr(node.exc, state)
            return None
        if isinstance(node, ast.Match):
            self.expr(node.subject, state)
            outs = [self.block(case.body, state.copy()) for case in node.cases]
            return join_all([*outs, state])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self._kill(node.name, state)
            return state
        if isinstance(node, ast.Delete):
            for target in node.targets:
                key = receiver_key(target)
                if key is not None:
                    self._kill(key, state)
            return state
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child, state)
        return state

    def loop(self, node: ast.For | ast.AsyncFor | ast.While, state: State) -> State | None:
        forever = (
            isinstance(node, ast.While)
            and isinstance(node.test, ast.Constant)
            and bool(node.test.value)
        )
        iterated = _EMPTY if isinstance(node, ast.While) else self.expr(node.iter, state)
        entry = state
        self.in_loop += 1
        stable: list[tuple[_Candidate, Origin | None]] = []
        for _ in range(_MAX_LOOP_WALKS):
            frame = _Loop()
            self.buffers.append([])
            end = self._loop_body(node, entry.copy(), frame, iterated)
            found = self.buffers.pop()
            widened = join(entry, join_all([end, *frame.continues]))
            assert widened is not None
            if widened == entry:
                stable = found
                break
            entry = widened
        # A loop that did not settle reports nothing: what it would say might not hold.
        for item in stable:
            self._emit(*item)
        self.in_loop -= 1
        final = entry
        done: State | None = None if forever else final
        through_body = join_all([end, *frame.continues])
        if done is not None and through_body is not None and not isinstance(node, ast.While):
            # A for loop with a backward in its body is taken to run at least once: the
            # zero-iteration path would make every accumulation loop a GG107.
            done = done.copy()
            done.zero = through_body.zero
        if node.orelse and done is not None:
            done = self.block(node.orelse, done)
        return join_all([done, *frame.breaks])

    def _loop_body(
        self,
        node: ast.For | ast.AsyncFor | ast.While,
        state: State,
        frame: _Loop,
        iterated: frozenset[Origin],
    ) -> State | None:
        self.frames.append(frame)
        try:
            if isinstance(node, ast.While):
                self.expr(node.test, state)
            else:
                self._bind_iteration(node.target, node.iter, iterated, state)
            return self.block(node.body, state)
        finally:
            self.frames.pop()

    def try_(self, node: ast.Try, state: State) -> State | None:
        frame = _Finally() if node.finalbody else None
        if frame is not None:
            self.frames.append(frame)
        entry = state.copy()
        body_end = self.block(node.body, state)
        raised = join(entry, body_end)
        assert raised is not None
        outs: list[State | None] = []
        for handler in node.handlers:
            outs.append(self.block(handler.body, raised.copy()))
        normal = self.block(node.orelse, body_end) if body_end is not None else None
        outs.append(normal)
        if frame is None:
            return join_all(outs)
        self.frames.pop()
        # The exceptional path runs the finally too; its findings count, its end does not.
        exceptional = join_all([raised, *outs])
        if exceptional is not None:
            self.block(node.finalbody, exceptional.copy())
        for kind, pending in frame.pending.items():
            joined = join_all([s for s, _ in pending])
            if joined is None:
                continue
            after = self.block(node.finalbody, joined)
            if after is not None:
                self.leave(kind, after, pending[-1][1])
        merged = join_all(outs)
        return self.block(node.finalbody, merged) if merged is not None else None

    def with_(self, node: ast.With | ast.AsyncWith, state: State) -> State | None:
        exit_frame = _WithExit(None, {})
        allowed_before = set(self.allowed)
        pushed_offblock = False
        for item in node.items:
            change = self._with_item(item, state, exit_frame)
            if change and not pushed_offblock and all_kind(state.grad, "off"):
                self.offblock_backward.append(contains_backward(node.body))
                pushed_offblock = True
        self.frames.append(exit_frame)
        try:
            end = self.block(node.body, state)
        finally:
            self.frames.pop()
            self.allowed = allowed_before
            if pushed_offblock:
                self.offblock_backward.pop()
        if end is None:
            return None
        return self._with_exit(exit_frame, end)

    def _with_exit(self, frame: _WithExit, state: State) -> State:
        if frame.grad is not None:
            state.grad = frame.grad
        for key, facts in frame.modes.items():
            self._set_mode_facts(state, key, facts, restore=True)
        return state

    def _with_item(self, item: ast.withitem, state: State, frame: _WithExit) -> bool:
        """Apply one ``with`` item; True when it changed the grad mode."""
        expr = item.context_expr
        found = grad_mode_call(self.aliases, expr)
        line = expr.lineno
        if found is not None and found[1] is not None:
            spelled = f"`{snippet(expr)}`"
            member, call = found
            new: frozenset[Fact] | None
            if member in ("no_grad", "inference_mode"):
                enabled = literal_bool(call, "mode", True)
                if member == "inference_mode" and enabled is False:
                    new = None
                elif member == "inference_mode" and enabled is None:
                    new = frozenset({("unknown", line, spelled, "with")})
                else:
                    new = frozenset({("off", line, spelled, "with")})
            elif member == "enable_grad":
                new = frozenset({("on", line, spelled, "with")})
            else:
                value = literal_bool(call, "mode", None)
                kind = "unknown" if value is None else ("on" if value else "off")
                new = frozenset({(kind, line, spelled, "with")})
            if new is None:  # inference_mode(False): the grad mode is left as it is
                return False
            if frame.grad is None:
                frame.grad = state.grad
            state.grad = new
            return True
        if isinstance(expr, ast.Call):
            qualified = self.aliases.qualify(expr.func)
            if qualified == "gradguard.allow":
                self.allowed.update(self._allow_codes(expr))
                return False
            if qualified == "gradguard.evaluating":
                spelled = f"`{snippet(expr)}`"
                if frame.grad is None:
                    frame.grad = state.grad
                state.grad = frozenset({("off", line, spelled, "with")})
                for arg in expr.args:
                    key = receiver_key(arg)
                    if key is not None:
                        frame.modes.setdefault(key, state.modes.get(key))
                        if self.records:
                            frame.modes.setdefault(touched(key), state.modes.get(touched(key)))
                        self._set_mode(state, key, ("eval", line, spelled, "scope"))
                return True
        taint = self.expr(expr, state)
        if item.optional_vars is not None:
            self.bind(item.optional_vars, taint, _OTHER, state)
        return False

    def _allow_codes(self, call: ast.Call) -> set[str]:
        names = [a.value for a in call.args if isinstance(a, ast.Constant)]
        if not call.args:
            return set(_ALL_ALLOWED)
        codes: set[str] = set()
        for name in names:
            codes.update(_ALLOW.get(str(name), ()))
        return codes

    # ----------------------------------------------------------------- modes

    def _kill(self, key: str, state: State) -> None:
        prefix = key + "."
        for mapping in (state.modes, state.built):
            for existing in [k for k in mapping if k == key or k.startswith(prefix)]:
                del mapping[existing]
        if self.records and self._entry_receiver(key):
            self._touch(state, key)  # another object now: not the one handed over
        state.taint.pop(key, None)
        state.off.pop(key, None)
        state.snaps.pop(key, None)
        state.optparams.pop(key, None)

    def _trackable(self, key: str | None) -> bool:
        return key is not None and key.split(".", 1)[0] not in self.loop_vars

    def _set_mode(self, state: State, key: str, fact: Fact) -> None:
        self._set_mode_facts(state, key, frozenset({fact}))

    def _touch(self, state: State, key: str) -> None:
        """On this path the receiver's mode is no longer the one it had at the entry."""
        state.modes[touched(key)] = frozenset({CHANGED})

    def _touch_unfollowed(self, node: ast.Call, key: str | None, state: State) -> None:
        """A ``train()``/``eval()`` whose model this pass cannot name sets the entry modes.

        On a local that is not a receiver handed in (``for part in (model,): part.train()``) it
        may be one of them; called unbound (``nn.Module.train(model)``), its argument is the
        model. Either way the mode at a later step is not the one given at the entry.
        """
        if key is not None and self._entry_receiver(key) and not node.args:
            return
        if key is None or not self._entry_receiver(key):
            for param in self.params:
                self._touch(state, param)
            self._touch(state, GLOBALS)
        for arg in node.args:
            given = receiver_key(arg)
            if given is not None and self._entry_receiver(given):
                self._touch(state, given)

    def _entry_receiver(self, key: str) -> bool:
        """Whether a receiver may be one this function was handed (a parameter or a global)."""
        root = key.split(".", 1)[0]
        return root in self.params or root not in self.locals or root in self.globals

    def _set_mode_facts(
        self, state: State, key: str, facts: frozenset[Fact] | None, *, restore: bool = False
    ) -> None:
        # train()/eval() recurse: every tracked submodule follows its parent.
        prefix = key + "."
        for existing in [k for k in state.modes if k == key or k.startswith(prefix)]:
            del state.modes[existing]
        if facts is not None and any(fact[0] != "unknown" for fact in facts):
            state.modes[key] = facts
        if self.records and not restore and not key.startswith(TOUCHED):
            self._touch(state, key)

    def mode_call(self, node: ast.Call, key: str | None, attr: str, state: State) -> None:
        if self.records:
            self._touch_unfollowed(node, key, state)
        arity = len(node.args) + len(node.keywords)
        if (attr == "eval" and arity) or arity > 1:
            return  # not nn.Module's eval()/train(mode): a class's own method of that name
        if key is not None and _CONSTRUCTOR.match(key.split(".", 1)[0]):
            return  # called on a class, not on a module
        if attr == "train":
            self._check_snapshot(node, key, state)
        if not self._trackable(key):
            return
        assert key is not None
        if attr == "eval":
            mode: str | None = "eval"
        else:
            value = literal_bool(node, "mode", True)
            mode = None if value is None else ("train" if value else "eval")
        if mode is None:
            self._set_mode_facts(state, key, None)
            return
        # train() while gradients are already off is deliberate (BatchNorm recalibration,
        # Monte-Carlo dropout): GG101 is about a training mode left over from before.
        how = "call-nograd" if all_kind(state.grad, "off") else "call"
        self._set_mode(state, key, (mode, node.lineno, f"`{snippet(node)}`", how))

    def _check_snapshot(self, node: ast.Call, key: str | None, state: State) -> None:
        if (
            self.function is not None
            and self.function.name == "train"
            and self.index.class_of.get(id(self.function))
        ):
            return
        arg: ast.expr | None = node.args[0] if node.args else None
        for kw in node.keywords:
            if kw.arg == "mode":
                arg = kw.value
        if arg is None:
            return
        source: Fact | None = None
        if isinstance(arg, ast.Name) and arg.id in state.snaps:
            source = state.snaps[arg.id]
        elif (
            isinstance(arg, ast.Attribute)
            and arg.attr == "training"
            and key is not None
            and receiver_key(arg.value) == key
        ):
            # Only its own flag: `child.train(parent.training)` syncs a child to its parent.
            source = ("snap", node.lineno, f"`{snippet(arg)}`", "")
        if source is None:
            return
        receiver = key or snippet(node.func)
        message, fix = msg.train_restores_snapshot(snippet(node), receiver, source)
        self.report("GG109", node, message, fix, [(source[1], f"{source[2]} read here")])

    # ----------------------------------------------------------------- assignments

    def bind(
        self,
        target: ast.expr,
        taint: frozenset[Origin],
        off: frozenset[Fact],
        state: State,
    ) -> None:
        if isinstance(target, ast.Name):
            self._kill(target.id, state)
            if taint:
                state.taint[target.id] = taint
            if off and not any(fact[0] != "off" for fact in off):
                state.off[target.id] = off
            return
        if isinstance(target, (ast.Tuple, ast.List)):
            # `out, seconds = model(x)`: some element carries the graph, not known which.
            weak = frozenset(_weak(origin) for origin in taint)
            for element in target.elts:
                self.bind(element, weak, off, state)
            return
        if isinstance(target, ast.Starred):
            self.bind(target.value, taint, off, state)
            return
        if isinstance(target, ast.Attribute):
            if _is_gradient(target.attr):
                state.zero = frozenset({("backward", target.lineno, "", "")})
            key = receiver_key(target)
            if key is not None:
                self._kill(key, state)
            # A graph stored on an object escapes this function's view.
            self._reach(taint)
            return
        if isinstance(target, ast.Subscript):
            self.expr(target.slice, state)
            if isinstance(target.value, ast.Name) and target.value.id not in self.params:
                name = target.value.id
                if taint:
                    state.taint[name] = state.taint.get(name, _EMPTY) | taint
            else:
                if isinstance(target.value, ast.Attribute) and _is_gradient(target.value.attr):
                    state.zero = frozenset({("backward", target.lineno, "", "")})
                self._reach(taint)

    def _bind_iteration(
        self, target: ast.expr, iterable: ast.expr, taint: frozenset[Origin], state: State
    ) -> None:
        """A loop target: ``enumerate``'s index and ``.items()``'s key carry no graph."""
        if (
            isinstance(target, ast.Tuple)
            and len(target.elts) == 2
            and isinstance(iterable, ast.Call)
            and _callee_name(iterable.func) in ("enumerate", "items")
        ):
            self.bind(target.elts[0], _EMPTY, _OTHER, state)
            self.bind(target.elts[1], taint, _OTHER, state)
            return
        self.bind(target, taint, _OTHER, state)

    def assign(
        self, node: ast.stmt, targets: list[ast.expr], value: ast.expr, state: State
    ) -> None:
        self.parameters_of = None
        taint = self.expr(value, state)
        off = self.offness(value, state)
        for target in targets:
            key = receiver_key(target) if isinstance(target, (ast.Name, ast.Attribute)) else None
            # `model = model.to(device)` is still the model handed over, in its mode.
            same = self.records and key is not None and receiver_key(strip_chain(value)) == key
            mark = touched(key) if same and key is not None else ""
            kept = state.modes.get(mark)
            self.bind(target, taint, off, state)
            if same:
                self._set_mode_facts(state, mark, kept, restore=True)
            if key is None or not self._trackable(key):
                continue
            self._assigned_receiver(node, key, value, state)

    def _assigned_receiver(self, node: ast.stmt, key: str, value: ast.expr, state: State) -> None:
        if isinstance(value, ast.Attribute) and value.attr == "training":
            state.snaps[key] = ("snap", node.lineno, f"`{snippet(value)}`", "")
            return
        if self.parameters_of is not None:
            state.optparams[key] = self.parameters_of
        core = strip_chain(value)
        source = receiver_key(core) if not isinstance(core, ast.Call) else None
        if source is not None and source in state.modes:
            state.modes[key] = state.modes[source]
            return
        if isinstance(core, ast.Call):
            built = self._constructs(core)
            if built is None:
                return
            fact: Fact = ("train", node.lineno, f"`{snippet(core)}`", "built")
            if built == "module":
                state.modes[key] = frozenset({fact})
            else:
                state.built[key] = fact

    def _constructs(self, call: ast.Call) -> str | None:
        """'module' for a new mode-sensitive module, 'maybe' for an imported class, else None."""
        func = call.func
        qualified = self.aliases.qualify(func)
        if qualified is None:
            return None
        last = qualified.rsplit(".", 1)[-1]
        if isinstance(func, ast.Name) and func.id in self.index.local_classes:
            return "module" if self.index.is_sensitive(func.id) else None
        if qualified.startswith("torch.nn."):
            return "module" if mentions_mode_sensitive(call, self.index) else None
        if qualified.startswith("torchvision.models."):
            return "module"
        if qualified.startswith("torch."):
            return None
        if _CONSTRUCTOR.match(last) and not _NOT_MODULE_CLASS.search(last):
            return "maybe"
        return None

    def aug_assign(self, node: ast.AugAssign, state: State) -> None:
        taint = self.expr(node.value, state)
        target = node.target
        if isinstance(target, ast.Name):
            name = target.id
            mine = state.taint.get(name, _EMPTY)
            if taint and isinstance(node.op, ast.Add):
                taint = taint | self._accumulate(node, name, taint)
            state.off.pop(name, None)
            state.snaps.pop(name, None)
            if mine or taint:
                state.taint[name] = mine | taint
            return
        if isinstance(target, ast.Attribute) and _is_gradient(target.attr):
            state.zero = frozenset({("backward", node.lineno, "", "")})
        if isinstance(target, ast.Subscript):
            self.expr(target.slice, state)
        self._reach(taint)

    def _accumulate(
        self, node: ast.stmt | ast.expr, name: str, taint: frozenset[Origin]
    ) -> frozenset[Origin]:
        """GG106: a graph-carrying value added to a local accumulator inside a loop."""
        if not self.in_loop or name in self.params or name in self.globals:
            return _EMPTY
        if all(kind.startswith("weak") for kind, _, _ in taint):
            return _EMPTY  # only an element of an unpacked result: maybe the graph, maybe a float
        origin: Origin = ("acc", node.lineno, node.col_offset)
        if self.reporter is not None:
            strong = sorted(
                (kind[4:] if kind.startswith("weak") else kind, line, column)
                for kind, line, column in taint
            )
            source = min((o for o in strong if o[0] == "fwd"), default=strong[0])
            forward = self.forward_nodes.get(source)
            described = f"`{snippet(forward, 40)}`" if forward is not None else "a forward"
            message, fix = msg.graph_accumulated(snippet(node), name, described, source[1])
            self.candidate(
                origin,
                _Candidate("GG106", node, message, fix, ((source[1], f"{described} here"),)),
            )
        return frozenset({origin})

    # ----------------------------------------------------------------- expressions

    def offness(self, value: ast.expr, state: State) -> frozenset[Fact]:
        """Facts "off" when ``value`` is computed with gradients disabled on every path."""
        if all_kind(state.grad, "off"):
            # Reading tensors that exist (``p.grad``) under no_grad keeps their graphs.
            return state.grad if _computes(value) else _OTHER
        if not state.off:
            return _OTHER
        names = _loaded_names(value)
        if not names:
            return _OTHER
        out: frozenset[Fact] = frozenset()
        for name in names:
            facts = state.off.get(name)
            if facts is None or state.taint.get(name):
                return _OTHER
            out |= facts
        return _OTHER if _asks_for_grad(value) else out

    def expr(self, node: ast.expr, state: State, *, discarded: bool = False) -> frozenset[Origin]:
        if isinstance(node, ast.Call):
            return self.call(node, state, discarded=discarded)
        if isinstance(node, ast.Name):
            return state.taint.get(node.id, _EMPTY)
        if isinstance(node, ast.Constant):
            return _EMPTY
        if isinstance(node, ast.Attribute):
            inner = self.expr(node.value, state)
            return _EMPTY if node.attr in _NO_GRAPH_ATTRIBUTES else inner
        if isinstance(node, ast.Compare):
            self.expr(node.left, state)
            for comparator in node.comparators:
                self.expr(comparator, state)
            return _EMPTY
        if isinstance(node, ast.Lambda):
            return _EMPTY
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            if node.value is not None:
                self._reach(self.expr(node.value, state))
            return _EMPTY
        if isinstance(node, ast.NamedExpr):
            taint = self.expr(node.value, state)
            self.bind(node.target, taint, self.offness(node.value, state), state)
            return taint
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for generator in node.generators:
                iterated = self.expr(generator.iter, state)
                self._bind_iteration(generator.target, generator.iter, iterated, state)
                for condition in generator.ifs:
                    self.expr(condition, state)
            if isinstance(node, ast.DictComp):
                return self.expr(node.key, state) | self.expr(node.value, state)
            return self.expr(node.elt, state)
        if isinstance(node, ast.JoinedStr):
            for value in node.values:
                self.expr(value, state)
            return _EMPTY
        out = _EMPTY
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                out = out | self.expr(child, state)
            elif isinstance(child, ast.keyword):
                out = out | self.expr(child.value, state)
        return out

    def _module_like(self, key: str | None, state: State) -> bool:
        if key is None:
            return False
        if key in state.modes:
            return True
        if key == "self":
            owner = self.index.class_of.get(id(self.function)) if self.function else None
            return owner is not None and owner.name in self.index.module_classes
        last = key.rsplit(".", 1)[-1]
        if last in self.index.local_classes or _CONSTRUCTOR.match(last):
            return False  # a class: calling it builds a module, it does not run one
        if "." not in key and (
            key in self.aliases.names or key in self.index.functions or key in self.nested
        ):
            return False  # an imported or defined function (create_model): not a module's forward
        if not self.index.uses_torch:
            return False  # a name alone says "model" only in code that uses torch
        lower = last.lower()
        if _NOT_MODEL_WORDS.search(lower) or _VERB.match(lower):
            return False
        return any(
            word in _MODEL_WORDS or (len(word) > 3 and word.endswith("net"))
            for word in _words(last)
        )

    def call(self, node: ast.Call, state: State, *, discarded: bool = False) -> frozenset[Origin]:
        func = node.func
        found = grad_mode_call(self.aliases, node)
        if found is not None:
            member, call = found
            if member == "set_grad_enabled" and discarded:
                self._set_grad_statement(node, call, state)
            return _EMPTY
        args = _EMPTY
        for arg in node.args:
            args = args | self.expr(arg, state)
        for kw in node.keywords:
            args = args | self.expr(kw.value, state)
        if isinstance(func, ast.Attribute):
            return self._method_call(node, func, args, state, discarded)
        qualified = self.aliases.qualify(func)
        torch_name = torch_member(qualified)
        if qualified in _AUTOGRAD_BACKWARD:
            self.backward(node, node.args[0] if node.args else None, args, state)
            return _EMPTY
        if isinstance(func, ast.Name) and "backward" in func.id:
            # Some helper named for a backward: it may do one (GG107), not known to (GG105).
            self.backward(node, None, args, state)
            return _EMPTY
        if isinstance(func, ast.Name) and func.id in _NO_GRAPH_FUNCTIONS:
            return _EMPTY
        if torch_name in _NO_GRAPH_TORCH:
            return _EMPTY
        target = self._resolve(func)
        if target is not None:
            return self._local_call(node, target, args, state)
        key = receiver_key(func) if isinstance(func, ast.Name) else None
        if key is not None and self._module_like(key, state):
            return self.forward(node, key, args, state)
        if torch_name is None and qualified not in _MODE_SAFE_CALLS:
            self._forget_arguments(node, state)
        if discarded and args and torch_name is None:
            self._escape(args, state)
        return args

    def _forget_arguments(self, node: ast.Call, state: State) -> None:
        """A model handed to code this pass cannot see may come back in any mode."""
        if not state.modes and not self.records:
            return
        for arg in (*node.args, *(kw.value for kw in node.keywords)):
            key = receiver_key(strip_chain(arg.value if isinstance(arg, ast.Starred) else arg))
            if key is not None and (
                key in state.modes
                or any(k.startswith(key + ".") for k in state.modes)
                or (self.records and self._entry_receiver(key))
            ):
                self._set_mode_facts(state, key, None)

    def _method_call(
        self,
        node: ast.Call,
        func: ast.Attribute,
        args: frozenset[Origin],
        state: State,
        discarded: bool,
    ) -> frozenset[Origin]:
        attr = func.attr
        called_key = receiver_key(func)
        qualified = self.aliases.qualify(func)
        if qualified in _AUTOGRAD_BACKWARD:
            self.backward(node, node.args[0] if node.args else None, args, state)
            return _EMPTY
        if torch_member(qualified) in _NO_GRAPH_TORCH:
            return _EMPTY
        if (
            attr not in ("train", "eval", "forward")
            and called_key is not None
            and (called_key in state.modes or called_key in state.built)
        ):
            return self.forward(node, called_key, args, state)
        receiver = self.expr(func.value, state)
        key = receiver_key(func.value)
        if attr in ("train", "eval"):
            self.mode_call(node, key, attr, state)
            return _EMPTY
        if attr == "backward":
            self.backward(node, func.value, receiver | args, state)
            return _EMPTY
        if "backward" in attr:
            self.backward(node, None, args, state)
            return _EMPTY
        if attr == "zero_grad":
            state.zero = frozenset({("zeroed", node.lineno, f"`{snippet(node)}`", key or "")})
            return _EMPTY
        if attr == "step":
            self.step(node, key, state)
            return _EMPTY
        if attr == "load_state_dict" and key is not None and key in state.built:
            state.modes[key] = frozenset({state.built.pop(key)})
            return _EMPTY
        if attr in ("parameters", "named_parameters") and key is not None:
            self.parameters_of = key
        if attr in _NO_GRAPH_METHODS:
            return _EMPTY
        if attr in _CONTAINER_ADD and isinstance(func.value, ast.Name):
            name = func.value.id
            if name in self.params or name in self.globals:
                self._reach(args)
                return _EMPTY
            if args and attr in ("append", "appendleft", "insert"):
                args = args | self._accumulate(node, name, args)
            if args:
                state.taint[name] = state.taint.get(name, _EMPTY) | args
            return _EMPTY
        target = self._resolve(func)
        if target is not None:
            return self._local_call(node, target, args, state)
        if attr == "forward" and self._module_like(key, state):
            assert key is not None
            return self.forward(node, key, args, state)
        if called_key is not None and self._module_like(called_key, state):
            return self.forward(node, called_key, args | receiver, state)
        if qualified is None or not qualified.startswith("torch."):
            self._forget_arguments(node, state)
            if (
                key is not None
                and (key in state.modes or (self.records and self._entry_receiver(key)))
                and _CHANGES_MODE.search(attr)
            ):
                self._set_mode_facts(state, key, None)
        if discarded and args:
            self._escape(args, state)
        return receiver | args

    def _reach(self, taint: frozenset[Origin]) -> None:
        """These graphs may reach a backward (an unpacked element stands for its whole result)."""
        for kind, line, column in taint:
            self.reached.add(
                (kind[4:], line, column) if kind.startswith("weak") else (kind, line, column)
            )

    def _resolve(self, func: ast.expr) -> Function | None:
        if isinstance(func, ast.Name) and func.id in self.nested and self.function is not None:
            return self.nested[func.id]
        return self.index.resolve_call(func, self.function)

    def _escape(self, taint: frozenset[Origin], state: State) -> None:
        """A graph handed to code this pass cannot see may reach a backward there."""
        self._reach(taint)
        state.zero = state.zero | {("backward", 0, "", "escape")}

    def _set_grad_statement(self, node: ast.Call, call: ast.Call | None, state: State) -> None:
        value = literal_bool(call, "mode", None)
        spelled = f"`{snippet(node)}`"
        # A switch made under `if flag:` remembers the flag: a later `if flag:` that switches back
        # is then seen to undo it (the pattern of optional no-grad sections).
        how = "stmt" if not self.guards else "stmt|" + ast.unparse(self.guards[-1])
        if value is None:
            state.grad = frozenset({("unknown", node.lineno, spelled, how)})
        elif value:
            state.grad = frozenset({("on", node.lineno, spelled, how)})
        else:
            self.grad_off_lines[node.lineno] = node
            state.grad = frozenset({("off", node.lineno, spelled, how)})

    def _test_false(self, test: ast.expr, state: State) -> State:
        """The state on the path where ``test`` is false: switches made under it did not happen."""
        guarded = [fact for fact in state.grad if "|" in fact[3]]
        if not guarded:
            return state
        text = "stmt|" + ast.unparse(test)
        kept = frozenset(fact for fact in state.grad if fact[3] != text)
        if kept == state.grad:
            return state
        state.grad = kept or frozenset({UNKNOWN})
        return state

    def _local_call(
        self, node: ast.Call, target: Function, args: frozenset[Origin], state: State
    ) -> frozenset[Origin]:
        self.call_grads.append((target, state.grad))
        if self.records:
            bound = self._bind_arguments(node, target, params_of(self.index, target))
            self.call_sites[id(node)] = CallSite(target, bound, dict(state.modes))
            if may_switch_modes(self.index, target):
                # Its own summary is not known yet: what it is given may leave in any mode.
                closure = target in self.nested.values()
                for key in (*bound.values(), *(self.params if closure else ())):
                    if self._entry_receiver(key):
                        self._touch(state, key)
                self._touch(state, GLOBALS)
        summary = self.index.summaries.get(id(target)) if self.use_summaries else None
        if summary is None:
            return args
        if self.reporter is not None and "GG103" not in self.allowed:
            self._check_helper_step(node, target, summary, state)
        if summary.does_backward:
            self._reach(args)
            state.zero = frozenset({("backward", node.lineno, "", "call")})
        bound = self._bind_arguments(node, target, summary.params)
        spelled = snippet(node)
        for (param, suffix), facts in summary.modes.items():
            base = bound.get(param) if param else suffix
            if base is None or not self._trackable(base):
                continue
            key = base + suffix if param else base
            current = state.modes.get(key, frozenset({UNKNOWN}))
            mapped: set[Fact] = set()
            for fact in facts:
                if fact[0] == "unknown":
                    mapped.update(current)
                else:
                    mapped.add(
                        (
                            fact[0],
                            node.lineno,
                            f"`{spelled}` (which calls {fact[2]} at line {fact[1]})",
                            "summary",
                        )
                    )
            self._set_mode_facts(state, key, frozenset(mapped))
        return args

    def _bind_arguments(
        self, node: ast.Call, target: Function, names: tuple[str, ...]
    ) -> dict[str, str]:
        params = list(names)
        bound: dict[str, str] = {}
        method = self.index.class_of.get(id(target)) is not None
        if method and isinstance(node.func, ast.Attribute) and params:
            bound[params[0]] = "self"
            params = params[1:]
        for param, arg in zip(params, node.args):
            if isinstance(arg, ast.Starred):
                break
            key = receiver_key(arg)
            if key is not None:
                bound[param] = key
        for kw in node.keywords:
            if kw.arg is not None:
                key = receiver_key(kw.value)
                if key is not None:
                    bound[kw.arg] = key
        return bound

    def _check_helper_step(
        self, node: ast.Call, target: Function, summary: Summary, state: State
    ) -> None:
        """GG103 at a call of a helper that steps a model handed over while it may be in eval."""
        someone_trains = {
            key for key, facts in state.modes.items() if any(f[0] == "train" for f in facts)
        }
        bound = self._bind_arguments(node, target, summary.params)
        search = StepSearch(self.index)
        for key, facts in sorted(state.modes.items()):
            fact = first(facts, "eval")
            if fact is None:
                continue
            inner = into_callee(self.index, target, bound, key)
            reached = search.find(target, inner) if inner is not None else None
            if reached is None:
                continue
            owns = reached.owns
            if not owns:
                optimizer = out_of_callee(bound, summary.params, reached.optimizer)
                linked = state.optparams.get(optimizer) if optimizer is not None else None
                if linked is not None and not _within(linked, key):
                    continue  # it steps another model's parameters
                owns = linked is not None
            if not owns and someone_trains - {key}:
                continue
            if not (owns or key in self.trained or any(f[3] == "summary" for f in facts)):
                continue  # not shown to be the model trained here (a teacher, a target network)
            site = reached.site
            message, fix = msg.step_in_eval_through(
                snippet(node), key, fact, reached.function, site.spelled, site.line
            )
            related = [
                (fact[1], f"{fact[2]} here"),
                (site.line, f"`{site.spelled}` in `{reached.function}` here"),
            ]
            self.report("GG103", node, message, fix, related)
            return

    # ----------------------------------------------------------------- rule sites

    def forward(
        self, node: ast.Call, key: str, args: frozenset[Origin], state: State
    ) -> frozenset[Origin]:
        facts = state.modes.get(key)
        grad = state.grad
        if (
            facts is not None
            and all_kind(facts, "train")
            and not any(fact[3] == "call-nograd" for fact in facts)
            and all_kind(grad, "off")
            and not (self.offblock_backward and self.offblock_backward[-1])
        ):
            mode_fact = first(facts, "train")
            grad_fact = first(grad, "off")
            assert mode_fact is not None
            assert grad_fact is not None
            message, fix = msg.train_forward_without_grad(key, mode_fact, grad_fact)
            self.report(
                "GG101",
                node,
                message,
                fix,
                [(mode_fact[1], f"{mode_fact[2]} here"), (grad_fact[1], f"{grad_fact[2]} here")],
            )
        if not any(fact[0] in ("on", "unknown") for fact in grad):
            return _EMPTY
        origin: Origin = ("fwd", node.lineno, node.col_offset)
        self.forward_nodes.setdefault(origin, node)
        self.forward_keys[origin] = key
        if self.reporter is not None and facts is not None and all_kind(facts, "eval"):
            mode_fact = first(facts, "eval")
            assert mode_fact is not None
            message, fix = msg.eval_forward_with_grad(key, mode_fact)
            self.candidate(
                origin,
                _Candidate("GG102", node, message, fix, ((mode_fact[1], f"{mode_fact[2]} here"),)),
            )
        return args | {origin}

    def backward(
        self, node: ast.Call, value: ast.expr | None, taint: frozenset[Origin], state: State
    ) -> None:
        self._reach(taint)
        self.does_backward = True
        if value is not None:
            root: ast.expr = value
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if isinstance(root, ast.Name):
                stored = state.off.get(root.id)
                off = _OTHER if stored is None or state.taint.get(root.id) else stored
            else:
                off = self.offness(value, state)
            if all_kind(off, "off"):
                fact = first(off, "off")
                assert fact is not None
                message, fix = msg.backward_without_grad(snippet(node), snippet(value), fact)
                self.report("GG105", node, message, fix, [(fact[1], f"{fact[2]} here")])
        state.zero = frozenset({("backward", node.lineno, "", "")})

    def _optimizer(self, key: str | None, state: State) -> bool:
        if key is None:
            return False
        if key in state.optparams:
            return True
        last = key.rsplit(".", 1)[-1].lower()
        return bool(_OPTIMIZER_WORDS.search(last)) and not _NOT_OPTIMIZER_WORDS.search(last)

    def step(self, node: ast.Call, key: str | None, state: State) -> None:
        optimizer = key
        closure = bool(node.args or node.keywords)
        if key is not None and "scaler" in key.rsplit(".", 1)[-1].lower() and node.args:
            optimizer = receiver_key(node.args[0])
            closure = len(node.args) > 1
        elif not self._optimizer(key, state):
            return
        if optimizer is None or not self._trackable(optimizer):
            return  # `for opt in optimizers: opt.step()`: a different optimizer each time
        self._check_step_in_eval(node, optimizer, state)
        if self.records:
            self.step_sites[id(node)] = StepSite(
                node.lineno,
                snippet(node),
                optimizer,
                state.optparams.get(optimizer),
                dict(state.modes),
            )
        if not closure:
            # Another optimizer's zero_grad() says nothing about this one; a model's does.
            zeroed = first(
                frozenset(
                    f for f in state.zero if f[3] == optimizer or not self._optimizer(f[3], state)
                ),
                "zeroed",
            )
            if zeroed is not None:
                message, fix = msg.step_without_backward(snippet(node), optimizer, zeroed)
                self.report("GG107", node, message, fix, [(zeroed[1], f"{zeroed[2]} here")])

    def _check_step_in_eval(self, node: ast.Call, optimizer: str, state: State) -> None:
        linked = state.optparams.get(optimizer)
        someone_trains = {
            key for key, facts in state.modes.items() if any(f[0] == "train" for f in facts)
        }
        for key, facts in sorted(state.modes.items()):
            fact = first(facts, "eval")
            if fact is None:
                continue
            owns = linked is not None and (linked == key or linked.startswith(key + "."))
            if not owns and someone_trains - {key}:
                continue
            message, fix = msg.step_in_eval(snippet(node), key, fact)
            related = ((fact[1], f"{fact[2]} here"),)
            if owns or key in self.trained or any(f[3] == "summary" for f in facts):
                self.report("GG103", node, message, fix, list(related))
            elif self.reporter is not None and "GG103" not in self.allowed:
                # Is it the model being trained, or a teacher? Its forward reaching a backward
                # in this function (seen only at the end) says it is trained here.
                self._emit(_Candidate("GG103", node, message, fix, related, needs=key), None)
            return


def run_flow(
    index: ModuleIndex, scope: Function | ast.Module, reporter: Reporter | None, *, summaries: bool
) -> FunctionFlow:
    flow = FunctionFlow(index, scope, reporter, summaries=summaries)
    flow.run()
    return flow
