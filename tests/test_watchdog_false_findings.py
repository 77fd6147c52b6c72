"""Legal code the watchdog must not report, and lines it must not blame."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import gradguard
from tests.helpers import Encoder, Probe

HERE = os.path.abspath(__file__)


@pytest.fixture(autouse=True)
def _watched() -> Iterator[None]:
    gradguard.unwatch()
    gradguard.clear_findings()
    gradguard.configure(strict=None)
    with gradguard.watch(strict=True):
        yield
    gradguard.clear_findings()


def test_reentrant_checkpoint_in_a_training_step_is_not_gg002() -> None:
    """checkpoint(encoder, x, use_reentrant=True) runs its first forward without grad by design."""
    encoder, head = Encoder(), nn.Linear(16, 3)
    encoder.train()
    head.train()
    optimizer = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.1)
    x = torch.randn(4, 8, requires_grad=True)
    for use_reentrant in (True, False):
        loss = head(checkpoint(encoder, x, use_reentrant=use_reentrant)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert gradguard.findings() == []


def test_training_mode_under_no_grad_is_still_found_outside_checkpointing() -> None:
    """The same encoder in training mode under a plain no_grad is still GG002."""
    encoder = Encoder()
    encoder.train()
    with pytest.raises(gradguard.GradGuardError, match="GG002"), torch.no_grad():
        encoder(torch.randn(4, 8))


def test_linear_probe_on_an_eval_backbone_is_not_gg004() -> None:
    """model.eval(); model.head.train(); stepping only the head is a linear probe, not GG004."""
    model = Probe()
    model.eval()
    model.head.train()
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        optimizer.step()
    assert gradguard.findings() == []


def test_model_left_in_eval_is_still_gg004() -> None:
    """Stepping the parameters of a model wholly in eval is still GG004."""
    model = Probe()
    model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 8)).sum().backward()
    with pytest.raises(gradguard.GradGuardError, match="GG004"):
        optimizer.step()


def test_gg002_blames_the_users_bare_switch_not_inference_fns_own() -> None:
    """A bare set_grad_enabled(False), then an @inference_fn call: GG002 names the bare line."""

    @gradguard.inference_fn
    def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    evaluated, trained = Encoder(), Encoder()
    trained.train()
    gradguard.configure(strict=False)
    with gradguard.watch(strict=False):
        bare = sys._getframe().f_lineno + 1
        torch.set_grad_enabled(False)
        try:
            predict(evaluated, torch.randn(4, 8))
            with pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught:
                trained(torch.randn(4, 8))
        finally:
            torch.set_grad_enabled(True)
    assert f"by torch.set_grad_enabled(False) at {HERE}:{bare}" in str(caught[0].message)


def test_wrapper_in_training_around_an_eval_model_is_not_gg002() -> None:
    """nn.DataParallel(model.eval()) is in training mode itself; no layer of it runs as training."""
    model = Encoder()
    model.eval()
    wrapped = nn.DataParallel(model)  # a fresh module: training=True, around layers all in eval
    assert wrapped.training
    with torch.no_grad():
        wrapped(torch.randn(4, 8))
    # The same pattern written by hand: a root in training whose mode-dependent layers are in eval.
    model = Probe()
    model.train()
    model.encoder.eval()
    with torch.no_grad():
        model(torch.randn(4, 8))
    assert gradguard.findings() == []


def test_gg002_names_only_the_layers_that_ran_as_in_training() -> None:
    """BatchNorm frozen in eval, dropout left in training: GG002 names the dropout alone."""
    model = Encoder()
    model.train()
    model.body[1].eval()
    with pytest.raises(gradguard.GradGuardError, match="GG002") as raised, torch.no_grad():
        model(torch.randn(4, 8))
    message = str(raised.value)
    assert "1 Dropout (active)" in message
    assert "BatchNorm1d" not in message


def test_gg004_needs_a_layer_that_runs_as_in_evaluation() -> None:
    """A root left in eval whose mode-dependent layers were all put back in training: no GG004."""
    model = Probe()
    model.eval()
    model.encoder.train()  # every BatchNorm and Dropout of the model is in here
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)  # only the head, still in eval
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()
    assert gradguard.findings() == []



def test_fx_symbolic_trace_under_no_grad_is_not_gg002() -> None:
    """Tracing runs no real forward: a part of a watched class left in training is not GG002."""
    Encoder().eval()  # a model of its own: Encoder's class now checks its instances' calls
    probe = Probe().train()
    with torch.no_grad():
        traced = torch.fx.symbolic_trace(probe)
    assert gradguard.findings() == []
    with torch.no_grad(), pytest.raises(gradguard.GradGuardError, match="GG002"):
        traced(torch.randn(4, 8))  # the traced module's real forward is checked
