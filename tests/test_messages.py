"""What the watchdog's messages claim is what it observed: the eval() line, the layers present."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import gradguard

HERE = os.path.abspath(__file__)


def here() -> int:
    """The caller's current line."""
    return sys._getframe(1).f_lineno


@pytest.fixture
def watched() -> Iterator[gradguard.WatchHandle]:
    gradguard.unwatch()
    handle = gradguard.watch()
    yield handle
    handle.close()
    gradguard.unwatch()


def dropout_only() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 2), nn.Dropout())


def step(model: nn.Module) -> str:
    """One optimizer step on ``model``; the GG004 message it gives."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model(torch.randn(4, 8)).sum().backward()
    with pytest.warns(gradguard.EvalModeTrainingWarning) as caught:
        optimizer.step()
    (warning,) = caught
    return str(warning.message)


def test_gg004_names_the_line_of_the_eval_call_and_only_the_layers_present(
    watched: gradguard.WatchHandle,
) -> None:
    """The message points at the eval() that switched the model, names its two Dropout layers,
    and claims neither BatchNorm (it has none) nor a validation (none was seen)."""
    model = dropout_only()
    line = here() + 1
    model.eval()
    message = step(model)
    assert f"(switched to eval by eval() at {HERE}:{line})" in message
    assert message.endswith(
        "its mode-dependent layers run as in evaluation: 2 Dropout (off)\n"
        "Fix: call model.train() before the training steps (or evaluate with "
        "`with gradguard.evaluating(model):`, which puts the flags back)"
    )
    assert "BatchNorm" not in message
    assert "validation" not in message


def test_gg004_names_train_false_and_batchnorm_statistics(watched: gradguard.WatchHandle) -> None:
    """train(False) is named as such; a BatchNorm is described by what it does in eval."""
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    line = here() + 1
    model.train(False)
    message = step(model)
    assert f"switched to eval by train(False) at {HERE}:{line}" in message
    assert "1 BatchNorm1d (using frozen running statistics)" in message
    assert "Dropout" not in message


def test_gg004_says_so_when_the_switch_was_not_seen(watched: gradguard.WatchHandle) -> None:
    """Flags set directly (no eval() call to see): the message says the switch was not seen."""
    model = dropout_only()
    for module in model.modules():
        module.training = False
    message = step(model)
    assert "(switched to eval where the watchdog could not see it)" in message


def test_gg004_from_a_library_names_the_library_line_and_the_program_line(
    watched: gradguard.WatchHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval() called inside an installed package (as from_pretrained() does) names that line
    and the program's own line that called into the package."""
    package = tmp_path / "site-packages" / "modelhub"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """\
            from torch import nn


            def load():
                model = nn.Sequential(nn.Linear(8, 8), nn.Dropout())
                model.eval()  # line 6: libraries hand back loaded models in eval
                return model
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site-packages"))
    import modelhub

    line = here() + 1
    model = modelhub.load()
    message = step(model)
    library = os.path.join(str(package), "__init__.py")
    assert f"switched to eval by eval() at {library}:6, called from {HERE}:{line}" in message


def test_gg004_is_silent_for_a_model_that_eval_does_not_change(
    watched: gradguard.WatchHandle,
) -> None:
    """A model without dropout, normalisation statistics or a forward reading self.training
    trains the same in eval mode: no finding."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()
    assert gradguard.findings() == []


def test_a_later_train_call_forgets_the_eval_site(watched: gradguard.WatchHandle) -> None:
    """train() after eval() and a later eval(): the message names the later eval() line."""
    model = dropout_only()
    model.eval()
    model.train()
    line = here() + 1
    model.eval()
    assert f"switched to eval by eval() at {HERE}:{line})" in step(model)


def test_gg002_names_only_the_layers_the_model_has(watched: gradguard.WatchHandle) -> None:
    """A BatchNorm-only model in training mode under no_grad: its BatchNorm, and no dropout."""
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8)).train()
    with torch.no_grad(), pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught:
        model(torch.randn(4, 8))
    message = str(caught[0].message).split("\nFix:")[0]
    assert "ran as in training: 1 BatchNorm1d (updating its running statistics)." in message
    assert "ropout" not in message
