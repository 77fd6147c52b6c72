"""GG103 where the model is put in training in ways the flow pass does not follow yet.

Each snippet is correct code: the model is in training mode at every ``optimizer.step()``.
"""

from __future__ import annotations

import textwrap

import pytest

from gradguard.lint._analysis import analyze

TRAINING_CONTEXT_MANAGER = """\
import torch
from contextlib import contextmanager


@contextmanager
def training(model):
    model.train()
    try:
        yield
    finally:
        model.eval()


def fit(model, x):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.eval()
    with training(model):
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
"""

LOOP_OVER_MODELS = """\
import torch


def fit(encoder, decoder, x):
    optimizer = torch.optim.SGD([*encoder.parameters(), *decoder.parameters()], lr=0.1)
    encoder.eval()
    decoder.eval()
    for net in (encoder, decoder):
        net.train()
    optimizer.zero_grad()
    decoder(encoder(x)).sum().backward()
    optimizer.step()
"""

LOOP_OVER_MODELS_IN_A_HELPER = """\
import torch


def step(model, optimizer, x):
    for part in (model,):
        part.train()
    optimizer.zero_grad()
    model(x).sum().backward()
    optimizer.step()


def main(model, x):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.eval()
    step(model, optimizer, x)
"""

UNBOUND_TRAIN_IN_A_HELPER = """\
import torch
from torch import nn


def step(model, optimizer, x):
    nn.Module.train(model)
    optimizer.zero_grad()
    model(x).sum().backward()
    optimizer.step()


def main(model, x):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.eval()
    step(model, optimizer, x)
"""


@pytest.mark.xfail(
    strict=True,
    reason="a @contextmanager helper's call is taken to run its whole body, finally included, "
    "at the `with`: the eval() of its exit is seen before the block",
)
def test_a_training_context_manager_is_not_a_step_in_eval_mode() -> None:
    codes = [f.code for f in analyze(textwrap.dedent(TRAINING_CONTEXT_MANAGER), "fit.py")]
    assert "GG103" not in codes


@pytest.mark.xfail(
    strict=True,
    reason="a for loop over a literal tuple of models is taken to maybe run zero times, and its "
    "target's train() is not carried to the models it names",
)
def test_a_loop_putting_each_model_in_training_is_not_a_step_in_eval_mode() -> None:
    codes = [f.code for f in analyze(textwrap.dedent(LOOP_OVER_MODELS), "fit.py")]
    assert "GG103" not in codes


@pytest.mark.xfail(
    strict=True,
    reason="a for loop over a literal tuple is taken to maybe run zero times: the path that "
    "skips the loop leaves the model as it was handed over",
)
def test_a_helper_training_its_model_through_a_loop_is_not_a_step_in_eval_mode() -> None:
    codes = [f.code for f in analyze(textwrap.dedent(LOOP_OVER_MODELS_IN_A_HELPER), "fit.py")]
    assert "GG103" not in codes


def test_a_helper_calling_module_train_unbound_is_not_a_step_in_eval_mode() -> None:
    codes = [f.code for f in analyze(textwrap.dedent(UNBOUND_TRAIN_IN_A_HELPER), "fit.py")]
    assert "GG103" not in codes
