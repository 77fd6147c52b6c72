"""The watchdog leaves no trace on models: saved, pickled and copied models are as if unwatched."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _watchdog

# A model module of the user's own, importable by a fresh interpreter that has no gradguard.
MODEL_SOURCE = """
import torch
from torch import nn


class LanguageModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Embedding(20, 8)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.decoder = nn.Linear(8, 20)

    def forward(self, tokens):
        out, _ = self.rnn(self.drop(self.encoder(tokens)))
        return self.decoder(self.drop(out))
"""

# Trains two steps, evaluates, and saves the model and its state_dict in every usual way; the
# same whether watched or not. argv: output folder.
TRAIN_AND_SAVE = """
import copy, pickle, sys
import torch
from netdef import LanguageModel

torch.manual_seed(0)
model = LanguageModel()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
tokens = torch.randint(0, 20, (4, 6))
for _ in range(2):
    model.train()
    loss = model(tokens).logsumexp(-1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval()
with torch.no_grad():
    model(tokens)
out = sys.argv[1]
torch.save(model, out + "/model.pt")
torch.save(model.state_dict(), out + "/state.pt")
torch.save({"model": model, "optimizer": optimizer.state_dict()}, out + "/checkpoint.pt")
with open(out + "/model.pickle", "wb") as f:
    pickle.dump(model, f)
torch.save(copy.deepcopy(model), out + "/deepcopy.pt")
# The script loads its own checkpoint back, as pytorch/examples' word_language_model does.
with torch.serialization.safe_globals([LanguageModel, torch.nn.Embedding, torch.nn.LSTM,
                                       torch.nn.Dropout, torch.nn.Linear]):
    torch.load(out + "/model.pt", weights_only=True)
print("saved")
"""

# Loads every file in a fresh interpreter that cannot import gradguard.
LOAD_WITHOUT_GRADGUARD = """
import importlib.util, pickle, sys
assert importlib.util.find_spec("gradguard") is None, "gradguard is importable"
import torch
from netdef import LanguageModel
folder = sys.argv[1]
model = torch.load(folder + "/model.pt", weights_only=False)
assert type(model) is LanguageModel and not model.training
torch.load(folder + "/checkpoint.pt", weights_only=False)
torch.load(folder + "/deepcopy.pt", weights_only=False)
with open(folder + "/model.pickle", "rb") as f:
    pickle.load(f)
state = torch.load(folder + "/state.pt", weights_only=True)
model.load_state_dict(state)
with torch.serialization.safe_globals([LanguageModel, torch.nn.Embedding, torch.nn.LSTM,
                                       torch.nn.Dropout, torch.nn.Linear]):
    torch.load(folder + "/model.pt", weights_only=True)
for m in model.modules():
    assert not m._forward_pre_hooks and not m._forward_hooks, m
print("loaded")
"""

FILES = ("model.pt", "state.pt", "checkpoint.pt", "model.pickle", "deepcopy.pt")


class Net(nn.Module):
    """A small classifier with BatchNorm and dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    gradguard.unwatch()
    gradguard.clear_findings()
    yield
    gradguard.unwatch()
    gradguard.clear_findings()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}


def _save(folder: Path, name: str, watched: bool) -> Path:
    out = folder / name
    out.mkdir()
    script = folder / "train_and_save.py"
    command = [sys.executable, "-m", "gradguard", "run", "--strict", str(script), str(out)]
    if not watched:
        command = [sys.executable, str(script), str(out)]
    done = subprocess.run(
        command, cwd=folder, capture_output=True, text=True, env=_env(), timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "saved" in done.stdout
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model module and the training script, with its files saved once under `gradguard run`.

    Both tests read the watched run's files; each run is a fresh interpreter training and saving
    in the same way, so one run serves both.
    """
    folder = tmp_path_factory.mktemp("pickling")
    (folder / "netdef.py").write_text(MODEL_SOURCE)
    (folder / "train_and_save.py").write_text(TRAIN_AND_SAVE)
    _save(folder, "watched", watched=True)
    return folder


def test_checkpoint_saved_while_watched_is_byte_for_byte_an_unwatched_one(saved: Path) -> None:
    """Under `gradguard run`, torch.save/pickle/deepcopy write exactly what plain python writes."""
    plain = _save(saved, "plain", watched=False)
    watched = saved / "watched"
    for name in FILES:
        data = (watched / name).read_bytes()
        assert b"gradguard" not in data, name
        if name != "model.pickle":  # plain pickle of an LSTM differs from run to run anyway
            assert data == (plain / name).read_bytes(), name


def test_checkpoint_saved_while_watched_loads_where_gradguard_is_absent(saved: Path) -> None:
    """A fresh interpreter without gradguard on its path loads it, weights_only True and False."""
    (saved / "load.py").write_text(LOAD_WITHOUT_GRADGUARD)
    watched = saved / "watched"
    # -S: no site-packages processing, so the editable install's path entry is not added;
    # torch's own folder and the model's are put on the path by hand.
    bootstrap = textwrap.dedent(
        f"""
        import sys, runpy
        sys.path[:0] = [{str(saved)!r}, {sysconfig.get_paths()["purelib"]!r}]
        sys.argv = ["load.py", {str(watched)!r}]
        runpy.run_path({str(saved / "load.py")!r}, run_name="__main__")
        """
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", bootstrap],
        cwd=saved,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "loaded"


def _use(model: nn.Module) -> bytes:
    torch.manual_seed(1)
    model.train()
    model(torch.randn(4, 8)).sum().backward()
    model.eval()
    with torch.no_grad():
        model(torch.randn(4, 8))
    model(torch.randn(4, 8))  # an eval forward with grad: GG001 tracks its graph
    return pickle.dumps(model)


def test_pickle_of_a_watched_model_is_its_unwatched_pickle() -> None:
    """pickle.dumps of a watched, used model is the bytes of the same model once unwatched."""
    model = Net()
    with pytest.warns(gradguard.GraphInInferenceWarning), gradguard.watch():
        watched = _use(model)
        assert model in _watchdog.known_models()
    assert b"gradguard" not in watched
    assert watched == pickle.dumps(model)


@pytest.mark.parametrize(
    "copier",
    [copy.copy, copy.deepcopy, lambda model: model._replicate_for_data_parallel()],
    ids=["copy", "deepcopy", "replicate_for_data_parallel"],
)
def test_copies_share_and_keep_nothing_of_the_watchdog(copier: object) -> None:
    """A copy made while watched, and its original, carry no hook and stay hook-free after."""
    model = Net()
    with gradguard.watch():
        model.eval()
        duplicate = copier(model)  # type: ignore[operator]
        for module in (model, duplicate):
            assert not module._forward_pre_hooks and not module._forward_hooks
        with torch.no_grad():
            duplicate(torch.randn(4, 8))
            model(torch.randn(4, 8))
    for module in (*model.modules(), *duplicate.modules()):
        assert not module._forward_pre_hooks and not module._forward_hooks
        assert not module._forward_hooks_always_called
    assert "__call__" not in vars(Net)


# Defines its models in __main__ (as a script does), so cloudpickle copies their classes by value,
# class dict and all, the way Ray, Dask and submitit send a script's model to a worker. argv:
# output file, then "watch", "scope" or "parked" (after a scope, its layer still on the classes).
SEND_BY_VALUE = """
import sys
import cloudpickle
import torch
from torch import nn
import gradguard


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.fc(x))


class Doubling(Net):
    def __call__(self, *args, **kwargs):  # a class of its own call, kept in the copy
        return 2 * super().__call__(*args, **kwargs)


torch.manual_seed(0)
models = [Net().eval(), Doubling().eval()]
x = torch.ones(1, 4)
if sys.argv[2] == "watch":
    with gradguard.watch(strict=True):
        for model in models:
            model.train()
            model.eval()
            with torch.no_grad():
                model(x)
        blob = cloudpickle.dumps(models)
elif sys.argv[2] == "scope":
    with gradguard.evaluating(*models):
        blob = cloudpickle.dumps(models)
else:
    with gradguard.evaluating(*models):
        pass
    assert all("__call__" in vars(type(model)) for model in models)
    blob = cloudpickle.dumps(models)
with open(sys.argv[1], "wb") as out:
    out.write(blob)
with torch.no_grad():
    print([model(x).tolist() for model in models])
"""

# A worker: a process with no watchdog, unpickling the models and calling them.
RECEIVE = """
import pickle, sys
import torch
with open(sys.argv[1], "rb") as blob:
    models = pickle.load(blob)
with torch.no_grad():
    print([model(torch.ones(1, 4)).tolist() for model in models])
"""


def _python(folder: Path, *args: str) -> str:
    """Run ``python *args`` in ``folder`` without the watchdog's variables; its stdout."""
    done = subprocess.run(
        [sys.executable, *args], cwd=folder, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("layer", ["watch", "scope", "parked"])
def test_a_scripts_model_sent_by_value_to_a_worker_works_there(tmp_path: Path, layer: str) -> None:
    """cloudpickle copies a __main__ class with gradguard's __call__ on it: the copy calls on."""
    pytest.importorskip("cloudpickle")
    (tmp_path / "send.py").write_text(SEND_BY_VALUE)
    (tmp_path / "receive.py").write_text(RECEIVE)
    blob = str(tmp_path / "models.pkl")
    sent = _python(tmp_path, "send.py", blob, layer)
    received = _python(tmp_path, "receive.py", blob)
    assert received == sent  # the same outputs, Doubling's own call included
    assert "[[" in sent


class OwnCall(nn.Linear):
    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        return 2 * super().__call__(*args, **kwargs)


def test_layers_leave_no_name_and_no_kept_call_behind() -> None:
    """What lets a copied class call on is taken away with the last layer on the class (the
    scope's, parked after it, at the first call outside it)."""
    from gradguard import _layers

    own = OwnCall.__dict__["__call__"]
    model = OwnCall(2, 2)

    def names() -> list[str]:
        return [name for name in vars(_layers) if name.startswith("layer_")]

    before = names()
    with gradguard.watch(), gradguard.evaluating(model):
        model.eval()  # noted by the watchdog: a second layer, over the scope's
        assert OwnCall.__dict__[_layers.OWN] is own
        assert len(names()) == len(before) + 2
        x = torch.ones(1, 2)
        torch.testing.assert_close(model(x), 2 * nn.Linear.__call__(model, x))
    torch.testing.assert_close(model(x), 2 * nn.Linear.__call__(model, x))
    assert OwnCall.__dict__["__call__"] is own
    assert _layers.OWN not in OwnCall.__dict__
    assert names() == before
