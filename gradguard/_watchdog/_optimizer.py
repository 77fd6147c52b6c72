"""GG004 / GG005: the optimizer step (a model left in eval; a step with no gradient)."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from gradguard._watchdog import _graphs, _reach
from gradguard._watchdog._common import fail_open, is_compiling, model_name, report, status
from gradguard._watchdog._grad_switch import describe_grad_disabled


class _OptimizerView:
    """Which watched models own an optimizer's parameters (cached until something changes)."""

    __slots__ = ("all_owned", "key", "roots")

    def __init__(self, key: tuple[int, ...]) -> None:
        self.key = key
        self.roots: list[tuple[weakref.ref[nn.Module], list[torch.Tensor]]] = []
        self.all_owned = False


optimizer_cache: weakref.WeakKeyDictionary[torch.optim.Optimizer, _OptimizerView] = (
    weakref.WeakKeyDictionary()
)


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _view_of(optimizer: torch.optim.Optimizer) -> _OptimizerView:
    count = sum(len(group["params"]) for group in optimizer.param_groups)
    key = (status.models_version, status.structure, len(optimizer.param_groups), count)
    view = optimizer_cache.get(optimizer)
    if view is not None and view.key == key:
        return view
    params = _optimizer_params(optimizer)
    for param in params:
        root = _reach.root_of_parameter(param)
        if root is not None and id(root) not in _reach.models:
            _reach.note(root)
    key = (status.models_version, status.structure, len(optimizer.param_groups), count)
    view = _OptimizerView(key)
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
    optimizer_cache[optimizer] = view
    return view


def optimizer_step_pre_hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global optimizer step pre-hook: GG004 and GG005."""
    if is_compiling():
        return
    if _graphs.pending:
        _graphs.flush_pending()
    _check_step(optimizer, args, kwargs)


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
    # args holds the optimizer itself first, then step's own arguments.
    closure = args[1] if len(args) > 1 else kwargs.get("closure")
    if closure is None:
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    break
            else:
                continue
            break
        else:
            why = "backward() was not called since zero_grad(), or it ran on a loss without a graph"
            if not torch.is_grad_enabled():
                why += f" (gradients are disabled {describe_grad_disabled()})"
            report(
                "step-without-gradients",
                f"{type(optimizer).__name__}.step() ran while none of its parameters has a "
                "gradient, so it changes nothing (plain SGD) or only applies weight decay and "
                f"momentum: {why}",
                "call loss.backward() before optimizer.step(), with gradients enabled",
            )
            return
    view = _view_of(optimizer)
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
        name = model_name(model)
        report(
            "eval-mode-training",
            f"{type(optimizer).__name__}.step() is updating the parameters of {name}, which is "
            "in eval mode as a whole: it was left in eval after a validation, so dropout is off "
            "and BatchNorm uses and keeps frozen running statistics while it trains",
            "call model.train() before the training loop resumes (or evaluate with "
            "`with gradguard.evaluating(model):`, which puts the flags back)",
        )
