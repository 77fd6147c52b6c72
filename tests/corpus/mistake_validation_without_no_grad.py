"""Validation in eval mode without no_grad, summing loss tensors: every graph is kept alive."""

import torch
from _data import SmallCNN, loaders
from torch import nn

torch.manual_seed(0)
train_loader, val_loader = loaders()
model = SmallCNN()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
criterion = nn.CrossEntropyLoss()

model.train()
for x, y in train_loader:
    optimizer.zero_grad()
    criterion(model(x), y).backward()
    optimizer.step()

model.eval()
total_loss = 0
for x, y in val_loader:
    logits = model(x)  # expect: GG001
    total_loss += criterion(logits, y)
print("validation loss", total_loss.item() / len(val_loader))
