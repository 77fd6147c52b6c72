"""The watchdog on CUDA models: found through cuda(), checks work, and no host-device sync added.

Skipped where no GPU is present.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _watchdog

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def here() -> int:
    """The caller's current line."""
    return sys._getframe(1).f_lineno


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.1), nn.Linear(16, 2))


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    """Each test starts unwatched with no findings."""
    gradguard.unwatch()
    gradguard.clear_findings()
    yield
    gradguard.unwatch()
    gradguard.clear_findings()
    torch.cuda.set_sync_debug_mode(0)


def test_cuda_moves_make_models_known() -> None:
    """model.cuda() and model.to('cuda') each make the model known."""
    first, second = net(), net()
    with gradguard.watch():
        first.cuda()
        second.to("cuda")
        assert _watchdog.known_models() == [first, second]


def test_correct_cuda_training_and_evaluation_add_no_sync() -> None:
    """With sync debug mode set to error, a watched train step and evaluation run without syncs."""
    model = net().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(32, 8, device="cuda")
    y = torch.randint(0, 2, (32,), device="cuda")
    with gradguard.watch():
        for _ in range(2):  # warm-up outside the sync check (lazy state, allocator)
            model.train()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        for _ in range(3):
            model.train()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            model.eval()
            with torch.no_grad():
                model(x)
            x.requires_grad_(True)
            model(x)[:, 0].sum().backward()  # saliency: a used eval graph
            x.requires_grad_(False)
        torch.cuda.set_sync_debug_mode(0)
    assert gradguard.findings() == []


def test_mistakes_on_cuda_models_are_found() -> None:
    """GG002, GG004 and GG005 on a CUDA model, at the right lines."""
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 8, device="cuda")
    with gradguard.watch(), pytest.warns(gradguard.GradGuardWarning) as caught:
        model.cuda()
        with torch.no_grad():
            gg002 = here() + 1
            model(x)
        model.eval()
        model(x).sum().backward()
        gg004 = here() + 1
        optimizer.step()
        optimizer.zero_grad()
        gg005 = here() + 1
        optimizer.step()
    assert sorted((w.category.code, w.lineno) for w in caught) == [
        ("GG002", gg002),
        ("GG004", gg004),
        ("GG005", gg005),
    ]
