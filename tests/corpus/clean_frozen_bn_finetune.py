"""Fine-tuning with frozen BatchNorm: the model trains while its BatchNorm layers stay in eval."""

import torch
from _data import SmallCNN, loaders
from torch import nn

torch.manual_seed(0)
train_loader, val_loader = loaders()
model = SmallCNN()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
criterion = nn.CrossEntropyLoss()


def freeze_batchnorm(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.eval()


for _epoch in range(2):
    model.train()
    freeze_batchnorm(model)
    for x, y in train_loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        val = sum(criterion(model(x), y).item() for x, y in val_loader)
