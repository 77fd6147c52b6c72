"""GG003's wrappers of Tensor.backward and autograd.backward take exactly what PyTorch takes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import pytest
import torch

import gradguard

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
