"""A refactor put loss.backward() behind a logging flag: the optimizer steps without gradients."""

import torch
from _data import SmallCNN, loaders
from torch import nn

torch.manual_seed(0)
train_loader, _ = loaders()
model = SmallCNN()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss()
log_gradients = False

model.train()
for x, y in train_loader:
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    if log_gradients:
        loss.backward()
    optimizer.step()  # expect: GG005
