"""The state engine: snapshot and exact, refcounted restore of training flags and requires_grad.

``module.training`` and ``param.requires_grad`` are shared by every thread, so scopes do not restore
"what they saw on entry" blindly: each distinct module tree that is held in eval has one *hold*
with a count of the scopes that hold it. The first scope to take a tree records every module's own
flag; scopes that come later (nested, re-entered, or in other threads) only count; the last one out
puts each flag back. Holds over trees that overlap (a model and its encoder) share the originals of
the modules they have in common, and a module is restored only when no open hold contains it.

The flat list of a root's modules is cached, so entering a scope does not walk the tree: the cache
is invalidated by a global module-registration hook (installed once, on first use) and by a cheap
check of every module's child count (catching deletions and direct ``_modules`` edits), and dropped
whole when a full garbage collection starts (so a model that refers to itself can still be freed).
"""

from __future__ import annotations

import functools
import gc
import operator
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import torch
from torch import nn

_module_train = nn.Module.train
_module_setattr = nn.Module.__setattr__
_training_of = operator.itemgetter("training")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

# Re-entrant: a module's own train() override runs under the lock and may open a scope itself.
_lock = threading.RLock()


# --------------------------------------------------------------------------------------------
# Module trees (cached flat views of a root's submodules)
# --------------------------------------------------------------------------------------------

_generation = 0
_hook_installed = False


def _bump_generation(*_args: Any) -> None:
    global _generation
    _generation += 1


def _drop_cache_before_full_collection(phase: str, info: dict[str, Any]) -> None:
    # The cache holds submodules (and the roots' __dict__s) strongly. A model that refers to itself
    # (a Lightning module through its trainer, say) would then never be collected: drop the cache
    # when a full collection starts. Those are rare, and a tree is cheap to build again.
    if phase == "start" and info.get("generation") == 2:
        trees = globals().get("_trees")  # gone when a collection runs late at interpreter exit
        if trees:
            trees.clear()


def _install_registration_hook() -> None:
    global _hook_installed
    with _lock:
        if not _hook_installed:
            # Fires whenever a submodule is registered or replaced anywhere: that is when a
            # cached tree may have gone stale. It never runs on forward, so it costs nothing there.
            nn.modules.module.register_module_module_registration_hook(_bump_generation)
            gc.callbacks.append(_drop_cache_before_full_collection)
            _hook_installed = True


class Tree:
    """A flat, ordered (parents first) view of root modules and all of their submodules.

    The roots are held by weak reference: the cache of trees must never keep a model alive.
    Submodules are held strongly, but only for as long as their root lives (the cache entry is
    dropped by the root's weakref callback).
    """

    __slots__ = (
        "__weakref__",
        "all_plain",
        "child_dicts",
        "child_lens",
        "dicts",
        "direct",
        "generation",
        "ids",
        "index",
        "overrides",
        "rest",
        "root_refs",
        "size",
    )

    def __init__(self, roots: Sequence[nn.Module]) -> None:
        mods: list[nn.Module] = []
        seen: set[int] = set()
        for root in roots:
            if id(root) not in seen:
                seen.add(id(root))
                mods.append(root)
        self.root_refs = tuple(weakref.ref(root) for root in mods)
        # Breadth-first, so a parent always comes before its children.
        position = 0
        while position < len(mods):
            children = mods[position]._modules
            position += 1
            for child in children.values():
                if child is not None and id(child) not in seen:
                    seen.add(id(child))
                    mods.append(child)
        self.rest: tuple[nn.Module, ...] = tuple(mods[len(self.root_refs) :])
        self.size = len(mods)
        self.ids = frozenset(seen)
        self.index = {id(m): i for i, m in enumerate(mods)}
        # A module without children gains one only through registration, which bumps the
        # generation, unless it is a container that edits its _modules directly (insert, del):
        # only those and the modules with children need their child count checked.
        self.child_dicts = tuple(
            m._modules for m in mods if m._modules or isinstance(m, _CONTAINERS)
        )
        self.child_lens = list(map(len, self.child_dicts))
        self.generation = _generation

        # Modules whose class overrides train() get that override called (as model.eval() would);
        # it decides for its own subtree, so nothing under it is switched directly.
        under_override: set[int] = set()
        overrides: list[int] = []
        direct: list[int] = []
        for i, module in enumerate(mods):
            if id(module) in under_override:
                under_override.update(id(c) for c in module._modules.values() if c is not None)
                continue
            if not _is_module_train(type(module).train):
                overrides.append(i)
                under_override.update(id(c) for c in module._modules.values() if c is not None)
            else:
                direct.append(i)
        self.overrides = tuple(overrides)
        self.direct = tuple(direct)
        # A "plain" module keeps `training` in its __dict__ and sets it the default way, so the
        # flag can be read and written there directly: no Module.__setattr__, no train() recursion.
        self.all_plain = not overrides and all(
            type(m).__setattr__ is _module_setattr and "training" in m.__dict__ for m in mods
        )
        self.dicts: tuple[dict[str, Any], ...] = (
            tuple(m.__dict__ for m in mods) if self.all_plain else ()
        )

    @property
    def mods(self) -> tuple[nn.Module, ...]:
        """Every module, roots first; only valid while the roots are alive."""
        # A scope holds its roots strongly while it is open, so no ref is dead here.
        roots = cast("tuple[nn.Module, ...]", tuple(ref() for ref in self.root_refs))
        return roots + self.rest

    def valid(self) -> bool:
        if self.generation != _generation:
            return False
        return list(map(len, self.child_dicts)) == self.child_lens

    def flags(self) -> list[bool]:
        if self.all_plain:
            return list(map(_training_of, self.dicts))
        return [m.training for m in self.mods]

    def to_eval(self) -> None:
        if self.all_plain:
            for d in self.dicts:
                d["training"] = False
            return
        mods = self.mods
        for i in self.overrides:
            mods[i].train(False)
        for i in self.direct:
            if mods[i].training:
                _set_training(mods[i], False)

    def set_flags(self, flags: Sequence[bool], only: Iterable[int] | None = None) -> None:
        """Put flags back exactly (train() overrides are called first, so they see the change)."""
        if only is None and self.all_plain:
            for d, flag in zip(self.dicts, flags):
                d["training"] = flag
            return
        mods = self.mods
        positions = range(self.size) if only is None else sorted(only)
        chosen = set(positions)
        called = [i for i in self.overrides if i in chosen]
        if called:
            # An override recurses into its subtree, which may hold modules that are not ours
            # to restore (still held by another scope): put those back as they were.
            untouched = [(m, m.training) for j, m in enumerate(mods) if j not in chosen]
            for i in called:
                mods[i].train(flags[i])
            for module, flag in untouched:
                if module.training is not flag:
                    _set_training(module, flag)
        for i in positions:
            if mods[i].training is not flags[i]:
                _set_training(mods[i], flags[i])


def _is_module_train(method: object) -> bool:
    # The watchdog wraps nn.Module.train; its wrapper still sets the flags the default way.
    return method is _module_train or getattr(method, "_gradguard_wraps", None) is _module_train


def _set_training(module: nn.Module, flag: bool) -> None:
    if type(module).__setattr__ is _module_setattr and "training" in module.__dict__:
        module.__dict__["training"] = flag
    else:
        module.training = flag


_trees: dict[tuple[int, ...], tuple[tuple[weakref.ref[nn.Module], ...], Tree]] = {}

#: Called with the roots of every newly built tree (the watchdog notes them); None when unused.
tree_listener: Callable[[Sequence[nn.Module]], None] | None = None


def _forget(
    key: tuple[int, ...], _ref: object, trees: dict[tuple[int, ...], Any] = _trees
) -> None:
    # `trees` is bound at definition: at interpreter exit the module's globals may be gone.
    trees.pop(key, None)


def tree_of(roots: Sequence[nn.Module]) -> Tree:
    """The cached tree of ``roots``, rebuilt when the structure may have changed."""
    key = tuple(map(id, roots))
    entry = _trees.get(key)
    if entry is not None:
        refs, tree = entry
        alive = (
            refs[0]() is roots[0]
            if len(refs) == 1
            else all(ref() is root for ref, root in zip(refs, roots))
        )
        if alive and tree.valid():
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
# Holds on training flags
# --------------------------------------------------------------------------------------------


class Hold:
    """One tree held in eval by ``count`` open scopes, with the flags to put back."""

    __slots__ = ("count", "expected", "orig", "tree")

    def __init__(self, tree: Tree, orig: list[bool]) -> None:
        self.tree = tree
        self.orig = orig
        self.count = 1
        self.expected: list[bool] | None = None


_holds: dict[int, Hold] = {}


def _overlapping(tree: Tree) -> list[Hold]:
    ids = tree.ids
    return [h for h in _holds.values() if h.tree is not tree and not h.tree.ids.isdisjoint(ids)]


def hold_eval(tree: Tree) -> Hold:
    """Put every module of ``tree`` in eval (unless already held) and count one more holder."""
    with _lock:
        hold = _holds.get(id(tree))
        if hold is not None:
            hold.count += 1
            return hold
        if tree.all_plain and not _holds and not any(map(_training_of, tree.dicts)):
            # Fast path for a served model: nothing else is held and the tree is in eval already,
            # so there is nothing to write and every flag to put back is False.
            hold = _holds[id(tree)] = Hold(tree, [False] * len(tree.dicts))
            return hold
        orig = tree.flags()
        if _holds:
            for other in _overlapping(tree):
                # Modules another hold already has are in eval now; their own flags are there.
                for i, module in enumerate(tree.mods):
                    j = other.tree.index.get(id(module))
                    if j is not None:
                        orig[i] = other.orig[j]
        hold = Hold(tree, orig)
        _holds[id(tree)] = hold
        try:
            tree.to_eval()
        except BaseException:
            del _holds[id(tree)]
            tree.set_flags(orig)
            raise
        if not tree.all_plain:
            hold.expected = tree.flags()
        return hold


def release_eval(hold: Hold) -> list[nn.Module]:
    """Count one holder less; the last one restores every flag exactly.

    Returns the modules whose flag code inside the scope changed (and which were put right).
    """
    tree = hold.tree
    with _lock:
        if (
            hold.count == 1
            and tree.all_plain
            and len(_holds) == 1
            and not any(map(_training_of, tree.dicts))
            and not any(hold.orig)
        ):
            # Fast path: the only hold, nothing changed, and all in eval before: nothing to do.
            del _holds[id(tree)]
            return []
        expected = hold.expected
        if expected is None:
            changed_at = [i for i, flag in enumerate(tree.flags()) if flag]
        else:
            changed_at = [i for i, flag in enumerate(tree.flags()) if flag is not expected[i]]
        hold.count -= 1
        if hold.count > 0:
            if changed_at:
                tree.set_flags(_expected_flags(hold), only=changed_at)
            mods = tree.mods
            return [mods[i] for i in changed_at]
        del _holds[id(tree)]
        others = _overlapping(tree) if _holds else []
        if not others:
            tree.set_flags(hold.orig)
        else:
            still_held = set().union(*(o.tree.ids for o in others))
            mods = tree.mods
            free = [i for i, m in enumerate(mods) if id(m) not in still_held]
            kept = [i for i in changed_at if id(mods[i]) in still_held]
            if kept:
                tree.set_flags(_expected_flags(hold), only=kept)
            tree.set_flags(hold.orig, only=free)
        if not changed_at:
            return []
        mods = tree.mods
        return [mods[i] for i in changed_at]


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


def hold_frozen(params: tuple[torch.Tensor, ...]) -> ParamHold:
    """Set ``requires_grad=False`` on ``params`` (unless already held) and count one holder."""
    with _lock:
        for param in params:
            entry = _param_counts.get(id(param))
            if entry is None:
                _param_counts[id(param)] = [1, param.requires_grad, param]
                if param.requires_grad:
                    param.requires_grad_(False)
            else:
                entry[0] += 1
        return ParamHold(params)


def release_frozen(hold: ParamHold) -> list[torch.Tensor]:
    """Count one holder less per parameter; the last one puts each flag back exactly.

    Returns the parameters whose flag code inside the scope changed (and which were put right).
    """
    changed: list[torch.Tensor] = []
    with _lock:
        for param in hold.params:
            if param.requires_grad:
                changed.append(param)
            entry = _param_counts[id(param)]
            entry[0] -= 1
            if entry[0] == 0:
                del _param_counts[id(param)]
                if param.requires_grad is not entry[1]:
                    param.requires_grad_(entry[1])
            elif param.requires_grad:
                param.requires_grad_(False)
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
