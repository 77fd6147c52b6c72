"""GG003's wrappers of Tensor.backward and autograd.backward take exactly what PyTorch takes."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Iterator
from typing import ClassVar

import pytest
import torch

import gradguard
from gradguard._watchdog import _backward

ORIGINALS = {"Tensor.backward": torch.Tensor.backward, "autograd.backward": torch.autograd.backward}


@pytest.fixture(autouse=True)
def _watched() -> Iterator[None]:
    gradguard.unwatch()
    gradguard.clear_findings()
    with gradguard.watch():
        yield
    gradguard.clear_findings()


def _leaf() -> torch.Tensor:
    return torch.ones(3, requires_grad=True)


CALLS: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
    "tensor-positional": lambda w, loss: loss.backward(),
    "tensor-self-keyword": lambda w, loss: torch.Tensor.backward(self=loss),
    "tensor-all-keywords": lambda w, loss: torch.Tensor.backward(
        self=loss, gradient=None, retain_graph=True, create_graph=False, inputs=[w]
    ),
    "tensor-positional-gradient": lambda w, loss: loss.backward(torch.tensor(1.0), True),
    "autograd-positional": lambda w, loss: torch.autograd.backward(loss),
    "autograd-tensors-keyword": lambda w, loss: torch.autograd.backward(tensors=loss),
    "autograd-tensors-list": lambda w, loss: torch.autograd.backward(tensors=[loss]),
    "autograd-all-keywords": lambda w, loss: torch.autograd.backward(
        tensors=loss,
        grad_tensors=None,
        retain_graph=True,
        create_graph=False,
        grad_variables=None,
        inputs=[w],
    ),
}


@pytest.mark.parametrize("form", sorted(CALLS))
def test_every_documented_calling_form_works_while_watched(form: str) -> None:
    """Each positional and keyword form computes the gradient, as unwatched."""
    w = _leaf()
    CALLS[form](w, (w * 2).sum())
    assert w.grad is not None and torch.equal(w.grad, torch.full((3,), 2.0))
    assert gradguard.findings() == []


@pytest.mark.parametrize("form", ["tensor-self-keyword", "autograd-tensors-keyword"])
def test_keyword_forms_still_explain_a_loss_computed_without_grad(form: str) -> None:
    """GG003 explains the failure whichever way the loss was passed."""
    w = _leaf()
    with torch.no_grad():
        loss = (w * 2).sum()
        with pytest.raises(gradguard.GradGuardError, match="GG003") as raised:
            CALLS[form](w, loss)
    assert "does not require grad" in str(raised.value.__cause__)


def test_wrappers_keep_the_wrapped_signatures() -> None:
    """inspect.signature of the patched functions is PyTorch's own."""
    assert inspect.signature(torch.Tensor.backward) == inspect.signature(
        ORIGINALS["Tensor.backward"]
    )
    assert torch.Tensor.backward is not ORIGINALS["Tensor.backward"]
    gradguard.unwatch()
    assert torch.Tensor.backward is ORIGINALS["Tensor.backward"]


class Logged(torch.Tensor):
    """A tensor subclass that sees every call on it (``__torch_function__``), as loggers do."""

    calls: ClassVar[list[str]] = []

    @classmethod
    def __torch_function__(
        cls,
        func: Callable[..., object],
        types: tuple[type, ...],
        args: tuple[object, ...] = (),
        kwargs: dict[str, object] | None = None,
    ) -> object:
        cls.calls.append(getattr(func, "__name__", repr(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("subclass", [False, True], ids=["tensor", "subclass"])
def test_gg003_traceback_shows_only_the_programs_frames(subclass: bool) -> None:
    """GG003's traceback is the program's frames and the one layer that raised it, nothing more."""
    w = _leaf().as_subclass(Logged) if subclass else _leaf()
    with torch.no_grad():
        loss = (w * 2).sum()
        with pytest.raises(gradguard.GradGuardError, match="GG003") as raised:
            loss.backward()
    frames = traceback.extract_tb(raised.value.__traceback__)
    # Only the layer that raises it is not the program's: no torch frame, no inner layer.
    assert [f.filename for f in frames if f.filename != __file__] == [_backward.__file__]
    assert "does not require grad" in str(raised.value.__cause__)
    assert "backward" in Logged.calls or not subclass
