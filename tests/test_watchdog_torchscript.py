"""The watchdog and TorchScript: ScriptModules are watched, and models script as unwatched."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _watchdog

HERE = os.path.abspath(__file__)
DEPRECATED = r"torch\.jit\.(script|trace|trace_method)` is deprecated"


class Net(nn.Module):
    """A small classifier with BatchNorm and dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def batch() -> torch.Tensor:
    return torch.randn(4, 8)


def script(model: nn.Module) -> Any:
    with pytest.warns(DeprecationWarning, match=DEPRECATED):
        return torch.jit.script(model)


def trace(model: nn.Module) -> Any:
    with pytest.warns(DeprecationWarning, match=DEPRECATED):
        return torch.jit.trace(model, batch())


def unmangled(graph: object) -> str:
    """A graph's text without the per-compilation counters in its type names."""
    return re.sub(r"___torch_mangle_\d+", "", str(graph))


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    gradguard.unwatch()
    gradguard.clear_findings()
    gradguard.configure(strict=None)
    yield
    gradguard.unwatch()
    gradguard.clear_findings()
    gradguard.configure(strict=None)


def test_watched_model_scripts_and_traces_exactly_as_unwatched() -> None:
    """torch.jit.script/trace of a watched model give the code and graph of an unwatched one."""
    model = Net()
    model.train()
    unwatched_script = script(model)
    model.eval()
    unwatched_trace = trace(model)
    with gradguard.watch():
        model.train()
        assert model in _watchdog.known_models()
        scripted = script(model)
        model.eval()
        traced = trace(model)
    assert scripted.code == unwatched_script.code
    assert unmangled(scripted.graph) == unmangled(unwatched_script.graph)
    assert traced.code == unwatched_trace.code
    assert unmangled(traced.graph) == unmangled(unwatched_trace.graph)
    assert gradguard.findings() == []


@pytest.mark.parametrize("compile_", [script, trace], ids=["scripted", "traced"])
def test_script_modules_switch_modes_and_scopes_without_internal_errors(compile_: Any) -> None:
    """train()/eval()/to()/evaluating on scripted and traced modules: no GG000, even strict."""
    compiled = compile_(Net().eval())
    with gradguard.watch(strict=True):
        compiled.train()
        compiled.eval()
        compiled.to(torch.float32)
        with gradguard.evaluating(compiled):
            compiled(batch())
        assert compiled in _watchdog.known_models()
    assert gradguard.findings() == []
    assert not compiled.training


def test_watch_after_a_scope_over_a_scripted_module_installs() -> None:
    """watch() while a scope holds a ScriptModule installs cleanly and watches it."""
    scripted = script(Net())
    with gradguard.evaluating(scripted), gradguard.watch():
        assert _watchdog.is_watching()
        assert scripted in _watchdog.known_models()
        scripted(batch())
    assert gradguard.findings() == []
    assert scripted.training


def test_scripted_model_in_training_mode_under_no_grad_is_found() -> None:
    """A scripted model with dropout run in training mode under no_grad: GG002 at the call."""
    scripted = script(Net())
    with gradguard.watch():
        scripted.train()
        with pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught, torch.no_grad():
            line = sys._getframe().f_lineno + 1
            scripted(batch())
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]
    assert [f.code for f in gradguard.findings()] == ["GG002"]


def test_traced_model_is_not_blamed_for_its_mode() -> None:
    """A traced model's mode was fixed when traced: running it in train() under no_grad is fine."""
    traced = trace(Net().eval())
    with gradguard.watch(strict=True):
        traced.train()
        with torch.no_grad():
            traced(batch())
    assert gradguard.findings() == []


def test_script_module_graph_built_in_eval_is_found() -> None:
    """An eval ScriptModule run with gradients on, its graph dropped: GG001, as for nn.Module."""
    scripted = script(Net())
    with pytest.warns(gradguard.GraphInInferenceWarning), gradguard.watch():
        scripted.eval()
        scripted(batch())
    assert [f.code for f in gradguard.findings()] == ["GG001"]


def test_plugin_passes_a_test_that_evaluates_a_script_module(pytester: pytest.Pytester) -> None:
    """Under pytest --gradguard, a correct test that only evaluates a ScriptModule passes."""
    pytester.makepyfile(
        test_scripted="""
        import warnings
        import torch
        from torch import nn
        import gradguard

        def test_scripted_inference():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                scripted = torch.jit.script(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.2)))
            scripted.eval()
            with gradguard.evaluating(scripted):
                scripted(torch.randn(1, 2))
            with torch.no_grad():
                scripted(torch.randn(1, 2))
        """
    )
    result = pytester.runpytest_subprocess("--gradguard", "-W", "error")
    result.assert_outcomes(passed=1)


def test_fx_trace_of_a_model_holding_a_watched_class_keeps_its_leaves() -> None:
    """torch.fx still sees calls of a watched class's instances (a Linear watched as a model)."""
    leaf = nn.Linear(8, 8)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    unwatched = str(torch.fx.symbolic_trace(model).graph)
    with gradguard.watch():
        leaf.eval()  # nn.Linear's class now checks its calls
        assert "__call__" in vars(nn.Linear)
        watched = str(torch.fx.symbolic_trace(model).graph)
    assert watched == unwatched
    assert "call_module[target=0]" in watched
