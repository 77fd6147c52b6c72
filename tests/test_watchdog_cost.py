"""The watchdog's cheap paths behave exactly as the plain ones (the figures are in benchmarks/)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _watchdog


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    """Each test starts unwatched with no findings, and leaves no watchdog behind."""
    gradguard.unwatch()
    gradguard.clear_findings()
    yield
    gradguard.unwatch()
    gradguard.clear_findings()


class FrozenNorm(nn.Module):
    """Overrides train() to keep its BatchNorm in eval, as fine-tuning code does."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.calls = 0

    def train(self, mode: bool = True) -> FrozenNorm:
        self.calls += 1
        super().train(mode)
        self.norm.eval()
        return self


class Logged(nn.Module):
    """Has its own __setattr__, which must see every write of ``training``."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bool] = []
        self.inner = nn.Dropout()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "training":
            self.__dict__.setdefault("writes", []).append(value)
        super().__setattr__(name, value)


class OwnChildren(nn.Module):
    """Lists only some of its children in children(); train() follows children()."""

    def __init__(self) -> None:
        super().__init__()
        self.shown = nn.Dropout()
        self.hidden = nn.Dropout()

    def children(self) -> Iterator[nn.Module]:
        yield self.shown


def tree() -> nn.Module:
    shared = nn.Linear(4, 4)
    return nn.Sequential(shared, FrozenNorm(), Logged(), OwnChildren(), shared, nn.ReLU())


def flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("mode", [True, False])
def test_watched_train_sets_every_flag_as_pytorch_does(mode: bool) -> None:
    """Overrides, own __setattr__, own children() and a shared child: same flags, same calls."""
    plain, watched = tree(), tree()
    for model in (plain, watched):
        model.train(not mode)
        model[3].hidden.train(not mode)
    plain.train(mode)
    with gradguard.watch():
        watched.train(mode)
        seen = _watchdog.known_models()
        assert watched in seen and not any(m in seen for m in watched.children())
    assert flags(watched) == flags(plain)
    assert watched[1].calls == plain[1].calls == 2
    assert watched[1].norm.training is False
    assert watched[2].writes == plain[2].writes
    assert watched[3].hidden.training is (not mode)  # not in children(): left alone


def test_watched_train_rejects_a_non_bool_mode_as_pytorch_does() -> None:
    """train("yes") raises PyTorch's own ValueError, watched or not, and changes nothing."""
    model = tree().eval()
    with gradguard.watch(), pytest.raises(ValueError, match="training mode is expected"):
        model.train("yes")  # type: ignore[arg-type]
    assert not any(flags(model)[:2])


def test_step_of_a_head_behind_a_frozen_backbone_is_silent_and_gg005_still_found() -> None:
    """Only the last parameter has a gradient: no finding; then none has one: GG005."""
    backbone = nn.Sequential(*[nn.Linear(4, 4) for _ in range(50)]).requires_grad_(False)
    head = nn.Linear(4, 2)
    model = nn.Sequential(backbone, head).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradguard.watch():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(3):
                optimizer.zero_grad()
                model(torch.randn(2, 4)).sum().backward()
                optimizer.step()
        optimizer.zero_grad()
        with pytest.warns(gradguard.StepWithoutGradientsWarning):
            optimizer.step()
    assert [f.code for f in gradguard.findings()] == ["GG005"]


class Walked(nn.Module):
    """Counts how often its tree is walked (``named_modules``, which ``modules()`` uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout())
        self.walks = 0

    def named_modules(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Module]]:
        self.walks += 1
        return super().named_modules(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # type: ignore[no-any-return]


def test_silent_forwards_of_a_wrapper_around_an_eval_model_do_not_walk_it() -> None:
    """nn.DataParallel(model.eval()) under no_grad, call after call: silent, and the model's tree
    is looked at once, not at every forward (its layers' flags are all a forward reads)."""
    model = Walked().eval()
    wrapped = nn.DataParallel(model)
    with gradguard.watch(), warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapped.to("cpu")  # noted: the wrapper, in training itself, is the watched root
        with torch.no_grad():
            wrapped(torch.randn(2, 4))
            walks = model.walks
            for _ in range(5):
                wrapped(torch.randn(2, 4))
    assert model.walks == walks
    assert gradguard.findings() == []
