"""Stochastic weight averaging: update_bn runs a training-mode model under no_grad on purpose."""

import torch
from _data import SmallCNN, loaders
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

torch.manual_seed(0)
train_loader, _ = loaders()
model = SmallCNN()
swa_model = AveragedModel(model)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
criterion = nn.CrossEntropyLoss()

model.train()
for _epoch in range(2):
    for x, y in train_loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    swa_model.update_parameters(model)

update_bn((x for x, _ in train_loader), swa_model)
