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
)
from gradguard._watchdog._grad_switch import describe_grad_disabled
from gradguard._watchdog._train_mode import mode_dependent, mode_dependent_layers, runs_as_in


class _OptimizerView:
    """Which watched models own an optimizer's parameters (cached until something changes).

    Valid while the watchdog's models and the modules' structure are as they were
    (``status.models_version``, ``status.structure``) and the optimizer has the same
    ``param_groups`` list whose groups hold the same ``params`` lists, each as long as it was
    (:func:`_is_current`): ``add_param_group``, ``load_state_dict``, a group given other
    parameters or more of them change one of those.
    """

    __slots__ = ("all_owned", "groups", "lists", "models_version", "probe_at", "roots", "structure")

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        self.models_version = status.models_version
        self.structure = status.structure
        self.groups = groups
        self.lists = [(group["params"], len(group["params"])) for group in groups]
        self.roots: list[tuple[weakref.ref[nn.Module], list[torch.Tensor]]] = []
        self.all_owned = False
        # Where the parameter that had a gradient at the last step is (its group's params list,
        # its index): looked at first, so a step that fine-tunes a head behind a frozen backbone
        # does not scan the backbone. A place, not the parameter: read from the list each time,
        # it is always one the optimizer steps now.
        self.probe_at: tuple[list[torch.Tensor], int] | None = None


def _is_current(view: _OptimizerView, groups: list[dict[str, Any]]) -> bool:
    """Whether ``view`` still describes the optimizer whose ``param_groups`` is ``groups``."""
    lists = view.lists
    if (
        view.groups is not groups
        or view.models_version != status.models_version
        or view.structure != status.structure
        or len(groups) != len(lists)
    ):
        return False
    for index, group in enumerate(groups):
        params, count = lists[index]
        current = group["params"]
        if current is not params or len(current) != count:
            return False
    return True


# id(optimizer) -> (weak reference, view). Not a WeakKeyDictionary: its lookup makes a weak
# reference on every step.
optimizer_cache: dict[int, tuple[weakref.ref[torch.optim.Optimizer], _OptimizerView]] = {}


def _forget_optimizer(key: int, ref: weakref.ref[torch.optim.Optimizer]) -> None:
    entry = optimizer_cache.get(key)
    if entry is not None and entry[0] is ref:
        del optimizer_cache[key]


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _view_of(optimizer: torch.optim.Optimizer) -> _OptimizerView:
    groups = optimizer.param_groups
    entry = optimizer_cache.get(id(optimizer))
    if entry is not None and entry[0]() is optimizer and _is_current(entry[1], groups):
        return entry[1]
    params = _optimizer_params(optimizer)
    for param in params:
        root = _reach.root_of_parameter(param)
        if root is not None and id(root) not in _reach.models:
            _reach.note(root)
    view = _OptimizerView(groups)
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
    reference = weakref.ref(optimizer, functools.partial(_forget_optimizer, id(optimizer)))
    optimizer_cache[id(optimizer)] = (reference, view)
    return view


def _has_gradient(optimizer: torch.optim.Optimizer, view: _OptimizerView) -> bool:
    """Whether some parameter of ``optimizer`` has a gradient (its place kept in ``view``)."""
    for group in optimizer.param_groups:
        params = group["params"]
        for index, param in enumerate(params):
            if param.grad is not None:
                view.probe_at = (params, index)
                return True
    return False


def _probe_has_gradient(view: _OptimizerView) -> bool:
    """Whether the parameter at ``view``'s probe has a gradient (``view`` must be current)."""
    probe_at = view.probe_at
    return probe_at is not None and probe_at[0][probe_at[1]].grad is not None


_pending = _graphs.pending  # mutated in place, never rebound
_built_modules = _built.built  # likewise


def optimizer_step_pre_hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global optimizer step pre-hook: GG004 and GG005.

    It runs on every step, so the common case (the parameter that had a gradient last time has
    one, and every model it steps is training) is a handful of lookups.
    """
    if is_dynamo_compiling() or compiler._is_compiling_flag:
        return
    if _pending:
        _graphs.flush_pending()
    if _built_modules:
        _built.note_built_safely()
    entry = optimizer_cache.get(id(optimizer))
    if entry is not None and entry[0]() is optimizer:
        # _is_current() and _probe_has_gradient() written out: every step asks.
        view = entry[1]
        groups = optimizer.param_groups
        lists = view.lists
        probe_at = view.probe_at
        current = (
            probe_at is not None
            and view.groups is groups
            and view.models_version == status.models_version
            and view.structure == status.structure
            and len(groups) == len(lists)
        )
        if current:
            index = 0
            for group in groups:
                params, count = lists[index]
                listed = group["params"]
                if listed is not params or len(listed) != count:
                    current = False
                    break
                index += 1  # noqa: SIM113  # enumerate() costs more here, on every step
        if current and probe_at[0][probe_at[1]].grad is not None:  # type: ignore[index]
            if not view.all_owned:
                return
            for ref, _stepped in view.roots:
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
        if model is None or model.training:
            continue
        if not any(p.grad is not None for p in stepped):
            continue
        if _trains_a_part(stepped):
            continue  # a linear probe: the part being stepped was put in training on purpose
        if not mode_dependent(model) or not runs_as_in(model, training=False):
            continue  # no layer of this model runs differently for being in eval
        name = model_name(model)
        eval_site = _reach.eval_sites.get(model)
        if eval_site is None:
            switched = "switched to eval where the watchdog could not see it"
        else:
            switched = (
                f"switched to eval by {eval_site.call} at {eval_site.filename}:{eval_site.lineno}"
            )
            if eval_site.caller is not None:
                switched += f", called from {eval_site.caller[0]}:{eval_site.caller[1]}"
        site, inside = _findings.user_site_inside()
        report(
            "eval-mode-training",
            f"{type(optimizer).__name__}.step(){inside} is updating the parameters of {name}, "
            f"which is in eval mode as a whole ({switched}), so while it trains its mode-dependent "
            f"layers run as in evaluation: {mode_dependent_layers(model, training=False)}",
            "call model.train() before the training steps (or evaluate with "
            "`with gradguard.evaluating(model):`, which puts the flags back)",
            site,
        )


_check_step_safely = fail_open("optimizer step")(_check_step)
