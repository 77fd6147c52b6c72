"""A test suite to run under the watchdog: ``pytest --gradguard examples/test_evaluation.py``.

The first test evaluates correctly and passes. The second validates a model in training mode
under ``torch.no_grad()`` (the forgotten ``model.eval()``): plain ``pytest`` passes it, and
``pytest --gradguard`` fails it with GG002 at the forward's line.
"""

from __future__ import annotations

import torch
from torch import nn

import gradguard


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 2)
    )


def test_evaluation_in_a_scope() -> None:
    model = make_model()
    with gradguard.evaluating(model):
        scores = model(torch.randn(4, 8))
    assert scores.grad_fn is None
    assert model.training


def test_validation_that_forgot_eval() -> None:
    model = make_model()
    model.train()
    with torch.no_grad():
        scores = model(torch.randn(4, 8))  # BatchNorm statistics overwritten, dropout on
    assert scores.shape == (4, 2)
