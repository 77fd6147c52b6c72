"""The fixed twins of ``nine_mistakes.py``, one per function: a linter should be silent here."""

import torch
import torch.nn.functional as F
from torch import nn

import gradguard


def validation_without_eval(model, optimizer, train_loader, val_loader):
    """1. Validation in eval mode with gradients off."""
    model.train()
    for x, y in train_loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    with gradguard.evaluating(model):
        val_loss = sum(F.cross_entropy(model(x), y).item() for x, y in val_loader)
    return val_loss


def evaluation_without_no_grad(model, loader):
    """2. Evaluation under no_grad."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            correct += int((logits.argmax(dim=1) == y).sum())
    return correct


def left_in_eval_when_training_resumes(model, optimizer, train_loader, val_loader, epochs):
    """3. Back to train() at the top of every epoch."""
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for x, _ in val_loader:
                model(x)


def grad_disabled_never_restored(model, x):
    """4. The with form restores the grad mode."""
    with torch.set_grad_enabled(False):
        return model(x)


def backward_inside_no_grad(model, optimizer, x, y):
    """5. The loss is computed with gradients on."""
    loss = F.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()


def loss_accumulated_with_its_graph(model, optimizer, loader):
    """6. Accumulate the number, not the tensor."""
    model.train()
    total_loss = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    return total_loss


def step_without_backward(model, optimizer, loader):
    """7. backward() before step()."""
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@gradguard.inference_fn
async def no_grad_on_async(model, x):
    """8. inference_fn holds eval + no_grad around every step of the coroutine."""
    return model(x)


def train_restores_snapshot(model: nn.Module, x):
    """9. evaluating() gives every submodule its own flag back."""
    with gradguard.evaluating(model):
        return model(x)
