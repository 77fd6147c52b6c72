"""GG004 / GG005: the optimizer step (a model left in eval; a step with no gradient)."""

from __future__ import annotations

import functools
import weakref
from typing import Any

import torch
from torch import nn

from gradguard import _findings
from gradguard._watchdog import _built, _graphs, _reach
from gradguard._watchdog._common import (
    compiler,
    fail_open,
    is_dynamo_compiling,
    model_name,
    report,
    status,
    wrapped_in_eval,
    wrapped_model,
)
from gradguard._watchdog._grad_switch import describe_grad_disabled
from gradguard._watchdog._train_mode import mode_dependent_layer, mode_dependent_layers


class _NoProbe:
    """Stands where no parameter with a gradient was found yet: it has none."""

    grad = None


class _OptimizerView:
    """Which watched models own an optimizer's parameters (cached until something changes).

    Valid while the watchdog's models and the modules' structure are as they were
    (``status.structure``) and the optimizer's groups hold the same ``params`` lists, each as long
    as it was, as many groups as there were (:func:`_is_current`): ``add_param_group``, a group
    given other parameters or more of them change one of those (``load_state_dict`` keeps the
    lists).

    Never changed once in :data:`optimizer_cache`: the step hook reads the probe's list and index
    without a lock, so a probe that moves is a new view put there whole (:meth:`probed_at`), and
    a step in another thread sees either the old pair or the new one, never half of each.
    """

    __slots__ = (
        "all_owned",
        "count",
        "guards",
        "lists",
        "params",
        "probe_index",
        "probe_list",
        "ref",
        "roots",
        "single",
        "structure",
        "watched",
    )

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        key = id(optimizer)
        self.ref = weakref.ref(optimizer, functools.partial(_forget_optimizer, key))
        self.structure = status.structure
        self.lists = tuple(
            (group["params"], len(group["params"])) for group in optimizer.param_groups
        )
        # The one group's list and its length, or None: most optimizers have one group.
        self.single = self.lists[0][0] if len(self.lists) == 1 else None
        self.count = self.lists[0][1] if len(self.lists) == 1 else 0
        # The parameters themselves, by weak reference: ``group["params"][i] = p`` keeps the lists
        # and their lengths, and only the checks after a step that looks wrong compare them.
        self.params = tuple(
            weakref.ref(param) for group in optimizer.param_groups for param in group["params"]
        )
        # id(root) -> its mode-dependent layers, each with the stepped parameters that decide
        # whether it is in the trained part (see _mode_dependent_where_trained); shared by copies.
        self.guards: dict[int, tuple[tuple[weakref.ref[nn.Module], list[torch.Tensor]], ...]] = {}
        self.roots: list[tuple[weakref.ref[nn.Module], list[torch.Tensor]]] = []
        self.all_owned = False
        # The models whose flag each step reads: the roots when they own every parameter stepped
        # (else GG004 is not judged), nothing otherwise.
        self.watched: tuple[weakref.ref[nn.Module], ...] = ()
        # Where the parameter that had a gradient at the last step is (one of the lists above,
        # an index): looked at first, so a step that fine-tunes a head behind a frozen backbone
        # does not scan the backbone. A place, not the parameter: read from the list each time,
        # it is always one the optimizer steps now (the lists are checked to be its lists).
        self.probe_list: list[Any] = [_NoProbe]
        self.probe_index = 0

    def probed_at(self, params: list[Any], index: int) -> _OptimizerView:
        """A copy of this view whose probe is ``params[index]`` (one of its lists)."""
        moved = object.__new__(_OptimizerView)
        for name in _OptimizerView.__slots__:
            setattr(moved, name, getattr(self, name))
        moved.probe_list = params
        moved.probe_index = index
        return moved


def _lists_are(groups: list[dict[str, Any]], lists: tuple[tuple[list[Any], int], ...]) -> bool:
    """Whether ``groups`` hold the ``params`` lists of ``lists``, each as long as it was."""
    if len(groups) != len(lists):
        return False
    for group, (params, count) in zip(groups, lists):
        current = group["params"]
        if current is not params or len(current) != count:
            return False
    return True


def _is_current(view: _OptimizerView, groups: list[dict[str, Any]]) -> bool:
    """Whether ``view`` still describes the optimizer whose ``param_groups`` is ``groups``."""
    return view.structure == status.structure and _lists_are(groups, view.lists)


# id(optimizer) -> its view. Not a WeakKeyDictionary: its lookup makes a weak reference on every
# step. The view's weak reference takes the entry out when the optimizer dies (its callback runs
# before the id can be given to another object), so an entry found is the optimizer's own.
optimizer_cache: dict[int, _OptimizerView] = {}
_cached_view = optimizer_cache.get


def _forget_optimizer(key: int, ref: weakref.ref[torch.optim.Optimizer]) -> None:
    view = optimizer_cache.get(key)
    if view is not None and view.ref is ref:
        optimizer_cache.pop(key, None)  # unwatch() in another thread may have cleared it


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _same_params(view: _OptimizerView, params: list[torch.Tensor]) -> bool:
    """Whether ``view`` was made for exactly ``params`` (a list may be changed in place)."""
    return len(view.params) == len(params) and all(
        ref() is param for ref, param in zip(view.params, params)
    )


def _view_of(optimizer: torch.optim.Optimizer) -> _OptimizerView:
    view = optimizer_cache.get(id(optimizer))
    params = _optimizer_params(optimizer)
    if (
        view is not None
        and view.ref() is optimizer
        and _is_current(view, optimizer.param_groups)
        and _same_params(view, params)
    ):
        return view
    for param in params:
        root = _reach.root_of_parameter(param)
        if root is not None and id(root) not in _reach.models:
            _reach.note(root)
    view = _OptimizerView(optimizer)
    models = _reach.known_models()
    trees = [(model, frozenset(map(id, model.modules()))) for model in models]
    # Only the outermost watched models: a frozen submodule noted by its own eval() belongs
    # to the model around it.
    tops = [
        (model, ids)
        for model, ids in trees
        if not any(other is not model and id(model) in o_ids for other, o_ids in trees)
    ]
    owned: set[int] = set()
    for model, _ids in tops:
        mine = {id(p) for p in model.parameters()}
        stepped = [p for p in params if id(p) in mine]
        if stepped:
            view.roots.append((weakref.ref(model), stepped))
            owned.update(id(p) for p in stepped)
    view.all_owned = all(id(p) in owned for p in params)
    if view.all_owned:
        watched = []
        for ref, _stepped in view.roots:
            watched.append(ref)
            inner = wrapped_model(ref())
            if inner is not None:
                # A wrapper's flag says nothing of what runs: its model's does.
                watched.append(weakref.ref(inner))
        view.watched = tuple(watched)
    optimizer_cache[id(optimizer)] = view
    return view


def _has_gradient(optimizer: torch.optim.Optimizer, view: _OptimizerView) -> bool:
    """Whether some parameter of ``optimizer`` has a gradient (its place kept for the next step).

    ``view`` must be current; where the place is new, a copy of it probing there replaces it in
    the cache (unless another view has replaced it since, which is then the one to keep).
    """
    for params, _count in view.lists:
        for index, param in enumerate(params):
            if param.grad is not None:
                if view.probe_list is not params or view.probe_index != index:
                    key = id(optimizer)
                    if optimizer_cache.get(key) is view:
                        optimizer_cache[key] = view.probed_at(params, index)
                return True
    return False


def _probe_has_gradient(view: _OptimizerView) -> bool:
    """Whether the parameter at ``view``'s probe has a gradient (``view`` must be current)."""
    return view.probe_list[view.probe_index].grad is not None


_pending = _graphs.pending  # mutated in place, never rebound
_built_modules = _built.built  # likewise


def _before_step() -> None:
    if _pending:
        _graphs.flush_pending()
    if _built_modules:
        _built.note_built_safely()


def optimizer_step_pre_hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global optimizer step pre-hook: GG004 and GG005.

    It runs on every step, so the common case (the optimizer's parameter lists are as they were,
    the parameter that had a gradient last time has one, and every model it steps is training)
    is a handful of lookups, written out here.
    """
    if is_dynamo_compiling() or compiler._is_compiling_flag:
        return
    if _pending or _built_modules:
        _before_step()
    view = _cached_view(id(optimizer))
    if view is not None and view.structure == status.structure:
        # _is_current() and _probe_has_gradient() written out: every step asks. One group (the
        # common case) is read without a loop, which costs more than the rest of the hook.
        groups = optimizer.param_groups
        single = view.single
        if single is not None:
            current = (
                len(groups) == 1 and groups[0]["params"] is single and len(single) == view.count
            )
        else:
            current = _lists_are(groups, view.lists)
        if current and view.probe_list[view.probe_index].grad is not None:
            for ref in view.watched:
                model = ref()
                if model is not None and not model.training:
                    break
            else:
                return
    _check_step_safely(optimizer, args, kwargs)


@fail_open("optimizer step")
def _trains_a_part(stepped: list[torch.Tensor]) -> bool:
    """Whether a module owning one of the stepped parameters (with a gradient) is training."""
    for param in stepped:
        if param.grad is None:
            continue
        entry = _reach.param_owner.get(id(param))
        owner = entry[1]() if entry is not None and entry[0]() is param else None
        if owner is not None and owner.training:
            return True
    return False


def _check_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    view = _view_of(optimizer)
    # args holds the optimizer itself first, then step's own arguments.
    if (
        not _probe_has_gradient(view)
        and not _has_gradient(optimizer, view)
        and (args[1] if len(args) > 1 else kwargs.get("closure")) is None
    ):
        why = "backward() was not called since zero_grad(), or it ran on a loss without a graph"
        if not torch.is_grad_enabled():
            why += f" (gradients are disabled {describe_grad_disabled()})"
        site, inside = _findings.user_site_inside()
        report(
            "step-without-gradients",
            f"{type(optimizer).__name__}.step(){inside} ran while none of its parameters has a "
            "gradient, so it changes nothing (plain SGD) or only applies weight decay and "
            f"momentum: {why}",
            "call loss.backward() before optimizer.step(), with gradients enabled",
            site,
        )
        return
    if not view.all_owned:
        return
    for ref, stepped in view.roots:
        model = ref()
        if model is None:
            continue
        switched = model if not model.training else wrapped_in_eval(model)
        if switched is None:
            continue
        if not any(p.grad is not None for p in stepped):
            continue
        if _trains_a_part(stepped):
            continue  # a linear probe: the part being stepped was put in training on purpose
        if not _runs_as_in_evaluation_where_trained(view, model, stepped):
            continue  # no layer in the part being trained runs differently for being in eval
        name = model_name(model)
        if switched is model:
            state = "which is in eval mode as a whole"
        else:
            state = f"whose wrapped {type(switched).__name__} is in eval mode"
        eval_site = _reach.eval_sites.get(switched)
        if eval_site is None:
            how = "switched to eval where the watchdog could not see it"
        else:
            how = f"switched to eval by {eval_site.call} at {eval_site.filename}:{eval_site.lineno}"
            if eval_site.inside:
                how += f", inside {eval_site.inside}"
            if eval_site.caller is not None:
                how += f", called from {eval_site.caller[0]}:{eval_site.caller[1]}"
        site, inside = _findings.user_site_inside()
        report(
            "eval-mode-training",
            f"{type(optimizer).__name__}.step(){inside} is updating the parameters of {name}, "
            f"{state} ({how}), so while it trains its mode-dependent "
            f"layers run as in evaluation: {mode_dependent_layers(model, training=False)}",
            "call model.train() before the training steps (or evaluate with "
            "`with gradguard.evaluating(model):`, which puts the flags back)",
            site,
        )


def _mode_dependent_where_trained(
    model: nn.Module, stepped: list[torch.Tensor]
) -> tuple[tuple[weakref.ref[nn.Module], list[torch.Tensor]], ...]:
    """``model``'s mode-dependent layers, each with the stepped parameters of its part.

    A layer's part is the nearest module around it (itself first) that holds parameters: a
    BatchNorm's own affine parameters, the block around a dropout. A layer whose part has none of
    ``stepped`` sits in a frozen part (a backbone under a linear probe, a frozen BatchNorm), where
    eval mode is what the program wants.
    """
    stepped_ids = {id(param) for param in stepped}
    found: list[tuple[weakref.ref[nn.Module], list[torch.Tensor]]] = []
    seen: set[int] = set()
    everything: list[torch.Tensor] = [p for p in model.parameters() if id(p) in stepped_ids]
    todo: list[tuple[nn.Module, list[torch.Tensor]]] = [(model, everything)]
    while todo:
        module, part = todo.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        own = list(module.parameters())
        if own:
            part = [param for param in own if id(param) in stepped_ids]
        if mode_dependent_layer(module):
            found.append((weakref.ref(module), part))
        todo.extend((child, part) for child in module.children())
    return tuple(found)


def _runs_as_in_evaluation_where_trained(
    view: _OptimizerView, model: nn.Module, stepped: list[torch.Tensor]
) -> bool:
    """Whether a layer in eval sits in a part of ``model`` whose parameters are being stepped."""
    guards = view.guards.get(id(model))
    if guards is None:
        guards = view.guards[id(model)] = _mode_dependent_where_trained(model, stepped)
    for ref, part in guards:
        layer = ref()
        if layer is not None and not layer.training and any(p.grad is not None for p in part):
            return True
    return False


_check_step_safely = fail_open("optimizer step")(_check_step)
