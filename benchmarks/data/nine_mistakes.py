"""Nine classic no_grad/eval mistakes, one per function, as they appear in training code.

Input of ``benchmarks/bench_lint.py``: each linter is scored by which functions it flags. The
fixed twin is ``nine_fixed.py``; a linter should be silent there.
"""

import torch
import torch.nn.functional as F
from torch import nn


def validation_without_eval(model, optimizer, train_loader, val_loader):
    """1. Validation runs in training mode: dropout on, BatchNorm statistics overwritten."""
    model.train()
    for x, y in train_loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        val_loss = sum(F.cross_entropy(model(x), y).item() for x, y in val_loader)
    return val_loss


def evaluation_without_no_grad(model, loader):
    """2. Evaluation with gradients on: every forward keeps its graph alive."""
    model.eval()
    correct = 0
    for x, y in loader:
        logits = model(x)
        correct += int((logits.argmax(dim=1) == y).sum())
    return correct


def left_in_eval_when_training_resumes(model, optimizer, train_loader, val_loader, epochs):
    """3. validate() leaves the model in eval; the next epoch trains in eval mode."""
    for _ in range(epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for x, _ in val_loader:
                model(x)


def grad_disabled_never_restored(model, x):
    """4. Gradients switched off for the rest of the program."""
    torch.set_grad_enabled(False)
    return model(x)


def backward_inside_no_grad(model, optimizer, x, y):
    """5. backward() on a loss computed under no_grad fails at run time."""
    with torch.no_grad():
        loss = F.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()


def loss_accumulated_with_its_graph(model, optimizer, loader):
    """6. total_loss += loss keeps every iteration's graph alive."""
    model.train()
    total_loss = 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss
    return total_loss


def step_without_backward(model, optimizer, loader):
    """7. The optimizer steps with no gradients computed."""
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y)
        optimizer.step()


@torch.no_grad()
async def no_grad_on_async(model, x):
    """8. @torch.no_grad() does nothing for the body of an async def."""
    return model(x)


def train_restores_snapshot(model: nn.Module, x):
    """9. model.train(was_training) wakes submodules that were frozen in eval."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was_training)
    return out
