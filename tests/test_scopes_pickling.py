"""An open evaluating() leaves no trace on its models: saved or copied inside it, they are as if
no scope were open."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import gradguard

# A model module of the user's own, importable by a fresh interpreter that has no gradguard.
MODEL_SOURCE = """
from torch import nn


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.2))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.body(x))
"""

LOAD_WITHOUT_GRADGUARD = """
import sys
import torch

model = torch.load(sys.argv[1], weights_only=False)
try:
    import gradguard  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("gradguard is importable here: the check would prove nothing")
assert "gradguard" not in sys.modules
assert model.training
model.eval()
with torch.no_grad():
    model(torch.randn(3, 4))
print("loaded")
"""


@pytest.fixture
def classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    (tmp_path / "netdef.py").write_text(MODEL_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "netdef", raising=False)
    import netdef

    model: nn.Module = netdef.Classifier()
    return model


def test_model_saved_inside_evaluating_loads_where_gradguard_is_absent(
    classifier: nn.Module, tmp_path: Path
) -> None:
    """torch.save inside the scope: a fresh interpreter without gradguard loads the model."""
    path = tmp_path / "model.pt"
    with gradguard.evaluating(classifier):
        classifier(torch.randn(3, 4))
        classifier.train()  # saved in training mode, the mode it will be loaded to train in
        torch.save(classifier, path)
        classifier.eval()
    assert b"gradguard" not in path.read_bytes()
    # -S: no site-packages processing, so the editable install's path entry is not added;
    # torch's own folder and the model's are put on the path by hand.
    bootstrap = textwrap.dedent(
        f"""
        import sys, runpy
        sys.path[:0] = [{str(tmp_path)!r}, {sysconfig.get_paths()["purelib"]!r}]
        sys.argv = ["load.py", {str(path)!r}]
        runpy.run_path({str(tmp_path / "load.py")!r}, run_name="__main__")
        """
    )
    (tmp_path / "load.py").write_text(LOAD_WITHOUT_GRADGUARD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    done = subprocess.run(
        [sys.executable, "-S", "-c", bootstrap],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "loaded"


def test_pickle_and_deepcopy_inside_evaluating_are_those_of_the_model_outside(
    classifier: nn.Module,
) -> None:
    """pickle.dumps inside the scope is the bytes outside it; a deep copy has no hook of ours."""
    classifier.eval()  # the flags the scope holds, so that only a hook could tell them apart
    outside = pickle.dumps(classifier)
    with gradguard.evaluating(classifier):
        inside = pickle.dumps(classifier)
        twin = copy.deepcopy(classifier)
    assert b"gradguard" not in inside
    assert inside == outside
    for module in twin.modules():
        assert not module._forward_hooks, type(module).__name__
    assert b"gradguard" not in pickle.dumps(twin)


def test_graph_inside_evaluating_is_still_reported_and_class_call_given_back(
    classifier: nn.Module,
) -> None:
    """GG001 still fires for the scope's model, not for a copy, and the class is as before once
    the model runs outside the scope."""
    cls = type(classifier)
    own = cls.__dict__.get("__call__")
    with gradguard.evaluating(classifier):
        twin = copy.deepcopy(classifier)
        with torch.enable_grad():
            twin(torch.randn(3, 4))  # not the scope's model: no finding
            with pytest.warns(gradguard.GraphInInferenceWarning, match="Classifier ran forward"):
                classifier(torch.randn(3, 4))
    classifier(torch.randn(3, 4))  # the first call outside a scope takes the parked layer off
    assert cls.__dict__.get("__call__") is own
    assert not classifier._forward_hooks
