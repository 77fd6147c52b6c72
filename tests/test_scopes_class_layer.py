"""The GG001 layer of ``evaluating`` on a class: parked between scopes, off at a call outside.

Each test defines its own model classes, so that what a class has in its ``__dict__`` is only what
that test did to it.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar
from unittest import mock

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _layers, _scopes, evaluating


class _Counting(type):
    """A metaclass that records every change of ``__call__`` on its classes."""

    changes: ClassVar[list[str]] = []  # shared: the tests that read it run one at a time

    def __setattr__(cls, name: str, value: Any) -> None:
        if name == "__call__":
            _Counting.changes.append(f"set {cls.__name__}")
        super().__setattr__(name, value)

    def __delattr__(cls, name: str) -> None:
        if name == "__call__":
            _Counting.changes.append(f"del {cls.__name__}")
        super().__delattr__(name)


def _model_class(name: str = "Model", base: type = nn.Module) -> Any:
    """A fresh model class (a Linear and a Dropout), counted by :class:`_Counting`."""

    def __init__(self: nn.Module) -> None:
        base.__init__(self)
        self.fc = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc(x))  # type: ignore[no-any-return]

    namespace = {"__init__": __init__, "forward": forward} if base is nn.Module else {}
    return _Counting(name, (base,), namespace)


def _layer_names() -> list[str]:
    return [name for name in vars(_layers) if name.startswith("layer_")]


X = torch.randn(2, 4)


def test_scopes_in_a_row_change_the_class_call_once() -> None:
    """Five scopes in a row on one model give its class gradguard's layer once, the same object."""
    cls = _model_class()
    model = cls()
    _Counting.changes.clear()
    with evaluating(model):
        layer = vars(cls)["__call__"]
        model(X)
    for _ in range(4):
        assert vars(cls)["__call__"] is layer  # parked between scopes
        with evaluating(model):
            assert vars(cls)["__call__"] is layer
            model(X)
    assert _Counting.changes == ["set Model"]
    assert model.training


def test_a_call_outside_any_scope_gives_the_class_its_own_call_back() -> None:
    """The first call outside the scopes takes the parked layer off: nothing of gradguard's left."""
    cls = _model_class()
    model = cls()
    names = _layer_names()
    with evaluating(model):
        model(X)
    assert "__call__" in vars(cls)
    _Counting.changes.clear()
    torch.manual_seed(0)
    out = model(X)  # a training forward after validation
    assert _Counting.changes == ["del Model"]
    assert "__call__" not in vars(cls)
    assert cls.__call__ is nn.Module.__call__
    assert _layers.OWN not in vars(cls)
    assert _layer_names() == names
    torch.manual_seed(0)
    torch.testing.assert_close(out, nn.Module.__call__(model, X))  # the same forward, training
    assert out.requires_grad
    model(X)
    assert _Counting.changes == ["del Model"]  # once


class OwnCall(nn.Linear):
    """A model class with a ``__call__`` of its own, which the class must get back."""

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        return 2 * super().__call__(*args, **kwargs)


def test_a_class_of_its_own_call_gets_that_call_back_at_a_call_outside() -> None:
    """A class defining ``__call__`` keeps it under the parked layer and gets it back after."""
    own = vars(OwnCall)["__call__"]
    model = OwnCall(4, 4)
    with evaluating(model):
        pass
    assert vars(OwnCall)["__call__"] is not own
    assert vars(OwnCall)[_layers.OWN] is own
    torch.testing.assert_close(model(X), 2 * nn.Linear.__call__(model, X))
    assert vars(OwnCall)["__call__"] is own
    assert _layers.OWN not in vars(OwnCall)


def test_a_parked_layer_reports_graph_in_inference_when_a_scope_opens_again() -> None:
    """GG001 through the parked layer, used again by the next scope, at the model's line."""
    cls = _model_class("Parked")
    model = cls()
    with evaluating(model):
        layer = vars(cls)["__call__"]
    with evaluating(model):
        assert vars(cls)["__call__"] is layer
        with (
            torch.enable_grad(),
            pytest.warns(gradguard.GraphInInferenceWarning, match="Parked ran forward"),
        ):
            model(X)
    assert [finding.code for finding in gradguard.findings()] == ["GG001"]
    with torch.enable_grad():
        model.eval()
        model(X)  # outside any scope: no GG001 (the filter would raise it), and the layer is off
        model.train()
    assert "__call__" not in vars(cls)


def test_other_instances_and_subclass_instances_inside_a_scope_keep_the_layer() -> None:
    """Inside a scope on one instance, calls of another instance or of a subclass's instance
    neither take the layer off nor report GG001 for models the scope was not given."""
    base = _model_class("Base")
    sub = _model_class("Sub", base)
    held, other, child = base(), base(), sub()
    with evaluating(held):
        layer = vars(base)["__call__"]
    _Counting.changes.clear()
    with evaluating(held), torch.enable_grad():
        other(X)
        child(X)
        assert vars(base)["__call__"] is layer
        assert "__call__" not in vars(sub)
    assert vars(base)["__call__"] is layer
    assert _Counting.changes == []
    assert gradguard.findings() == []


def test_a_subclass_scope_takes_the_base_classes_parked_layer_off_and_still_reports() -> None:
    """A scope on a subclass's instance only: the base class's parked layer comes off at the call
    (no scope is open on the base class), the subclass's layer reports GG001."""
    base = _model_class("Base")
    sub = _model_class("Sub", base)
    with evaluating(base()):
        pass
    assert "__call__" in vars(base)
    child = sub()
    with (
        evaluating(child),
        torch.enable_grad(),
        pytest.warns(gradguard.GraphInInferenceWarning, match="Sub ran forward"),
    ):
        child(X)
        assert "__call__" not in vars(base)
        assert "__call__" in vars(sub)
    child(X)
    assert "__call__" not in vars(sub)


def test_a_parked_layer_under_the_watchdogs_comes_out_and_the_watchdog_keeps_checking() -> None:
    """The watchdog's layer on top of a parked one: a call outside the scopes splices the parked
    one out, the watchdog still checks, and unwatch() leaves the class as defined, silently."""
    cls = _model_class("Under")
    model = cls()
    with evaluating(model):
        pass
    parked = vars(cls)["__call__"]
    with gradguard.watch():
        model.eval()  # noted: the watchdog's layer goes on top of the parked one
        watching = vars(cls)["__call__"]
        assert watching is not parked
        with torch.no_grad():
            model(X)  # outside any scope: the parked layer is spliced out from under
        assert vars(cls)["__call__"] is watching
        model.train()
        with (
            torch.no_grad(),
            pytest.warns(gradguard.TrainModeWithoutGradWarning, match="Under"),
        ):
            model(X)
    assert "__call__" not in vars(cls)
    assert [finding.code for finding in gradguard.findings()] == ["GG002"]


def test_a_call_outside_while_another_thread_opens_scopes_loses_nothing() -> None:
    """One thread calls the model class outside any scope while another keeps opening scopes on
    another instance of it: no exception, GG001 found in every scope, the layer parked after the
    last scope, and a call outside in a third thread takes it off."""
    cls = _model_class("Shared")
    trained, served = cls(), cls()
    rounds = 300
    errors: list[BaseException] = []
    found: list[int] = []
    start = threading.Barrier(2)

    def training() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                out = trained(X)
                assert out.requires_grad
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    def serving() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                with evaluating(served):
                    assert not served(X).requires_grad
                    with torch.enable_grad(), pytest.raises(gradguard.GradGuardError):
                        served(X)
                found.append(1)
        except BaseException as error:
            errors.append(error)

    gradguard.configure(strict=True)
    threads = [threading.Thread(target=training), threading.Thread(target=serving)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(found) == rounds
    assert trained.training and served.training
    with evaluating(served):
        layer = vars(cls)["__call__"]
    assert vars(cls)["__call__"] is layer
    outside = threading.Thread(target=trained, args=(X,))
    outside.start()
    outside.join()
    assert "__call__" not in vars(cls)


def test_a_parked_layer_is_traced_through_by_torch_compile_and_left_in_place() -> None:
    """A fullgraph compile of a model whose class has a parked layer traces through it (no graph
    break) and does not change the class; the next eager call outside a scope takes it off."""
    torch._dynamo.reset()
    cls = _model_class("Compiled")
    model = cls().eval()
    with evaluating(model):
        pass
    layer = vars(cls)["__call__"]
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(X), model.fc(X))
        assert vars(cls)["__call__"] is layer  # compiling never changes a class
        model(X)
    assert "__call__" not in vars(cls)


def test_a_parked_layer_taken_off_by_other_code_is_replaced_by_the_next_scope() -> None:
    """A patch of the class's ``__call__`` that ends after a scope puts back what it found,
    dropping the parked layer with it: the next scope puts a layer on again and reports GG001."""
    cls = _model_class("Patched")
    model = cls()
    names = _layer_names()
    with mock.patch.object(cls, "__call__", nn.Module.__call__), evaluating(model):
        dropped = vars(cls)["__call__"]
    assert "__call__" not in vars(cls)  # the patch took its attribute, and ours on it, away
    with evaluating(model):
        assert vars(cls)["__call__"] is not dropped
        with (
            torch.enable_grad(),
            pytest.warns(gradguard.GraphInInferenceWarning, match="Patched ran forward"),
        ):
            model(X)
    model(X)
    assert "__call__" not in vars(cls)
    assert _layer_names() == names


def test_a_parked_layer_wrapped_by_other_code_comes_off_once_the_wrapper_is_gone() -> None:
    """Other code wraps the class's ``__call__`` over the parked layer and, done, puts the layer
    back where it found it: the next call outside a scope gives the class its own call back."""
    cls = _model_class("Wrapped")
    model = cls()
    names = _layer_names()
    with evaluating(model):
        model(X)
    parked = vars(cls)["__call__"]
    calls: list[str] = []

    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        calls.append("wrapped")
        return parked(self, *args, **kwargs)

    with mock.patch.object(cls, "__call__", wrapper):
        model(X)  # ours, under the wrapper, cannot come off: it passes the call on
        model(X)
    assert calls == ["wrapped", "wrapped"]
    assert vars(cls)["__call__"] is parked  # the patch put back what it found
    model(X)
    assert "__call__" not in vars(cls)
    assert _layer_names() == names
    with (
        evaluating(model),
        torch.enable_grad(),
        pytest.warns(gradguard.GraphInInferenceWarning, match="Wrapped ran forward"),
    ):
        model(X)
    model(X)
    assert "__call__" not in vars(cls)
    assert _layer_names() == names


def test_take_off_parked_takes_off_a_layer_that_other_code_wrapped_and_unwrapped() -> None:
    """``take_off_parked`` (between tests) leaves no layer that a finished wrapper put back."""
    cls = _model_class("Unwrapped")
    model = cls()
    names = _layer_names()
    with evaluating(model):
        model(X)
    parked = vars(cls)["__call__"]
    with mock.patch.object(cls, "__call__", lambda self, *a, **k: parked(self, *a, **k)):
        model(X)
    _scopes.take_off_parked()
    assert "__call__" not in vars(cls)
    assert _layer_names() == names


def test_a_class_refusing_to_lose_the_layer_is_asked_once() -> None:
    """A class that refuses to have its ``__call__`` taken off keeps the layer, inert: later
    calls run through it without asking the class again."""
    attempts: list[str] = []

    class Refusing(_Counting):
        def __delattr__(cls, name: str) -> None:
            if name == "__call__":
                attempts.append(name)
                raise TypeError("this class keeps its __call__")
            super().__delattr__(name)

    cls = Refusing("Refused", (_model_class("RefusedBase"),), {})
    model = cls()
    with evaluating(model):
        model(X)
    for _ in range(3):
        assert model(X).shape == X.shape
    assert attempts == ["__call__"]
