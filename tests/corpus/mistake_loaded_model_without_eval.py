"""Inference with a loaded checkpoint under no_grad, but model.eval() was forgotten."""

import torch
from _data import SmallCNN, loaders

torch.manual_seed(0)
_, val_loader = loaders()
model = SmallCNN()
model.load_state_dict(SmallCNN().state_dict())

predictions = []
with torch.no_grad():
    for x, _ in val_loader:
        predictions.append(model(x).argmax(1))  # expect: GG002
print(torch.cat(predictions).tolist())
