"""A finding points at the user's own line, through any library, and names the library.

Real third-party code: Hugging Face ``transformers`` (a tiny GPT-2 built from a config, nothing
downloaded), PyTorch Lightning and pytorch-ignite, each run with one classic mistake.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _findings

HERE = os.path.abspath(__file__)


def here() -> int:
    """The caller's current line: call it on the line of the statement under test."""
    return sys._getframe(1).f_lineno


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    """Each test starts unwatched with no findings and leaves the watchdog removed."""
    gradguard.unwatch()
    gradguard.clear_findings()
    yield
    gradguard.unwatch()
    gradguard.clear_findings()


def recorded() -> list[tuple[str, str, int]]:
    return [(f.code, f.filename, f.lineno) for f in gradguard.findings()]


def test_transformers_generate_reports_each_users_call_naming_the_library() -> None:
    """GPT-2 in training mode through generate(): GG002 at each of the user's two calls."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=32)
    ids = torch.tensor([[1, 2, 3]])
    with warnings.catch_warnings(record=True), gradguard.watch():
        warnings.simplefilter("always")
        model = transformers.GPT2LMHeadModel(config)
        model.train()  # the mistake: built from a config, never put in eval
        first = here() + 1
        model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
        second = here() + 1
        model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert recorded() == [("GG002", HERE, first), ("GG002", HERE, second)]
    for finding in gradguard.findings():
        assert f"ran forward at {HERE}:{finding.lineno} (inside transformers " in finding.message
        assert "GenerationMixin.generate)" in finding.message


def _classifier(pl: Any, *, validates: bool = False) -> Any:
    """A small LightningModule with dropout (a validation step too when ``validates``)."""

    class Classifier(pl.LightningModule):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))

        def training_step(self, batch: list[torch.Tensor], _index: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Validating(Classifier):
        def validation_step(self, batch: list[torch.Tensor], _index: int) -> None:
            self.net(batch[0])

    return Validating() if validates else Classifier()


def _quiet_trainer(pl: Any, **options: Any) -> Any:
    """A one-epoch CPU Trainer that writes and prints nothing of its own."""
    return pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        **options,
    )


def test_lightning_fit_of_a_model_left_in_eval_points_at_the_fit_call() -> None:
    """Trainer.fit on a LightningModule left in eval: GG004 at the user's fit() line."""
    pl = pytest.importorskip("pytorch_lightning")

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    trainer = _quiet_trainer(pl)
    model = _classifier(pl)
    model.eval()  # the mistake: left in eval from an evaluation before training
    with warnings.catch_warnings(record=True), gradguard.watch():
        warnings.simplefilter("always")
        line = here() + 1
        trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=4))
    assert recorded() == [("GG004", HERE, line)]
    message = gradguard.findings()[0].message
    assert message.startswith("SGD.step() (inside pytorch_lightning Trainer.fit) is updating")


def test_lightning_fit_names_the_programs_eval_not_lightnings_validation_eval() -> None:
    """GG004 names the program's own eval() that left the model in eval, not the eval() that
    Lightning's sanity-check validation calls again inside fit; an eval() made only inside
    the library is named with the library."""
    pl = pytest.importorskip("pytorch_lightning")

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    messages = []
    for eval_under_watch in (True, False):
        gradguard.clear_findings()
        trainer = _quiet_trainer(pl, num_sanity_val_steps=1)
        model = _classifier(pl, validates=True)
        if not eval_under_watch:
            model.eval()  # before watch(): the watchdog never sees this call
        with warnings.catch_warnings(record=True), gradguard.watch():
            warnings.simplefilter("always")
            if eval_under_watch:
                switched = here() + 1
                model.eval()  # the mistake: left in eval from a check before training
            fit = here() + 1
            trainer.fit(model, loader, loader)
        assert recorded() == [("GG004", HERE, fit)]
        messages.append(gradguard.findings()[0].message)
    assert f"(switched to eval by eval() at {HERE}:{switched}), so" in messages[0]
    assert (
        f"(switched to eval by eval() at {HERE}:{fit}, inside pytorch_lightning Trainer.fit), so"
        in messages[1]
    )


def test_ignite_engine_after_a_bare_grad_switch_points_at_the_run_call() -> None:
    """A validation handler that never turns gradients back on: GG002 and GG003 at run()."""
    ignite_engine = pytest.importorskip("ignite.engine")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = ignite_engine.create_supervised_trainer(model, optimizer, nn.functional.cross_entropy)

    @trainer.on(ignite_engine.Events.EPOCH_COMPLETED)  # type: ignore[misc]  # untyped
    def validate(_engine: object) -> None:
        torch.set_grad_enabled(False)  # the mistake: never turned back on
        model.eval()
        model(torch.randn(2, 4))
        model.train()

    try:
        with warnings.catch_warnings(record=True), gradguard.watch():
            warnings.simplefilter("always")
            line = here() + 2
            with pytest.raises(gradguard.GradGuardError) as raised:
                trainer.run(loader, max_epochs=2)
    finally:
        torch.set_grad_enabled(True)
    assert raised.value.finding.code == "GG003"
    assert recorded() == [("GG002", HERE, line), ("GG003", HERE, line)]
    for finding in gradguard.findings():
        assert "(inside ignite Engine.run)" in finding.message


def _library_module(name: str, source: str) -> ModuleType:
    """A module whose code lives, as far as frames tell, in an installed distribution."""
    site_packages = sysconfig.get_paths()["purelib"]
    module = ModuleType(name)
    filename = os.path.join(site_packages, name, "loops.py")
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


LIBRARY = """
import torch

class Loop:
    def fit(self, model, optimizer):
        return self._epoch(model, optimizer)

    def _epoch(self, model, optimizer):
        optimizer.zero_grad()
        optimizer.step()  # no backward: GG005
"""


def test_a_library_without_a_user_frame_falls_back_to_the_library_line() -> None:
    """Called from a thread with no frame of the user's: the library's own line, as before."""
    library = _library_module("fakeloops", LIBRARY)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True), gradguard.watch():
        warnings.simplefilter("always")
        worker = threading.Thread(target=library.Loop().fit, args=(model, optimizer))
        worker.start()
        worker.join()
    [finding] = gradguard.findings()
    assert finding.code == "GG005"
    assert Path(finding.filename).parts[-2:] == ("fakeloops", "loops.py")
    assert finding.lineno == 10
    assert "(inside" not in finding.message


def test_a_library_called_by_the_user_is_named_and_the_user_line_kept() -> None:
    """The outermost library frame names the library; the site is the user's call."""
    library = _library_module("fakeloops", LIBRARY)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True), gradguard.watch():
        warnings.simplefilter("always")
        line = here() + 1
        library.Loop().fit(model, optimizer)
    assert recorded() == [("GG005", HERE, line)]
    assert gradguard.findings()[0].message.startswith("SGD.step() (inside fakeloops Loop.fit) ")


def test_code_next_to_the_script_counts_as_the_users(tmp_path: Path) -> None:
    """A helper module of the project (not installed) is the user's: its own line is the site."""
    (tmp_path / "helpers_of_mine.py").write_text("def step(optimizer):\n    optimizer.step()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import helpers_of_mine  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("helpers_of_mine", None)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True), gradguard.watch():
        warnings.simplefilter("always")
        helpers_of_mine.step(optimizer)
    assert recorded() == [("GG005", str(tmp_path / "helpers_of_mine.py"), 2)]
    assert "(inside" not in gradguard.findings()[0].message


def test_site_classification_is_cached_per_file() -> None:
    """The walk decides each file once: a second finding does not classify it again."""
    _findings._kinds.pop(HERE, None)
    _findings.user_site()
    assert _findings._kinds[HERE] == (_findings._USER, "")
    _findings._kinds[HERE] = (_findings._SKIP, "")  # what the cache says is what is used
    try:
        assert _findings.user_site()[0] != HERE
    finally:
        _findings._kinds[HERE] = (_findings._USER, "")
