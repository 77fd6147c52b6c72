"""Shared fixtures: every test starts with no findings, no open scope and default options."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import gradguard
from gradguard.testing import assert_no_holds

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _clean_gradguard_state() -> Iterator[None]:
    """Reset findings and options around each test and check that no scope was left open."""
    gradguard.clear_findings()
    gradguard.configure(strict=None)
    grad_before = torch.is_grad_enabled()
    yield
    gradguard.configure(strict=None)
    gradguard.clear_findings()
    assert_no_holds(grad_enabled=grad_before)
