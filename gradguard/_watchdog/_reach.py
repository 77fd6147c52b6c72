"""Which models the watchdog sees, and the per-class ``__call__`` that checks their forwards.

At the default level no global forward hook is installed: a model is noted when the program
touches it (``train()``, ``eval()``, ``to()``, ... through :func:`noting`; an optimizer step; a
gradguard scope), and each noted model's class gets the checking ``__call__`` below.
Parameter and submodule owners are learnt from PyTorch's registration hooks, which run while
models are built, never on forward. ``deep=True`` adds :func:`deep_call` as ``nn.Module.__call__``.
"""

from __future__ import annotations

import functools
import multiprocessing.util
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from types import MethodType
from typing import Any, NamedTuple

import torch
from torch import nn

from gradguard import _findings, _layers
from gradguard._watchdog import _graphs
from gradguard._watchdog._common import (
    WRAPPERS,
    compiler,
    fail_open,
    is_dynamo_compiling,
    local,
    lock,
    status,
    wrapped_in_eval,
)
from gradguard._watchdog._train_mode import check_train_without_grad


class _Model:
    """A model the watchdog has seen, held by weak reference only."""

    __slots__ = ("__weakref__", "ref")

    def __init__(self, ref: weakref.ref[nn.Module]) -> None:
        self.ref = ref


models: dict[int, _Model] = {}

# Parameter -> the module it was registered on; module -> the module it was registered in.
# (Keyed by id: a WeakKeyDictionary would compare tensors with ==, which is elementwise.)
param_owner: dict[int, tuple[weakref.ref[torch.Tensor], weakref.ref[nn.Module]]] = {}
module_parent: weakref.WeakKeyDictionary[nn.Module, weakref.ref[nn.Module]] = (
    weakref.WeakKeyDictionary()
)


class EvalSite(NamedTuple):
    """Where an ``eval()``/``train(False)`` left a module in eval mode.

    ``filename``/``lineno``: the first frame outside gradguard and torch (the call itself);
    ``caller``: when that frame is in an installed library (``from_pretrained()`` calls
    ``eval()``), the first frame outside installed packages, i.e. the program's own line.
    ``inside``: the library the call was made inside, as ``"pytorch_lightning Trainer.fit"``,
    when the program's line called into one ("" otherwise).
    """

    filename: str
    lineno: int
    call: str
    caller: tuple[str, int] | None
    inside: str = ""


# Module -> its last eval()/train(False), so GG004 can say where a model was switched.
eval_sites: weakref.WeakKeyDictionary[nn.Module, EvalSite] = weakref.WeakKeyDictionary()
_INSTALLED = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def known_models() -> list[nn.Module]:
    """The live models the watchdog has seen, in the order first seen (roots, not submodules).

    Empty when the watchdog is not installed; a model that was garbage-collected is gone.

    Example:
        >>> import torch, gradguard
        >>> from gradguard import _watchdog
        >>> with gradguard.watch():
        ...     model = torch.nn.Linear(2, 2).eval()
        ...     assert _watchdog.known_models() == [model]
    """
    with lock:
        records = list(models.values())
    found = []
    for record in records:
        model = record.ref()
        if model is not None:
            found.append(model)
    return found


def forget_all() -> list[str]:
    """Forget every model and owner and unwrap every class (at removal).

    Returns the ``Class.__call__`` names where other code wrapped gradguard's since.
    """
    models.clear()
    stuck = unwrap_classes()
    param_owner.clear()
    module_parent.clear()
    eval_sites.clear()
    reset_covered()
    return [f"{cls.__module__}.{cls.__qualname__}.__call__" for cls in stuck]


def _forget_model(key: int, ref: weakref.ref[nn.Module]) -> None:
    record = models.get(key)
    if record is not None and record.ref is ref:
        models.pop(key, None)  # unwatch() in another thread may have cleared it
        status.structure += 1


def note(module: nn.Module) -> None:
    """Start watching ``module`` as a root (its class checks its calls; its submodules are free)."""
    if id(module) in models or not status.installed:
        return
    with lock:
        if id(module) in models or not status.installed:
            return
        key = id(module)
        wrap_class(type(module))
        models[key] = _Model(weakref.ref(module, functools.partial(_forget_model, key)))
        status.structure += 1


note_safely = fail_open("model discovery")(note)


def noting(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an nn.Module method so that its outermost call notes the module it was called on."""

    def noting(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not status.installed or getattr(local, "inside", False):
            return original(self, *args, **kwargs)
        was_training = self.training if switches_mode else False
        local.inside = True
        try:
            result = original(self, *args, **kwargs)
        finally:
            local.inside = False
        if _graphs.pending:
            _graphs.flush_pending()
        if switches_mode:
            _note_mode_switch(self, original.__name__, args, kwargs, was_training)
        if id(self) not in models:
            note_safely(self)
        return result

    switches_mode = original.__name__ in ("train", "eval")
    noting.__name__ = original.__name__
    noting.__qualname__ = original.__qualname__
    noting.__doc__ = original.__doc__
    noting.__wrapped__ = original  # type: ignore[attr-defined]
    noting._gradguard_wraps = original  # type: ignore[attr-defined]
    return noting


@fail_open("model discovery")
def _note_mode_switch(
    module: nn.Module, method: str, args: Any, kwargs: Any, was_training: bool
) -> None:
    if module.training:
        eval_sites.pop(module, None)
        return
    if not was_training and module in eval_sites:
        # Already in eval (a library's validation loop calling eval() again): the call that
        # switched it, often the program's own, is the one to name.
        return
    frame, library = _findings.user_location(sys._getframe(1))
    if frame is None:
        return
    if method == "eval":
        call = "eval()"
    else:
        mode = args[0] if args else kwargs.get("mode", True)
        call = f"train({mode!r})"
    caller = None
    if any(part in frame.f_code.co_filename for part in _INSTALLED):
        outer = frame.f_back
        while outer is not None and any(part in outer.f_code.co_filename for part in _INSTALLED):
            outer = outer.f_back
        if outer is not None:
            caller = (outer.f_code.co_filename, outer.f_lineno)
    eval_sites[module] = EvalSite(frame.f_code.co_filename, frame.f_lineno, call, caller, library)


def noting_train(original: Callable[..., Any]) -> Callable[..., Any]:
    """``nn.Module.train`` that notes its outermost module and recurses without re-entering.

    PyTorch's ``train()`` calls ``child.train(mode)`` for every child, so a plain wrapper would be
    entered once per submodule. This one sets the flags of the whole tree itself, calling
    ``train()`` only on a child whose class overrides it (which then reaches this wrapper through
    ``super().train()`` and goes on from there), so a ``train()``/``eval()`` pair costs the same
    whatever the model's size. The flags are set as PyTorch sets them: each module's own
    ``training``, children deduplicated as ``children()`` does.
    """
    module_setattr = nn.Module.__setattr__
    module_children = nn.Module.children
    # Class -> whether its flag is a plain instance attribute, set through the instance's dict.
    # Not where the class makes ``training`` a property (torch.nn.cpp.ModuleWrapper passes it on
    # to its C++ module): the dict would hide the flag it stands for. Asked once per class: a
    # class lookup that misses raises inside getattr(), which costs more than the rest of a step.
    plain_flag: dict[type[nn.Module], bool] = {}

    def has_plain_flag(cls: type[nn.Module]) -> bool:
        if len(plain_flag) >= 4096:
            plain_flag.clear()  # classes made in a loop: never let the cache grow unbounded
        flag = getattr(cls, "training", None)
        plain = cls.__setattr__ is module_setattr and (flag is None or flag.__class__ is bool)
        plain_flag[cls] = plain
        return plain

    def set_tree(module: nn.Module, mode: bool) -> None:
        cls = type(module)
        plain = plain_flag.get(cls)
        if plain is None:
            plain = has_plain_flag(cls)
        if plain:
            # What Module.__setattr__ does for a plain attribute, without its lookups.
            module.__dict__["training"] = mode
        else:
            module.training = mode
        if cls.children is not module_children:
            for child in module.children():
                child.train(mode)
            return
        seen: set[int] = set()
        for entry in module._modules.values():
            if entry is None or id(entry) in seen:
                continue
            seen.add(id(entry))
            if type(entry).train is train:
                set_tree(entry, mode)
            else:
                entry.train(mode)

    def train(self: nn.Module, mode: bool = True) -> nn.Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        if getattr(local, "inside", False):
            set_tree(self, mode)
            return self
        was_training = self.training
        local.inside = True
        try:
            set_tree(self, mode)
        finally:
            local.inside = False
        if _graphs.pending:
            _graphs.flush_pending()
        _note_mode_switch(self, "train", (mode,), {}, was_training)
        if id(self) not in models:
            note_safely(self)
        return self

    train.__name__ = original.__name__
    train.__qualname__ = original.__qualname__
    train.__doc__ = original.__doc__
    train.__wrapped__ = original  # type: ignore[attr-defined]
    train._gradguard_wraps = original  # type: ignore[attr-defined]
    return train


def _forget_parameter(key: int, ref: weakref.ref[torch.Tensor]) -> None:
    entry = param_owner.get(key)
    if entry is not None and entry[0] is ref:
        param_owner.pop(key, None)  # likewise


def on_parameter_registered(module: nn.Module, _name: str, param: Any) -> None:
    """Global registration hook: remember which module a parameter belongs to."""
    status.structure += 1
    if param is not None:
        key = id(param)
        ref = weakref.ref(param, functools.partial(_forget_parameter, key))
        param_owner[key] = (ref, weakref.ref(module))


def on_module_registered(module: nn.Module, _name: str, child: Any) -> None:
    """Global registration hook: remember which module a submodule belongs to."""
    status.structure += 1
    if child is not None:
        module_parent[child] = weakref.ref(module)


def on_new_tree(roots: Sequence[nn.Module]) -> None:
    """The state engine's listener: every root a gradguard scope holds is watched."""
    for root in roots:
        note_safely(root)


def root_of_parameter(param: torch.Tensor) -> nn.Module | None:
    """The outermost module ``param`` is registered in, or None when not known."""
    entry = param_owner.get(id(param))
    module = entry[1]() if entry is not None and entry[0]() is param else None
    if module is None or not any(p is param for p in module._parameters.values()):
        return None
    return root_of_module(module)


def root_of_module(module: nn.Module) -> nn.Module:
    """The outermost module ``module`` is registered in (itself when it has no known parent)."""
    seen = {id(module)}
    while True:
        parent_ref = module_parent.get(module)
        parent = parent_ref() if parent_ref is not None else None
        if parent is None or id(parent) in seen:
            return module
        if not any(child is module for child in parent._modules.values()):
            return module
        seen.add(id(parent))
        module = parent


# --------------------------------------------------------------------------------------------
# Deep mode
# --------------------------------------------------------------------------------------------

# Ids of every module inside a watched model, rebuilt when models or structure change:
# [structure generation, ids]; replaced whole, so other threads never see it half.
_covered: list[Any] = [-1, frozenset()]


def reset_covered() -> None:
    """Forget the deep mode's cache of covered modules."""
    global _covered
    _covered = [-1, frozenset()]


def _rebuild_covered() -> list[Any]:
    global _covered
    # Read before the walk: a change another thread makes during it then leaves this one stale.
    generation = status.structure
    ids: set[int] = set()
    for model in known_models():
        ids.update(map(id, model.modules()))
    _covered = [generation, frozenset(ids)]
    return _covered


# --------------------------------------------------------------------------------------------
# The forward checks of a watched model
# --------------------------------------------------------------------------------------------
#
# Nothing is stored on the model itself. A hook in a module's own hook dicts is pickled with it
# (torch.save), shared by copy.copy and _replicate_for_data_parallel, kept by copy.deepcopy and
# compiled by torch.jit.script, and ScriptModules refuse hooks. Instead the *class* of each watched
# model gets gradguard's ``__call__``, which checks the call when ``self`` is a watched model and
# otherwise calls straight on: a class is saved by name only, never with its attributes. Other
# instances of that class pay one dict lookup per call; submodules of other classes keep
# PyTorch's fast path.


# The threads inside a watched forward, once per forward in flight (a watched model called inside
# another is not added: the outermost speaks for the call). A list, not a threading.local: a
# thread-local read and two writes on every watched call cost about twice what one thread id, an
# append and a remove cost, and a nested call only asks whether its thread is here.
_inflight: list[int] = []
_get_ident = threading.get_ident


def _inside_watched() -> bool:
    """Whether this thread is inside the forward of a watched model."""
    return bool(_inflight) and _get_ident() in _inflight


def _forget_other_threads() -> None:
    # A forked child has only the thread that forked: the others' forwards will never end there,
    # and the C library gives their ids to the child's new threads, which would pass unchecked.
    me = _get_ident()
    _inflight[:] = [me] if me in _inflight else []


if hasattr(os, "register_at_fork"):  # POSIX only; elsewhere no process is forked
    os.register_at_fork(after_in_child=_forget_other_threads)


def _forget_all_threads(_registered: object) -> None:
    # A multiprocessing child runs its target and exits: even the forking thread never goes back
    # to the forward it was started from, so what the child calls is its own, and checked.
    _inflight.clear()


# Run by every multiprocessing child as it starts, before its target (kept by weak reference:
# the function is its own key).
multiprocessing.util.register_after_fork(_forget_all_threads, _forget_all_threads)

# Every class given our __call__: (our __call__, what it calls under it).
_wrapped: dict[type, tuple[Callable[..., Any], _layers.Inner]] = {}

_tracing_state = torch._C._get_tracing_state
_fx_tracer = torch.fx._symbolic_trace


def _traced() -> bool:
    """Whether ``torch.jit.trace`` or ``torch.fx.symbolic_trace`` is tracing: nothing real runs.

    Asked only where a check or a report would run (not on every call). fx's own
    ``is_fx_tracing()`` logs a warning on its first call, so its flag is read instead.
    """
    return _tracing_state() is not None or getattr(_fx_tracer, "_is_fx_tracing_flag", False) is True

# PyTorch's own nn.Module.__call__. When it is the one a call would reach, its two lines are done
# by gradguard's layer itself (run the compiled call if ``module.compile()`` made one, else
# ``_call_impl``): one Python frame less on every watched call.
_TORCH_CALL: Callable[..., Any] | None = getattr(nn.Module, "_wrapped_call_impl", None)


def _is_ours(call: object) -> bool:
    return getattr(call, "_gradguard_forward", False) is True


def _notes_its_instances(cls: type) -> bool:
    # An instance of the user's own model class that runs outside any watched model is a model
    # (a deepcopy made for an EMA or a DQN target network, a model loaded with torch.load);
    # instances of torch's building blocks are parts of models, not models.
    return not cls.__module__.startswith("torch.")


def wrap_class(cls: type[nn.Module]) -> None:
    """Give ``cls`` gradguard's ``__call__``, unless it already reaches one (idempotent)."""
    if cls is nn.Module or cls in _wrapped or _is_ours(cls.__call__):
        return
    # The class above that defines __call__ is asked at every call, not remembered: torch.fx
    # patches nn.Module.__call__ while it traces, and must see calls of watched models.
    owner = next(base for base in cls.__mro__[1:] if "__call__" in base.__dict__)
    wrapper, inner = _layers.put_on(cls, lambda inner: _checking_call(cls, inner, owner))
    _wrapped[cls] = (wrapper, inner)


def unwrap_classes() -> list[type]:
    """Give every class back its own ``__call__``; return those where other code wrapped ours."""
    stuck = []
    for cls, (wrapper, inner) in list(_wrapped.items()):
        if not _layers.take_off(cls, wrapper, inner):
            stuck.append(cls)  # ours stays under theirs, and passes every call straight on
    _wrapped.clear()
    return stuck


def _checking_call(cls: type, inner: _layers.Inner, owner: type) -> Callable[..., Any]:
    notes = _notes_its_instances(cls)
    wrapper = issubclass(cls, WRAPPERS)
    absent = _layers.ABSENT
    inflight = _inflight  # mutated in place, never rebound
    get_ident = _get_ident
    pending = _graphs.pending  # mutated in place, never rebound
    is_grad_enabled = torch.is_grad_enabled

    def __call__(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        own = inner.own
        call = owner.__call__ if own is absent else own
        # Compiling first: torch.compile traces this function and must see only the call.
        if is_dynamo_compiling():
            return call(self, *args, **kwargs)
        if id(self) not in models:
            if (
                not (notes and status.installed)
                or (inflight and get_ident() in inflight)
                or compiler._is_compiling_flag
                or _traced()
            ):
                return call(self, *args, **kwargs)
            note_safely(self)
            if id(self) not in models:
                return call(self, *args, **kwargs)
        forward: Callable[..., Any] = (
            self._call_impl
            if call is _TORCH_CALL and self._compiled_call_impl is None
            else MethodType(call, self)
        )
        me = get_ident()
        if inflight and me in inflight:
            # The outermost watched model speaks for this call.
            return forward(*args, **kwargs)
        # The checked call; _check_first_call does the same for deep mode's first call. Tracing
        # by torch.export or torch.jit.trace is asked only where a check or a report would run:
        # a training forward with gradients on (every training step) does none. A traced call
        # reports nothing: the findings waiting are reported at the next safe point after it.
        if pending and not compiler._is_compiling_flag and not _traced():
            _graphs.flush_pending()
        # The flag is read once (reading an nn.Module attribute is a slow lookup): the forward ran
        # in the mode it was entered in.
        training = self.training
        if (
            training
            and not is_grad_enabled()
            and not compiler._is_compiling_flag
            and not _traced()
        ):
            check_train_without_grad(self)
        try:
            inflight.append(me)
            output = forward(*args, **kwargs)
        finally:
            # Whatever ends the forward (an exception, KeyboardInterrupt), this thread recovers.
            # No Python frame before the remove (see _check_first_call), nor a context manager.
            try:  # noqa: SIM105  # contextlib.suppress enters Python frames, on every call
                inflight.remove(me)
            except ValueError:  # the append itself was interrupted
                pass
        if (
            (not training or (wrapper and wrapped_in_eval(self) is not None))
            and is_grad_enabled()
            and not compiler._is_compiling_flag
            and not _traced()
        ):
            _graphs.track_graph(self, output)
        return output

    __call__._gradguard_forward = True  # type: ignore[attr-defined]
    return __call__


def deep_call(original: Callable[..., Any]) -> Callable[..., Any]:
    """``nn.Module.__call__`` of ``deep=True``: the first call of a model nobody touched notes it.

    Every module call in the process passes here, so the common case (a module inside a model
    already seen) is one set lookup. No global forward hook: that would take every module call
    off PyTorch's fast path (about 2 us per call, against about 0.4 us for this layer).
    """
    direct = original is _TORCH_CALL

    def __call__(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if is_dynamo_compiling() or compiler._is_compiling_flag:
            return original(self, *args, **kwargs)
        covered = _covered
        if id(self) in covered[1] and covered[0] == status.structure:
            if direct and self._compiled_call_impl is None:
                impl: Callable[..., Any] = self._call_impl
                return impl(*args, **kwargs)
            return original(self, *args, **kwargs)
        if _first_call(self):
            # Now watched; its next calls go through its class's checking __call__. This one is
            # checked here: calling it again through the class would run again whatever sits
            # above nn.Module.__call__ (the model's own __call__, another tool's layer).
            return _check_first_call(self, original, args, kwargs)
        return original(self, *args, **kwargs)

    __call__.__wrapped__ = original  # type: ignore[attr-defined]
    __call__._gradguard_wraps = original  # type: ignore[attr-defined]
    return __call__


@fail_open("model discovery")
def _first_call(module: nn.Module) -> bool:
    """Note ``module`` if it is an outermost call; whether this call is to be checked here.

    Fails open (the call goes straight on): it walks every watched model, and runs inside every
    module call in the process that is not in one yet.
    """
    if not status.deep or _traced():
        return False
    covered = _covered
    if covered[0] != status.structure:
        covered = _rebuild_covered()
        if id(module) in covered[1]:
            return False
    if _inside_watched():
        # Part of the work of the watched forward around it (a module built inside that forward,
        # a model only that forward calls), which speaks for it. Noting it, and forgetting it
        # when it dies, would make every forward walk every watched model.
        return False
    note_safely(module)
    _rebuild_covered()
    return id(module) in models


def _check_first_call(
    module: nn.Module, original: Callable[..., Any], args: Any, kwargs: Any
) -> Any:
    """The checks of the class's checking ``__call__``, for the call deep mode noted it at.

    The same steps as the watched path of :func:`_checking_call`, which has them written out
    (it runs on every watched call, where one more frame shows): change both together.
    """
    if _graphs.pending:
        _graphs.flush_pending()
    if module.training and not torch.is_grad_enabled():
        check_train_without_grad(module)
    me = _get_ident()
    try:
        _inflight.append(me)
        output = original(module, *args, **kwargs)
    finally:
        # Removed before any Python frame is entered: a frame's start is where a signal
        # handler runs (KeyboardInterrupt), and would leave this thread marked for good.
        try:  # noqa: SIM105  # contextlib.suppress enters Python frames first
            _inflight.remove(me)
        except ValueError:  # the append itself was interrupted
            pass
    if (not module.training or wrapped_in_eval(module) is not None) and torch.is_grad_enabled():
        _graphs.track_graph(module, output)
    return output
