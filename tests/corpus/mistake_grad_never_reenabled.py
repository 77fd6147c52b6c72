"""Evaluation turns gradients off with a bare set_grad_enabled(False), never turned back on."""

import torch
from _data import SmallCNN, loaders
from torch import nn

torch.manual_seed(0)
train_loader, val_loader = loaders()
model = SmallCNN()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
criterion = nn.CrossEntropyLoss()


def evaluate() -> float:
    model.eval()
    torch.set_grad_enabled(False)
    return sum(criterion(model(x), y).item() for x, y in val_loader)


for epoch in range(2):
    model.train()
    for x, y in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)  # expect: GG002
        loss.backward()  # expect: GG003
        optimizer.step()
    print(epoch, evaluate())
