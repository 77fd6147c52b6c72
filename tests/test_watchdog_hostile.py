"""Legal programs that once went wrong under the watchdog: modes, frozen parts, swapped params."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import gradguard
from tests.helpers import Encoder, Probe


class _Backend:
    """Holds the flag outside the module, as a C++ module does for torch.nn.cpp.ModuleWrapper."""

    training = True


class FlagOutside(nn.Module):
    """A module whose ``training`` is a property passing the flag on (torch.nn.cpp's pattern)."""

    def __init__(self) -> None:
        self.backend = _Backend()
        super().__init__()
        self.linear = nn.Linear(2, 2)

    @property  # type: ignore[override]
    def training(self) -> bool:
        return self.backend.training

    @training.setter
    def training(self, mode: bool) -> None:
        self.backend.training = mode


@pytest.fixture(autouse=True)
def _watched() -> Iterator[None]:
    gradguard.unwatch()
    with gradguard.watch(strict=True):
        yield
    gradguard.clear_findings()


def _step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()


def test_eval_of_a_module_whose_flag_is_a_property_goes_through_its_setter() -> None:
    """eval()/train() set a property-backed flag as PyTorch does, and add no attribute."""
    module = FlagOutside()
    keys = sorted(vars(module))
    module.eval()
    assert module.backend.training is False
    assert module.training is False
    assert module.linear.training is False
    assert "training" not in vars(module)
    module.train()
    assert module.backend.training is True
    assert sorted(vars(module)) == keys


@pytest.mark.parametrize("stepped", ["head", "all"])
def test_frozen_backbone_in_eval_training_its_head_is_not_gg004(stepped: str) -> None:
    """model.eval() with a frozen encoder: stepping the (mode-free) head is a linear probe."""
    model = Probe()
    model.eval()
    model.encoder.requires_grad_(False)
    params = model.head.parameters() if stepped == "head" else model.parameters()
    optimizer = torch.optim.SGD(params, lr=0.1)
    for _ in range(3):
        _step(model, optimizer)
    assert gradguard.findings() == []


def test_eval_dropout_in_the_trained_part_is_still_gg004() -> None:
    """The encoder frozen, but the head trained with its own dropout switched off: GG004."""
    model = nn.Sequential(Encoder(), nn.Dropout(0.5), nn.Linear(16, 3))
    model.eval()
    model[0].requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(gradguard.GradGuardError, match="GG004"):
        _step(model, optimizer)


def test_params_swapped_into_an_optimizer_in_place_are_judged_as_they_are_now() -> None:
    """group['params'][i] = p: the step is judged by the model that owns the params now."""
    old, new = Probe(), Probe()
    optimizer = torch.optim.SGD(old.parameters(), lr=0.1)
    _step(old, optimizer)
    for index, param in enumerate(new.parameters()):
        optimizer.param_groups[0]["params"][index] = param
    old.eval()  # kept as a frozen reference, its last gradients still there
    for _ in range(2):
        _step(new, optimizer)
    assert gradguard.findings() == []
    new.eval()  # and a real mistake on the params stepped now is still found
    with pytest.raises(gradguard.GradGuardError, match="GG004"):
        _step(new, optimizer)


class Paused(nn.Module):
    """An eval-mode classifier whose forward waits, so that another thread can act meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.drop = nn.Dropout()
        self.entered = threading.Event()
        self.proceed = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.proceed.wait(10)
        return self.drop(self.linear(x))


def test_forward_in_flight_when_the_watchdog_closes_reports_nothing_in_the_next_watch() -> None:
    """A forward still running in a thread as watch() closes: nothing of it reaches a new watch."""
    gradguard.unwatch()
    model = Paused()
    handle = gradguard.watch(strict=True)
    model.eval()
    outputs: list[torch.Tensor] = []
    thread = threading.Thread(target=lambda: outputs.append(model(torch.randn(1, 2))))
    thread.start()
    assert model.entered.wait(10)
    handle.close()
    model.proceed.set()
    thread.join(10)
    assert len(outputs) == 1
    outputs.clear()  # its graph, built with gradients on while nobody watched, dies unused
    gc.collect()
    with gradguard.watch(strict=True):
        net = nn.Linear(2, 2)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        net(torch.randn(1, 2)).sum().backward()
        optimizer.step()
    assert gradguard.findings() == []
