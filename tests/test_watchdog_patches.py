"""unwatch() takes out only gradguard's own layer, and says so when it cannot."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _watchdog

ORIGINAL_TRAIN = nn.Module.__dict__["train"]
ORIGINAL_EVAL = nn.Module.__dict__["eval"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    gradguard.unwatch()
    gradguard.clear_findings()
    yield
    gradguard.unwatch()
    gradguard.clear_findings()
    nn.Module.train = ORIGINAL_TRAIN  # type: ignore[method-assign]
    vars(Net).get("__call__") and delattr(Net, "__call__")  # type: ignore[func-returns-value]


def _counting(wrapped: Callable[..., Any], calls: list[str]) -> Callable[..., Any]:
    def tool(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(type(self).__name__)
        return wrapped(self, *args, **kwargs)

    return tool


def test_unwatch_keeps_another_tools_wrapper_applied_after_watch() -> None:
    """A tool wrapping nn.Module.train after watch() keeps working after unwatch(), told so."""
    calls: list[str] = []
    gradguard.watch()
    tool = _counting(nn.Module.train, calls)
    nn.Module.train = tool  # type: ignore[method-assign]
    with pytest.warns(RuntimeWarning, match=r"other code wrapped torch\.nn\.modules\.module\.tr"):
        gradguard.unwatch()
    assert nn.Module.__dict__["train"] is tool
    assert nn.Module.__dict__["eval"] is ORIGINAL_EVAL
    model = Net()
    model.train(False)
    assert calls == ["Net", "Sequential", "Linear", "Dropout"]
    assert not model.training
    assert _watchdog.known_models() == []  # gradguard's layer under the tool does nothing


def test_unwatch_keeps_a_wrapper_of_a_watched_class_call() -> None:
    """A tool wrapping a watched model's class __call__ keeps it; ours passes calls through."""
    calls: list[str] = []
    model = Net()
    gradguard.watch()
    model.eval()
    tool = _counting(Net.__call__, calls)
    Net.__call__ = tool  # type: ignore[method-assign]
    with pytest.warns(RuntimeWarning, match=r"other code wrapped .*Net\.__call__"):
        gradguard.unwatch()
    assert vars(Net)["__call__"] is tool
    model(torch.randn(2, 4))  # an eval forward with grad: no finding once unwatched
    assert calls == ["Net"]
    assert gradguard.findings() == []


def test_unwatch_without_other_tools_restores_silently() -> None:
    """With nobody else patching, unwatch() restores every attribute and warns nothing."""
    model = Net()
    gradguard.watch()
    model.eval()
    gradguard.unwatch()
    assert nn.Module.__dict__["train"] is ORIGINAL_TRAIN
    assert "__call__" not in vars(Net)


@pytest.mark.parametrize("order", ["unwatch-inside-scope", "scope-exit-inside-watch"])
def test_scope_and_watchdog_layers_on_one_class_come_off_in_any_order(order: str) -> None:
    """A scope's and the watchdog's __call__ layers on one class: either removed first, the
    class gets its own call back (the scope's at the first call outside it), with no warning
    that other code wrapped it."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())
    cls = torch.nn.Sequential
    assert "__call__" not in vars(cls)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if order == "unwatch-inside-scope":
            handle = gradguard.watch()
            with gradguard.evaluating(model):
                handle.close()
                assert not model.training
        else:
            with gradguard.evaluating(model):
                handle = gradguard.watch()
                model.eval()  # noted by the watchdog while the scope's layer is on the class
            handle.close()
        model(torch.randn(2, 4))
    assert "__call__" not in vars(cls)
    assert cls.__call__ is torch.nn.Module.__call__
    fresh = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert type(fresh).__call__ is torch.nn.Module.__call__
    assert model.training


TORCH_CALL = nn.Module.__dict__["__call__"]


@pytest.mark.parametrize("leaves", ["after-unwatch", "while-watched-again"])
def test_deep_layer_left_under_a_tool_comes_off_once_the_tool_leaves(leaves: str) -> None:
    """deep=True's layer stays under a tool that wrapped nn.Module.__call__ (told so); once the
    tool puts back what it found, the next watch(deep=True) still checks, and its close gives
    nn.Module PyTorch's own __call__ back, with no word of other code."""
    calls: list[str] = []
    try:
        handle = gradguard.watch(deep=True)
        found = nn.Module.__dict__["__call__"]
        nn.Module.__call__ = _counting(found, calls)  # type: ignore[method-assign]
        with pytest.warns(RuntimeWarning, match=r"other code wrapped .*Module\.__call__"):
            handle.close()
        if leaves == "after-unwatch":
            nn.Module.__call__ = found  # type: ignore[method-assign]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            handle = gradguard.watch(deep=True)
            if leaves == "while-watched-again":
                nn.Module.__call__ = found  # type: ignore[method-assign]
            model = Net()
            with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.no_grad():
                model(torch.randn(2, 4))
            assert _watchdog.known_models() == [model]
            handle.close()
        assert nn.Module.__dict__["__call__"] is TORCH_CALL
    finally:
        nn.Module.__call__ = TORCH_CALL  # type: ignore[method-assign]
