"""model.train() is called once before the loop, so epochs after the first train in eval mode."""

import torch
from _data import SmallCNN, loaders
from torch import nn

torch.manual_seed(0)
train_loader, val_loader = loaders()
model = SmallCNN()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
criterion = nn.CrossEntropyLoss()

model.train()
for epoch in range(2):
    for x, y in train_loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()  # expect: GG004
    model.eval()
    with torch.no_grad():
        print(epoch, sum(criterion(model(x), y).item() for x, y in val_loader))
