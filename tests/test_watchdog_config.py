"""The watchdog's configuration is validated up front; a check's failure path never raises."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _watchdog
from gradguard._watchdog import _train_mode


def model_in_training() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.2))
    model.train()
    return model


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    gradguard.unwatch()
    gradguard.clear_findings()
    gradguard.configure(strict=None)
    yield
    gradguard.unwatch()
    gradguard.clear_findings()
    gradguard.configure(strict=None)


def test_watch_refuses_an_invalid_strict_variable_before_installing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GRADGUARD_STRICT=2: watch() raises ValueError naming it and the valid values."""
    monkeypatch.setenv("GRADGUARD_STRICT", "2")
    with pytest.raises(ValueError, match=r"GRADGUARD_STRICT='2' is not a valid value: use one of"):
        gradguard.watch()
    assert not _watchdog.is_watching()


def test_watch_environment_variable_refuses_an_invalid_strict_at_import() -> None:
    """GRADGUARD_WATCH=1 with GRADGUARD_STRICT=2 fails at import, not in a later forward."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    env.update(GRADGUARD_WATCH="1", GRADGUARD_STRICT="2")
    done = subprocess.run(
        [sys.executable, "-c", "import gradguard"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert "GRADGUARD_STRICT='2' is not a valid value" in done.stderr


def test_strict_variable_spoilt_while_watching_lets_findings_warn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GRADGUARD_STRICT made invalid after watch(): findings warn, never a ValueError."""
    model = model_in_training()
    with gradguard.watch():
        model.train()
        monkeypatch.setenv("GRADGUARD_STRICT", "2")
        with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.no_grad():
            model(torch.randn(2, 4))
        with pytest.warns(gradguard.ScopeStateChangedWarning), gradguard.evaluating(model):
            model.train()
    assert [f.code for f in gradguard.findings()] == ["GG002", "GG006"]


def test_watch_strict_raises_internal_errors_as_configure_strict_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """watch(strict=True) raises GG000 as GradGuardError, like configure(strict=True)."""

    def broken(module: nn.Module) -> bool:
        raise KeyError("boom")

    monkeypatch.setattr(_train_mode, "mode_dependent", broken)
    model = model_in_training()
    with gradguard.watch(strict=True):
        model.train()
        with pytest.raises(gradguard.GradGuardError, match="GG000"), torch.no_grad():
            model(torch.randn(2, 4))
    gradguard.clear_findings()
    gradguard.configure(strict=True)
    with gradguard.watch():
        model.train()
        with pytest.raises(gradguard.GradGuardError, match="GG000"), torch.no_grad():
            model(torch.randn(2, 4))


def test_plugin_refuses_an_invalid_strict_variable_up_front(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest --gradguard with GRADGUARD_STRICT=2 stops with a usage error naming it."""
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    monkeypatch.setenv("GRADGUARD_STRICT", "2")
    result = pytester.runpytest_subprocess("--gradguard")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*gradguard: GRADGUARD_STRICT='2' is not a valid value*"])
