"""Property-based tests: random module trees, random flags, random nesting, random exceptions."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from gradguard import _state, evaluating, frozen


class CustomTrain(nn.Module):
    """A container whose train() override records calls and defers to Module.train."""

    def __init__(self, *children: nn.Module) -> None:
        super().__init__()
        self.inner = nn.ModuleList(children)
        self.calls = 0

    def train(self, mode: bool = True) -> CustomTrain:
        self.calls += 1
        return super().train(mode)


LEAVES = [
    lambda: nn.Linear(3, 3),
    lambda: nn.BatchNorm1d(3),
    lambda: nn.Dropout(0.1),
    lambda: nn.LayerNorm(3),
]

trees = st.recursive(
    st.integers(0, len(LEAVES) - 1),
    lambda children: st.tuples(st.sampled_from(["seq", "custom"]), st.lists(children, max_size=4)),
    max_leaves=12,
)


def build(spec: Any) -> nn.Module:
    if isinstance(spec, int):
        return LEAVES[spec]()
    kind, children = spec
    built = [build(child) for child in children]
    return nn.Sequential(*built) if kind == "seq" else CustomTrain(*built)


class Planned(Exception):
    """Raised at a drawn point of the nesting."""


operations = st.lists(
    st.tuples(
        st.sampled_from(["no_grad", "inference", "grad", "frozen", "frozen_eval"]),
        st.integers(0, 1000),  # which submodule, modulo the tree's size
    ),
    min_size=1,
    max_size=5,
)


def snapshot(root: nn.Module) -> tuple[list[bool], list[bool], bool, bool]:
    return (
        [m.training for m in root.modules()],
        [p.requires_grad for p in root.parameters()],
        torch.is_grad_enabled(),
        torch.is_inference_mode_enabled(),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=trees,
    data=st.data(),
    ops=operations,
    raise_at=st.integers(0, 6),
    grad_before=st.booleans(),
)
def test_random_trees_nesting_and_exceptions_restore_exactly(
    spec: Any, data: st.DataObject, ops: list[tuple[str, int]], raise_at: int, grad_before: bool
) -> None:
    """Whatever the tree, flags, nesting and exception point, every flag comes back exactly."""
    root = nn.Sequential(build(spec))
    modules = list(root.modules())
    for module in modules:
        module.training = data.draw(st.booleans())
    for param in root.parameters():
        param.requires_grad_(data.draw(st.booleans()))

    with torch.set_grad_enabled(grad_before):
        before = snapshot(root)
        try:
            with ExitStack() as stack:
                for depth, (kind, pick) in enumerate(ops):
                    target = modules[pick % len(modules)]
                    if depth == raise_at:
                        raise Planned
                    if kind == "frozen":
                        stack.enter_context(frozen(target))
                        assert not any(p.requires_grad for p in target.parameters())
                    elif kind == "frozen_eval":
                        stack.enter_context(frozen(target, eval=True))
                        assert not any(m.training for m in target.modules())
                        assert not any(p.requires_grad for p in target.parameters())
                    else:
                        stack.enter_context(evaluating(target, mode=kind))  # type: ignore[arg-type]
                        assert not any(m.training for m in target.modules())
                        if kind != "grad":
                            assert not torch.is_grad_enabled()
                if raise_at == len(ops):
                    raise Planned
        except Planned:
            pass
        assert snapshot(root) == before
    assert _state.held_counts() == (0, 0)


@settings(max_examples=60, deadline=None)
@given(spec=trees, data=st.data(), order=st.permutations(range(3)))
def test_overlapping_scopes_closed_in_any_order_restore_exactly(
    spec: Any, data: st.DataObject, order: list[int]
) -> None:
    """Three scopes over random (possibly overlapping) submodules, closed in any order."""
    root = nn.Sequential(build(spec), nn.Dropout())
    modules = list(root.modules())
    for module in modules:
        module.training = data.draw(st.booleans())
    before = [m.training for m in modules]
    targets = [modules[data.draw(st.integers(0, len(modules) - 1))] for _ in range(3)]
    scopes = [evaluating(target, mode="grad") for target in targets]
    for scope in scopes:
        scope.__enter__()
    held = {id(m) for t in targets for m in t.modules()}
    for step, index in enumerate(order):
        scopes[index].__exit__(None, None, None)
        still = {id(m) for i in order[step + 1 :] for m in targets[i].modules()}
        for module in modules:
            if id(module) in still:
                assert not module.training
        assert held  # the draw always holds something
    assert [m.training for m in modules] == before


class RefusesTrain(nn.Module):
    """A train() override that raises when asked for ``refused`` (a buggy user override)."""

    def __init__(self, refused: bool) -> None:
        super().__init__()
        self.refused = refused
        self.inner = nn.Dropout(0.1)

    def train(self, mode: bool = True) -> RefusesTrain:
        if mode is self.refused:
            raise Refused(f"train({mode}) refused")
        return super().train(mode)


class StubbornParameter(nn.Parameter):
    """A parameter that cannot be made to stop requiring gradients."""

    @property  # type: ignore[override]
    def requires_grad(self) -> bool:
        return True

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if not value:
            raise Refused("requires_grad=False refused")


class Refused(Exception):
    """Raised by a module or parameter that refuses to switch."""


def _stubborn_linear() -> nn.Module:
    layer = nn.Linear(3, 3)
    layer.weight = StubbornParameter(torch.randn(3, 3))
    return layer


def _inference_built_linear() -> nn.Module:
    with torch.inference_mode():
        return nn.Linear(3, 3)


HOSTILE_LEAVES = [
    *LEAVES,
    lambda: RefusesTrain(refused=True),  # raises when its flag is restored to True
    lambda: RefusesTrain(refused=False),  # raises when switched to eval
    _stubborn_linear,
    _inference_built_linear,
]

hostile_trees = st.recursive(
    st.integers(0, len(HOSTILE_LEAVES) - 1),
    lambda children: st.tuples(st.sampled_from(["seq", "custom"]), st.lists(children, max_size=4)),
    max_leaves=10,
)


def build_hostile(spec: Any) -> nn.Module:
    if isinstance(spec, int):
        return HOSTILE_LEAVES[spec]()
    kind, children = spec
    built = [build_hostile(child) for child in children]
    return nn.Sequential(*built) if kind == "seq" else CustomTrain(*built)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=hostile_trees,
    data=st.data(),
    ops=operations,
    raise_at=st.integers(0, 6),
    grad_before=st.booleans(),
)
def test_failing_overrides_and_parameters_never_leave_anything_switched(
    spec: Any, data: st.DataObject, ops: list[tuple[str, int]], raise_at: int, grad_before: bool
) -> None:
    """Overrides that raise and parameters that refuse: whatever fails, every flag comes back."""
    root = nn.Sequential(build_hostile(spec))
    modules = list(root.modules())
    for module in modules:
        object.__setattr__(module, "training", data.draw(st.booleans()))
    for param in root.parameters():
        if isinstance(param, StubbornParameter):
            continue
        # A parameter made under inference_mode may be switched only inside it.
        with torch.inference_mode(param.is_inference()):
            param.requires_grad_(data.draw(st.booleans()))

    with torch.set_grad_enabled(grad_before):
        before = snapshot(root)
        try:
            with ExitStack() as stack:
                for depth, (kind, pick) in enumerate(ops):
                    target = modules[pick % len(modules)]
                    if depth == raise_at:
                        raise Planned
                    if kind == "frozen":
                        stack.enter_context(frozen(target))
                    elif kind == "frozen_eval":
                        stack.enter_context(frozen(target, eval=True))
                    else:
                        stack.enter_context(evaluating(target, mode=kind))  # type: ignore[arg-type]
                if raise_at == len(ops):
                    raise Planned
        except (Planned, Refused):
            pass
        assert snapshot(root) == before
    assert _state.held_counts() == (0, 0)
