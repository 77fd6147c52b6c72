"""The state engine: snapshot and exact, refcounted restore of training flags and requires_grad.

``module.training`` and ``param.requires_grad`` are shared by every thread, so scopes do not restore
"what they saw on entry" blindly: each distinct module tree that is held in eval has one *hold*
with a count of the scopes that hold it. The first scope to take a tree records every module's own
flag; scopes that come later (nested, re-entered, or in other threads) only count; the last one out
puts each flag back. Holds over trees that overlap (a model and its encoder) share the originals of
the modules they have in common, and a module is restored only when no open hold contains it.

Taking a hold is all or nothing: when a step fails (a ``train()`` override raises, a parameter
refuses its flag), what was already switched is put back before the error propagates. Releasing
restores every flag it can, even past one that fails, then raises the first error.

No user code runs under the engine's lock: ``train()`` overrides and custom ``__setattr__`` are
called after the bookkeeping, while the tree is marked *busy*; another thread that wants a tree
overlapping a busy one waits for it (the thread running the user code never waits for itself).

The flat list of a root's modules is cached, so entering a scope does not walk the tree. The cache
is checked on every use: a global module-registration hook (installed once, on first use) bumps a
generation, and the identity of every child of every module that has children (and of every
container, which edits its ``_modules`` directly) is compared with what was cached, and so is
whether each root has a ``train`` set on the instance (a submodule's is read when the tree is
built: reading every module's on every use would cost what the cache saves). The cache keeps
every module by weak reference; its strong view (what the fast path reads) is let go at the start of
every full garbage collection and rebuilt from the weak references on next use, so a model that
refers to itself can still be freed.
"""

from __future__ import annotations

import functools
import gc
import itertools
import operator
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

_module_train = nn.Module.train
_module_setattr = nn.Module.__setattr__
_training_of = operator.itemgetter("training")
# Not dict.values: a ScriptModule's _modules is an OrderedModuleDict, not a dict.
_values = operator.methodcaller("values")
_chain = itertools.chain.from_iterable
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

# Guards the registries below; held only for bookkeeping and plain dict writes, never while user
# code (a train() override, a custom __setattr__) runs.
_lock = threading.Lock()
_not_busy = threading.Condition(_lock)


# --------------------------------------------------------------------------------------------
# Module trees (cached flat views of a root's submodules)
# --------------------------------------------------------------------------------------------

_generation = 0
_hook_installed = False


def _bump_generation(*_args: Any) -> None:
    global _generation
    _generation += 1


def _loosen_before_full_collection(phase: str, info: dict[str, Any]) -> None:
    # The strong view of a tree holds submodules (and their __dict__s). A model that refers to
    # itself (a Lightning module through its trainer, say) would then never be collected: let the
    # strong views go when a full collection starts. The weak references stay, so the next scope
    # rebuilds the view without walking the tree. A tree in use keeps its view: its scope holds
    # the roots strongly anyway.
    if phase == "start" and info.get("generation") == 2:
        trees = globals().get("_trees")  # gone when a collection runs late at interpreter exit
        if trees:
            for _refs, tree in list(trees.values()):
                if tree.users == 0:
                    tree.view = None


def _install_registration_hook() -> None:
    global _hook_installed
    with _lock:
        if not _hook_installed:
            # Fires whenever a submodule is registered or replaced anywhere: that is when a
            # cached tree may have gone stale. It never runs on forward, so it costs nothing there.
            nn.modules.module.register_module_module_registration_hook(_bump_generation)
            gc.callbacks.append(_loosen_before_full_collection)
            _hook_installed = True


class View:
    """The strong part of a :class:`Tree`: the submodules themselves (the roots stay weak)."""

    __slots__ = ("child_dicts", "child_lens", "children", "dicts", "rest")

    def __init__(self, mods: tuple[nn.Module, ...], tree: Tree) -> None:
        self.rest = mods[len(tree.root_refs) :]
        self.child_dicts = tuple(mods[i]._modules for i in tree.parents)
        # Every child of every parent, in order, and how many each parent has: together they
        # pin the structure exactly (a child replaced in place, moved or removed changes them).
        self.child_lens = list(map(len, self.child_dicts))
        self.children = list(_chain(map(_values, self.child_dicts)))
        self.dicts: tuple[dict[str, Any], ...] = tuple(m.__dict__ for m in mods)


class Tree:
    """A flat, ordered (parents first) view of root modules and all of their submodules.

    Every module is held by weak reference: the cache of trees must never keep a model alive.
    ``view`` is the strong part, present while the tree is in use or since the last full garbage
    collection.
    """

    __slots__ = (
        "__weakref__",
        "all_false",
        "all_plain",
        "child_ids",
        "child_lens",
        "direct",
        "exported_training",
        "generation",
        "ids",
        "index",
        "overrides",
        "parents",
        "refs",
        "root_refs",
        "root_trains",
        "size",
        "users",
        "view",
    )

    def __init__(self, roots: Sequence[nn.Module]) -> None:
        mods: list[nn.Module] = []
        seen: set[int] = set()
        for root in roots:
            if id(root) not in seen:
                seen.add(id(root))
                mods.append(root)
        n_roots = len(mods)
        # Breadth-first, so a parent always comes before its children.
        position = 0
        while position < len(mods):
            children = mods[position]._modules
            position += 1
            for child in children.values():
                if child is not None and id(child) not in seen:
                    seen.add(id(child))
                    mods.append(child)
        self.refs = tuple(map(weakref.ref, mods))
        self.root_refs = self.refs[:n_roots]
        self.size = len(mods)
        self.ids = frozenset(seen)
        self.index = {id(m): i for i, m in enumerate(mods)}
        # A module without children gains one only through registration, which bumps the
        # generation, unless it is a container that edits its _modules directly (insert, del):
        # only those and the modules with children need their children compared.
        self.parents = tuple(
            i for i, m in enumerate(mods) if m._modules or isinstance(m, _CONTAINERS)
        )
        self.generation = _generation
        self.users = 0
        self.all_false: Sequence[bool] = (False,) * self.size

        # Modules whose train() is overridden (by their class or on the instance) get that
        # override called, as model.eval() would; it decides for its own subtree, so nothing under
        # it is switched directly.
        under_override: set[int] = set()
        overrides: list[int] = []
        direct: list[int] = []
        for i, module in enumerate(mods):
            if id(module) in under_override:
                under_override.update(id(c) for c in module._modules.values() if c is not None)
                continue
            if _overrides_train(module):
                overrides.append(i)
                under_override.update(id(c) for c in module._modules.values() if c is not None)
            else:
                direct.append(i)
        self.overrides = tuple(overrides)
        self.direct = tuple(direct)
        self.exported_training = tuple(
            type(m).__name__ for m in mods if _exported(m) and _exported_in_training(m)
        )
        # A "plain" module keeps `training` in its __dict__ and sets it the default way, so the
        # flag can be read and written there directly: no Module.__setattr__, no train() recursion.
        self.all_plain = not overrides and all(
            type(m).__setattr__ is _module_setattr and "training" in m.__dict__ for m in mods
        )
        view = View(tuple(mods), self)
        self.root_trains = _root_trains(self.root_refs)
        self.child_ids = tuple(map(id, view.children))
        self.child_lens = view.child_lens
        self.view: View | None = view

    def current(self) -> View | None:
        """The strong view if the cached structure still matches the modules; else None."""
        if self.generation != _generation:
            return None
        view = self.view
        if view is None:
            view = self._rebuild_view()
            if view is None:
                return None
        child_dicts = view.child_dicts
        if len(child_dicts) == 1:  # a root with leaves only (a Sequential of layers, say)
            if list(child_dicts[0].values()) != view.children:
                return None
        elif list(map(len, child_dicts)) != view.child_lens or (
            list(_chain(map(_values, child_dicts))) != view.children
        ):
            return None
        if _root_trains(self.root_refs) != self.root_trains:
            # `root.train = ...` on an instance since: model.eval() would call it, and so must we.
            # (Checked for the roots only, on every use; a submodule's is seen when it is built.)
            return None
        return view

    def _rebuild_view(self) -> View | None:
        mods = tuple(ref() for ref in self.refs)
        if None in mods:
            return None
        view = View(mods, self)  # type: ignore[arg-type]  # no ref is dead: checked above
        if tuple(map(id, view.children)) != self.child_ids or view.child_lens != self.child_lens:
            return None
        self.view = view
        return view


# Training-mode aten ops in a torch.export graph, with the position of their `train` argument.
_TRAINING_ARGUMENT = {
    "aten.dropout.default": 2,
    "aten.native_dropout.default": 2,
    "aten.feature_dropout.default": 2,
    "aten.alpha_dropout.default": 2,
    "aten.feature_alpha_dropout.default": 2,
    "aten.batch_norm.default": 5,
}


def _exported(module: nn.Module) -> bool:
    # torch.export's module() disables train()/eval() on the instance: its mode is in the graph.
    train = module.__dict__.get("train")
    return getattr(train, "__module__", None) == "torch.export.exported_program"


def _exported_in_training(module: nn.Module) -> bool:
    graph = getattr(module, "graph", None)
    for node in getattr(graph, "nodes", ()):
        position = _TRAINING_ARGUMENT.get(str(node.target)) if node.op == "call_function" else None
        if position is not None and len(node.args) > position and node.args[position] is True:
            return True
    return False


def _root_trains(root_refs: tuple[weakref.ref[nn.Module], ...]) -> Any:
    if len(root_refs) == 1:
        return "train" in root_refs[0]().__dict__  # alive: the caller holds it
    return tuple("train" in ref().__dict__ for ref in root_refs)


def _overrides_train(module: nn.Module) -> bool:
    if _exported(module):
        return False  # its train() only raises; its flags are switched like any module's
    if "train" in module.__dict__:
        return True  # an instance-level override: model.eval() calls it, so must we
    return not _is_module_train(type(module).train)


def _is_module_train(method: object) -> bool:
    # The watchdog wraps nn.Module.train; its wrapper still sets the flags the default way.
    return method is _module_train or getattr(method, "_gradguard_wraps", None) is _module_train


def _set_training(module: nn.Module, flag: bool) -> None:
    if type(module).__setattr__ is _module_setattr and "training" in module.__dict__:
        module.__dict__["training"] = flag
    else:
        module.training = flag


def _mods(tree: Tree, view: View) -> tuple[nn.Module, ...]:
    # Only while a scope holds the roots strongly, so no ref is dead here.
    refs = tree.root_refs
    if len(refs) == 1:
        return (refs[0](), *view.rest)  # type: ignore[arg-type]
    return tuple(ref() for ref in refs) + view.rest  # type: ignore[return-value]


def _flags(tree: Tree, view: View, mods: tuple[nn.Module, ...]) -> list[bool]:
    if tree.all_plain:
        return list(map(_training_of, view.dicts))
    return [m.training for m in mods]


def _to_eval(tree: Tree, view: View, mods: tuple[nn.Module, ...]) -> None:
    """Switch every module to eval; raise at the first step that fails."""
    if tree.all_plain:
        for d in view.dicts:
            d["training"] = False
        return
    for i in tree.overrides:
        mods[i].train(False)
    for i in tree.direct:
        if mods[i].training:
            _set_training(mods[i], False)


def _set_flags(
    tree: Tree,
    view: View,
    mods: tuple[nn.Module, ...],
    flags: Sequence[bool],
    only: Iterable[int] | None = None,
) -> BaseException | None:
    """Put flags back exactly; every module that can be is restored. Returns the first error.

    ``train()`` overrides are called first, so they see the change; an override recurses into its
    subtree, which may hold modules that are not ours to restore (still held by another scope):
    those are put back as they were.
    """
    if only is None and tree.all_plain:
        for d, flag in zip(view.dicts, flags):
            d["training"] = flag
        return None
    positions = range(tree.size) if only is None else sorted(only)
    first: BaseException | None = None
    chosen = set(positions)
    called = [i for i in tree.overrides if i in chosen]
    if called:
        untouched = [(m, m.training) for j, m in enumerate(mods) if j not in chosen]
        for i in called:
            try:
                mods[i].train(flags[i])
            except BaseException as error:  # the rest must still be restored
                first = first or error
        for module, flag in untouched:
            if module.training is not flag:
                try:
                    _set_training(module, flag)
                except BaseException as error:
                    first = first or error
    for i in positions:
        try:
            if mods[i].training is not flags[i]:
                _set_training(mods[i], flags[i])
        except BaseException as error:
            first = first or error
    return first


_trees: dict[tuple[int, ...], tuple[tuple[weakref.ref[nn.Module], ...], Tree]] = {}

#: Called with the roots of every newly built tree (the watchdog notes them); None when unused.
tree_listener: Callable[[Sequence[nn.Module]], None] | None = None


def _forget(key: tuple[int, ...], _ref: object, trees: dict[tuple[int, ...], Any] = _trees) -> None:
    # `trees` is bound at definition: at interpreter exit the module's globals may be gone.
    trees.pop(key, None)


def tree_of(roots: Sequence[nn.Module]) -> Tree:
    """The cached tree of ``roots``, rebuilt when the structure has changed."""
    key = tuple(map(id, roots))
    entry = _trees.get(key)
    if entry is not None:
        refs, tree = entry
        alive = (
            refs[0]() is roots[0]
            if len(refs) == 1
            else all(ref() is root for ref, root in zip(refs, roots))
        )
        if alive and tree.current() is not None:
            return tree
    if not _hook_installed:
        _install_registration_hook()
    tree = Tree(roots)
    forget = functools.partial(_forget, key)
    refs = tuple(weakref.ref(root, forget) for root in roots)
    _trees[key] = (refs, tree)
    if tree_listener is not None:
        tree_listener(roots)
    return tree


# --------------------------------------------------------------------------------------------
# Busy trees: user code running outside the lock
# --------------------------------------------------------------------------------------------


class _Busy:
    __slots__ = ("ids", "thread")

    def __init__(self, ids: frozenset[int]) -> None:
        self.ids = ids
        self.thread = threading.get_ident()


_busy: list[_Busy] = []


def _wait_until_free(ids: frozenset[int]) -> None:
    """Under the lock: wait while another thread runs user code on modules among ``ids``."""
    me = threading.get_ident()
    while any(b.thread != me and not b.ids.isdisjoint(ids) for b in _busy):
        _not_busy.wait()


def _mark_busy(ids: frozenset[int]) -> _Busy:
    busy = _Busy(ids)
    _busy.append(busy)
    return busy


def _unmark_busy(busy: _Busy) -> None:
    with _lock:
        _busy.remove(busy)
        _not_busy.notify_all()


# --------------------------------------------------------------------------------------------
# Holds on training flags
# --------------------------------------------------------------------------------------------


class Hold:
    """One tree held in eval by ``count`` open scopes, with the flags to put back."""

    __slots__ = ("_mods", "count", "expected", "orig", "tree", "view")

    def __init__(
        self, tree: Tree, view: View, mods: tuple[nn.Module, ...] | None, orig: Sequence[bool]
    ) -> None:
        self.tree = tree
        self.view = view
        self._mods = mods
        self.orig = orig
        self.count = 1
        self.expected: list[bool] | None = None

    @property
    def mods(self) -> tuple[nn.Module, ...]:
        """Every module of the tree, roots first (made on first use, never on the fast path)."""
        mods = self._mods
        if mods is None:
            mods = self._mods = _mods(self.tree, self.view)
        return mods


_holds: dict[int, Hold] = {}


def _overlapping(tree: Tree) -> list[Hold]:
    ids = tree.ids
    return [h for h in _holds.values() if h.tree is not tree and not h.tree.ids.isdisjoint(ids)]


def _view_of(tree: Tree) -> View:
    # The strong view was let go by a full collection since tree_of() returned the tree. The
    # modules as they were then are what this scope holds, as if it had been entered a moment
    # earlier; only a module freed since (so no longer part of the model) makes that impossible.
    mods = tuple(ref() for ref in tree.refs)
    if None in mods:
        raise RuntimeError(
            "gradguard: a submodule was freed while a scope on its model was being entered"
        )
    view = View(mods, tree)  # type: ignore[arg-type]  # no ref is dead: checked above
    tree.view = view
    return view


def hold_eval(tree: Tree) -> Hold:
    """Put every module of ``tree`` in eval (unless already held) and count one more holder.

    All or nothing: when a module cannot be switched, every flag is put back and the error raised.

    Raises:
        TypeError: the tree holds a torch.export module whose graph runs in training mode (no
            flag can switch it); nothing is changed.
    """
    if tree.exported_training:
        raise TypeError(
            f"cannot hold {', '.join(tree.exported_training)} in eval mode: it is the module of a "
            "torch.export program exported in training mode, whose dropout and batch norm run "
            "in training mode whatever its flags say (torch disables its train() and eval()); "
            "export the model after model.eval() (torch.export.export(model.eval(), args)), or "
            "use the original nn.Module"
        )
    with _lock:
        if _busy:
            _wait_until_free(tree.ids)
        hold = _holds.get(id(tree))
        if hold is not None:
            hold.count += 1
            return hold
        view = tree.view
        if view is None:
            view = _view_of(tree)
        if tree.all_plain and not _holds and not any(map(_training_of, view.dicts)):
            # Fast path for a served model: nothing else is held and the tree is in eval already,
            # so there is nothing to write and every flag to put back is False.
            hold = _holds[id(tree)] = Hold(tree, view, None, tree.all_false)
            tree.users += 1
            return hold
        # A plain tree is read and written through its __dicts__: no module tuple needed.
        mods = () if tree.all_plain else _mods(tree, view)
        orig = _flags(tree, view, mods)
        if _holds:
            if not mods:
                mods = _mods(tree, view)
            for other in _overlapping(tree):
                # Modules another hold already has are in eval now; their own flags are there.
                for i, module in enumerate(mods):
                    j = other.tree.index.get(id(module))
                    if j is not None:
                        orig[i] = other.orig[j]
        hold = Hold(tree, view, mods or None, orig)
        _holds[id(tree)] = hold
        tree.users += 1
        if tree.all_plain:
            _to_eval(tree, view, mods)  # plain dict writes: no user code
            return hold
        busy = _mark_busy(tree.ids)
    try:
        try:
            _to_eval(tree, view, mods)
            hold.expected = _flags(tree, view, mods)
        except BaseException as error:
            _undo_take(hold)
            raise error from None
    finally:
        _unmark_busy(busy)
    return hold


def _undo_take(hold: Hold) -> None:
    # Called while the tree is busy: the first holder could not switch it; put back what it did.
    tree, view, mods = hold.tree, hold.view, hold.mods
    with _lock:
        hold.count -= 1
        if hold.count > 0:
            return  # a scope that this thread's own train() override opened holds it still
        del _holds[id(tree)]
        tree.users -= 1
        others = _overlapping(tree) if _holds else []
        still_held = set().union(*(o.tree.ids for o in others))
    free = [i for i, m in enumerate(mods) if id(m) not in still_held]
    _set_flags(tree, view, mods, hold.orig, only=free)  # the first error is the one that propagates


def release_eval(hold: Hold) -> list[nn.Module]:
    """Count one holder less; the last one restores every flag exactly.

    Returns the modules whose flag code inside the scope changed (and which were put right).
    Every flag that can be restored is, even when one fails; then the first error is raised.
    """
    tree, view = hold.tree, hold.view
    with _lock:
        if _busy:
            _wait_until_free(tree.ids)
        if (
            hold.count == 1
            and tree.all_plain
            and len(_holds) == 1
            and not any(map(_training_of, view.dicts))
            and (hold.orig is tree.all_false or not any(hold.orig))
        ):
            # Fast path: the only hold, nothing changed, and all in eval before: nothing to do.
            del _holds[id(tree)]
            tree.users -= 1
            return []
        mods = () if tree.all_plain else hold.mods
        expected = hold.expected
        if expected is None:
            changed_at = [i for i, flag in enumerate(_flags(tree, view, mods)) if flag]
        else:
            changed_at = [
                i for i, flag in enumerate(_flags(tree, view, mods)) if flag is not expected[i]
            ]
        if changed_at or (_holds and len(_holds) > 1):
            mods = hold.mods
        hold.count -= 1
        writes: list[tuple[Sequence[bool], Iterable[int] | None]] = []
        if hold.count > 0:
            if changed_at:
                writes.append((_expected_flags(hold), changed_at))
        else:
            del _holds[id(tree)]
            tree.users -= 1
            others = _overlapping(tree) if _holds else []
            if not others:
                writes.append((hold.orig, None))
            else:
                still_held = set().union(*(o.tree.ids for o in others))
                free = [i for i, m in enumerate(mods) if id(m) not in still_held]
                kept = [i for i in changed_at if id(mods[i]) in still_held]
                if kept:
                    writes.append((_expected_flags(hold), kept))
                writes.append((hold.orig, free))
        changed = [mods[i] for i in changed_at]
        if tree.all_plain:
            for flags, only in writes:
                _set_flags(tree, view, mods, flags, only)  # plain dict writes: no user code
            return changed
        busy = _mark_busy(tree.ids)
    first: BaseException | None = None
    try:
        for flags, only in writes:
            error = _set_flags(tree, view, mods, flags, only)
            first = first or error
    finally:
        _unmark_busy(busy)
    if first is not None:
        raise first
    return changed


def _expected_flags(hold: Hold) -> list[bool]:
    return hold.expected if hold.expected is not None else [False] * hold.tree.size


# --------------------------------------------------------------------------------------------
# Holds on requires_grad
# --------------------------------------------------------------------------------------------


class ParamHold:
    """Parameters held with ``requires_grad=False``; their own flags are kept in the registry."""

    __slots__ = ("params",)

    def __init__(self, params: tuple[torch.Tensor, ...]) -> None:
        self.params = params


# id(param) -> [count, original requires_grad, param]
_param_counts: dict[int, list[Any]] = {}


def unique_parameters(modules: Iterable[nn.Module]) -> tuple[torch.Tensor, ...]:
    params: dict[int, torch.Tensor] = {}
    for module in modules:
        for param in module.parameters():
            params.setdefault(id(param), param)
    return tuple(params.values())


def _set_requires_grad(param: torch.Tensor, flag: bool) -> None:
    # The attribute, not requires_grad_(): an uninitialised parameter of a lazy module refuses
    # every method but takes the attribute.
    if flag and param.is_inference() and not torch.is_inference_mode_enabled():
        # A parameter made under inference_mode may only be made to require grad inside it.
        with torch.inference_mode():
            param.requires_grad = True
    else:
        param.requires_grad = flag


def hold_frozen(params: tuple[torch.Tensor, ...]) -> ParamHold:
    """Set ``requires_grad=False`` on ``params`` (unless already held) and count one holder.

    All or nothing: when a parameter refuses the flag, every one already taken is given back.
    """
    with _lock:
        taken = 0
        try:
            for param in params:
                entry = _param_counts.get(id(param))
                if entry is None:
                    flag = param.requires_grad
                    if flag:
                        _set_requires_grad(param, False)
                    _param_counts[id(param)] = [1, flag, param]
                else:
                    entry[0] += 1
                taken += 1
        except BaseException as error:
            _give_back(params[:taken])
            raise error from None
        return ParamHold(params)


def _give_back(params: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], BaseException | None]:
    """Under the lock: one holder less per parameter; the last one restores. First error out."""
    changed: list[torch.Tensor] = []
    first: BaseException | None = None
    for param in params:
        try:
            if param.requires_grad:
                changed.append(param)
            entry = _param_counts[id(param)]
            entry[0] -= 1
            if entry[0] == 0:
                del _param_counts[id(param)]
                if param.requires_grad is not entry[1]:
                    _set_requires_grad(param, entry[1])
            elif param.requires_grad:
                _set_requires_grad(param, False)
        except BaseException as error:  # the rest must still be restored
            first = first or error
    return changed, first


def release_frozen(hold: ParamHold) -> list[torch.Tensor]:
    """Count one holder less per parameter; the last one puts each flag back exactly.

    Returns the parameters whose flag code inside the scope changed (and which were put right).
    Every parameter that can be restored is, even when one fails; then the first error is raised.
    """
    with _lock:
        changed, first = _give_back(hold.params)
    if first is not None:
        raise first
    return changed


def held_counts() -> tuple[int, int]:
    """(trees held in eval, parameters held frozen): both 0 when no scope is open anywhere."""
    with _lock:
        return (len(_holds), len(_param_counts))


def known_roots() -> list[nn.Module]:
    """Every live module that a scope has been entered on (the roots, not their submodules)."""
    roots: dict[int, nn.Module] = {}
    for refs, _tree in list(_trees.values()):
        for ref in refs:
            root = ref()
            if root is not None:
                roots.setdefault(id(root), root)
    return list(roots.values())
