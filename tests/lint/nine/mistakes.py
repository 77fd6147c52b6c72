"""Nine classic no_grad/eval mistakes in one training script; ``# expect:`` marks each finding.

Never run: the linter reads it. ``clean.py`` beside it is the same script with every mistake fixed.
"""

import torch
from mypackage import Classifier, load_batches
from torch import nn


def validate(model, loader, criterion):
    # 1. validation without eval(): dropout and BatchNorm stay in training mode
    model.train()
    total = 0.0
    with torch.no_grad():
        for x, y in loader:
            total += criterion(model(x), y).item()  # expect: GG101
    return total / len(loader)


def evaluate(model, loader):
    # 2. evaluation without no_grad: an autograd graph per batch, for nothing
    model.eval()
    correct = 0
    for x, y in loader:
        logits = model(x)  # expect: GG102
        correct += (logits.argmax(1) == y).sum().item()
    return correct


def fit(model, optimizer, criterion, loader, val_loader, epochs):
    # 3. a model left in eval when training resumes: train() only before the first epoch
    model.train()
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()  # expect: GG103
        print(epoch, evaluate(model, val_loader))


def predict(model, x):
    # 4. torch.set_grad_enabled(False) never undone: the caller's training has no gradients
    model.eval()
    torch.set_grad_enabled(False)  # expect: GG104
    return model(x).argmax(1)


def fine_tune_step(model, optimizer, criterion, x, y):
    # 5. backward() inside no_grad: the loss has no graph
    optimizer.zero_grad()
    with torch.no_grad():
        loss = criterion(model(x), y)
        loss.backward()  # expect: GG105
    optimizer.step()


def train_epoch(model, optimizer, criterion, loader):
    # 6. total_loss += loss: every batch's graph is kept alive
    model.train()
    total_loss = 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss  # expect: GG106
    return total_loss.item() / len(loader)


def train_epoch_logged(model, optimizer, criterion, loader, log_gradients):
    # 7. step() without backward: a refactor put backward() behind a logging flag
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        if log_gradients:
            loss.backward()
        optimizer.step()  # expect: GG107


@torch.no_grad()
async def serve(model, x):  # expect: GG108
    # 8. @torch.no_grad() on an async def: torch's decorator does nothing for a coroutine's body
    return model(x)


def probe(model, x):
    # 9. model.train(was_training): wakes the BatchNorm layers that were frozen in eval
    was_training = model.training
    model.eval()
    with torch.no_grad():
        y = model(x)
    model.train(was_training)  # expect: GG109
    return y


if __name__ == "__main__":
    net = Classifier()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    batches, val_batches = load_batches()
    fit(net, opt, nn.CrossEntropyLoss(), batches, val_batches, 3)
