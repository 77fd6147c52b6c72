"""A standard train/validate loop: train() for training, eval() + no_grad() for validation."""

import torch
from _data import SmallCNN, loaders
from torch import nn

torch.manual_seed(0)
train_loader, val_loader = loaders()
model = SmallCNN()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
criterion = nn.CrossEntropyLoss()

for epoch in range(2):
    model.train()
    for x, y in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()

    model.eval()
    total, correct, val_loss = 0, 0, 0.0
    with torch.no_grad():
        for x, y in val_loader:
            logits = model(x)
            val_loss += criterion(logits, y).item()
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
    print(f"epoch {epoch}: val loss {val_loss:.3f}, accuracy {correct / total:.2f}")
