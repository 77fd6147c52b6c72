"""A model switched inside its DataParallel wrapper: judged by its own flags, not the wrapper's.

``wrapper.module.eval()`` (or ``net.eval()`` on the model later wrapped) leaves the wrapper's own
flag in training while every layer runs as in evaluation; the watchdog judges by the model inside.
The distributed case (DistributedDataParallel, gloo) is in ``test_watchdog_distributed.py``.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _watchdog

HERE = os.path.abspath(__file__)


def here() -> int:
    return sys._getframe(1).f_lineno


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.fixture(autouse=True)
def _watched() -> Iterator[None]:
    gradguard.unwatch()
    gradguard.clear_findings()
    gradguard.configure(strict=None)
    with gradguard.watch():
        yield
    gradguard.clear_findings()


def step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.randint(0, 3, (4,))).backward()


def test_step_after_the_wrapped_model_was_switched_to_eval_is_gg004() -> None:
    """DataParallel(net) trained, net.eval() for a look, steps resume: GG004 at the step."""
    net = Net()
    wrapped = nn.DataParallel(net)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    wrapped.train()
    step(wrapped, optimizer)
    optimizer.step()
    assert gradguard.findings() == []
    eval_line = here() + 1
    net.eval()  # the inner model, not the wrapper: wrapped.training stays True
    assert wrapped.training
    step(wrapped, optimizer)
    with pytest.warns(gradguard.EvalModeTrainingWarning) as caught:
        line = here() + 1
        optimizer.step()
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]
    message = str(caught[0].message)
    assert "DataParallel(Net)" in message
    assert "whose wrapped Net is in eval mode" in message
    assert f"eval() at {HERE}:{eval_line}" in message
    assert "1 Dropout (off)" in message


def test_wrapped_model_in_training_steps_silently() -> None:
    """The same loop with net.train() before the steps resume: nothing, and the fast path again."""
    net = Net()
    wrapped = nn.DataParallel(net)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    for _ in range(3):
        wrapped.train()
        step(wrapped, optimizer)
        optimizer.step()
        net.eval()
        with torch.no_grad():
            wrapped(torch.randn(4, 8))
        net.train()
    assert gradguard.findings() == []


def test_forward_with_gradients_through_a_wrapper_around_an_eval_model_is_gg001() -> None:
    """DataParallel(net.eval()).to(device) run with gradients on, its graph dropped unused: GG001.

    The wrapper is the watched model (moved, so seen); the model inside speaks through it.
    """
    net = Net().eval()
    wrapped = nn.DataParallel(net).to("cpu")
    assert wrapped.training
    line = here() + 1
    total = sum(wrapped(torch.randn(4, 8)).sum() for _ in range(2))
    del total
    gc.collect()
    with pytest.warns(gradguard.GraphInInferenceWarning) as caught:
        _watchdog.flush()
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]
    assert "DataParallel(Net) is in eval mode" in str(caught[0].message)


def test_wrapper_training_with_gradients_keeps_no_graph_record() -> None:
    """A training forward through the wrapper, its graph used by backward: nothing."""
    net = Net()
    wrapped = nn.DataParallel(net)
    wrapped(torch.randn(4, 8)).sum().backward()
    gc.collect()
    _watchdog.flush()
    assert gradguard.findings() == []
