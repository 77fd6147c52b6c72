"""Reach: a model that is only ever called is seen at the default level, from its construction.

No global forward hook: the model is remembered as it is built (PyTorch's registration hooks) or
unpickled, and noted when gradients go off or an optimizer steps.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _watchdog
from gradguard._watchdog import _built

HERE = os.path.abspath(__file__)


def here() -> int:
    """The caller's current line: call it on the line of the statement under test."""
    return sys._getframe(1).f_lineno


class Policy(nn.Module):
    """pytorch/examples' REINFORCE policy: affine, dropout 0.6, ReLU, affine, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.affine1 = nn.Linear(4, 128)
        self.dropout = nn.Dropout(p=0.6)
        self.affine2 = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.dropout(self.affine1(x)))
        return torch.softmax(self.affine2(x), dim=1)


def rollout(policy: nn.Module, steps: int = 5) -> list[int]:
    """Act greedily for a few steps of a made-up environment."""
    actions = []
    state = torch.zeros(1, 4)
    for _ in range(steps):
        probs = policy(state)
        action = int(probs.argmax())
        actions.append(action)
        state = state + (1.0 if action else -1.0) * 0.1
    return actions


ROLLOUT_FORWARD = rollout.__code__.co_firstlineno + 5


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    """Each test starts unwatched with no findings, and leaves no watchdog behind."""
    gradguard.unwatch()
    gradguard.clear_findings()
    yield
    gradguard.unwatch()
    gradguard.clear_findings()


def test_rollout_under_no_grad_of_a_policy_only_ever_called_is_found() -> None:
    """REINFORCE: a policy built and never switched, rolled out under no_grad: GG002."""
    with gradguard.watch():
        torch.manual_seed(0)
        policy = Policy()  # left in training mode: dropout is active in the rollout
        with pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught, torch.no_grad():
            rollout(policy)
    assert [(f.code, f.filename, f.lineno, f.count) for f in gradguard.findings()] == [
        ("GG002", HERE, ROLLOUT_FORWARD, 5)
    ]
    assert caught[0].message.args[0].startswith(  # type: ignore[union-attr]
        "GG002 train-mode-without-grad: Policy is in training mode"
    )


def test_rollout_in_a_no_grad_decorated_function_is_found() -> None:
    """The same through @torch.no_grad() on the rollout function."""
    evaluate = torch.no_grad()(rollout)
    with gradguard.watch():
        policy = Policy()
        with pytest.warns(gradguard.TrainModeWithoutGradWarning):
            evaluate(policy)
    assert [(f.code, f.lineno) for f in gradguard.findings()] == [("GG002", ROLLOUT_FORWARD)]


def test_rollout_under_inference_mode_is_found() -> None:
    """The same under torch.inference_mode(), which never goes through set_grad_enabled."""
    with gradguard.watch():
        policy = Policy()
        with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.inference_mode():
            rollout(policy)
    assert [(f.code, f.lineno) for f in gradguard.findings()] == [("GG002", ROLLOUT_FORWARD)]


def test_unpickled_policy_only_ever_called_is_found() -> None:
    """A whole pickled policy loaded with torch.load and rolled out under no_grad: GG002."""
    buffer = io.BytesIO()
    torch.save(Policy(), buffer)
    with gradguard.watch():
        buffer.seek(0)
        policy = torch.load(buffer, weights_only=False)
        with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.no_grad():
            rollout(policy)
        seen = _watchdog.known_models()
        assert policy in seen and not any(m in seen for m in policy.children())
    assert [(f.code, f.lineno) for f in gradguard.findings()] == [("GG002", ROLLOUT_FORWARD)]


def test_a_model_in_eval_only_ever_called_stays_silent() -> None:
    """Correct code: built, put in eval by the library that made it, rolled out: nothing."""
    with gradguard.watch(), warnings.catch_warnings():
        warnings.simplefilter("error")
        policy = Policy()
        policy.eval()
        with torch.no_grad():
            rollout(policy)
    assert gradguard.findings() == []


def test_the_root_is_noted_not_a_submodule_initialised_under_no_grad() -> None:
    """Parameter initialisation (and a model's own __init__) under no_grad notes no submodule."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.empty(4, 4))
            with torch.no_grad():  # its own initialisation, while it is being built
                self.weight.normal_()
            self.dropout = nn.Dropout()

    class Initialised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()
            self.head = nn.Linear(4, 2)

    with gradguard.watch():
        model = Initialised()
        with torch.no_grad():
            pass
        seen = _watchdog.known_models()
        assert model in seen and model.block not in seen and model.head not in seen
        assert not model.block._forward_pre_hooks and not model.head._forward_pre_hooks
        assert _built.built == {}


def test_modules_built_and_dropped_are_not_kept_in_memory() -> None:
    """Modules built in a loop with no grad switch or step: nothing accumulates for them."""
    with gradguard.watch():
        for _ in range(100):
            nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        assert len(_built.built) < 10


def test_models_built_before_watch_are_not_seen_until_touched() -> None:
    """What the default level cannot see: a model built before watch(), only ever called."""
    policy = Policy()
    with gradguard.watch(), warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            rollout(policy)
        assert policy not in _watchdog.known_models()


REINFORCE = """\
import torch
from torch import nn


class Policy(nn.Module):
    def __init__(self):
        super().__init__()
        self.affine1 = nn.Linear(4, 128)
        self.dropout = nn.Dropout(p=0.6)
        self.affine2 = nn.Linear(128, 2)

    def forward(self, x):
        x = torch.relu(self.dropout(self.affine1(x)))
        return torch.softmax(self.affine2(x), dim=1)


policy = Policy()
state = torch.zeros(1, 4)
with torch.no_grad():
    for _ in range(10):
        action = policy(state).argmax().item()
        state = state + (1.0 if action else -1.0) * 0.1
print("rolled out", flush=True)
"""


def test_gradguard_run_finds_the_rollout_of_a_policy_only_ever_called(tmp_path: Path) -> None:
    """`gradguard run` on an evaluation rollout script: GG002 at the policy's call."""
    script = tmp_path / "reinforce_eval.py"
    script.write_text(textwrap.dedent(REINFORCE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    result = subprocess.run(
        [sys.executable, "-m", "gradguard", "run", script.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"  GG002 train-mode-without-grad at {script}:21 (10 times)\n" in result.stderr
