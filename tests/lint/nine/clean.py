"""The nine classic mistakes of ``mistakes.py``, each fixed the usual way; the linter stays silent.

Never run: the linter reads it.
"""

import torch
from mypackage import Classifier, load_batches
from torch import nn


def validate(model, loader, criterion):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for x, y in loader:
            total += criterion(model(x), y).item()
    return total / len(loader)


def evaluate(model, loader):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            correct += (logits.argmax(1) == y).sum().item()
    return correct


def fit(model, optimizer, criterion, loader, val_loader, epochs):
    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        print(epoch, evaluate(model, val_loader))


def predict(model, x):
    model.eval()
    with torch.no_grad():
        return model(x).argmax(1)


def fine_tune_step(model, optimizer, criterion, x, y):
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()


def train_epoch(model, optimizer, criterion, loader):
    model.train()
    total_loss = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    return total_loss / len(loader)


def train_epoch_logged(model, optimizer, criterion, loader, log_gradients):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        if log_gradients:
            print([p.grad.norm().item() for p in model.parameters()])
        optimizer.step()


async def serve(model, x):
    with torch.no_grad():
        return model(x)


def probe(model, x):
    import gradguard

    with gradguard.evaluating(model):
        return model(x)


if __name__ == "__main__":
    net = Classifier()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    batches, val_batches = load_batches()
    fit(net, opt, nn.CrossEntropyLoss(), batches, val_batches, 3)
