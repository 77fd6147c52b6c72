"""Shared fixtures: every test starts with no findings, no open scope and default options."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

import gradguard
from gradguard import _scopes
from gradguard.testing import assert_no_holds

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session", autouse=True)
def _shared_bytecode_for_subprocesses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Let the suite's fresh interpreters share compiled bytecode in a folder of this session.

    Many tests start a new Python that imports torch. Under PYTHONDONTWRITEBYTECODE (set on many
    CI images) each of them compiles torch's ~1,800 modules from source again, about 3 s apiece;
    with a cache the first compiles and the rest read. PYTHONPYCACHEPREFIX puts that cache under
    this session's temp folder, so the virtual environment, the checkout and the scripts' own
    folders still get no __pycache__, as the variable asked.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PYTHONDONTWRITEBYTECODE")
        patch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.mktemp("pycache")))
        yield


@pytest.fixture(autouse=True)
def _clean_gradguard_state() -> Iterator[None]:
    """Reset findings and options around each test and check that no scope was left open."""
    gradguard.clear_findings()
    gradguard.configure(strict=None)
    grad_before = torch.is_grad_enabled()
    yield
    gradguard.configure(strict=None)
    gradguard.clear_findings()
    # A scope's layer stays parked on its class until a call outside the scopes: the next test
    # starts from the classes as defined, whatever this one called last.
    _scopes.take_off_parked()
    assert_no_holds(grad_enabled=grad_before)
