"""Serving-style evaluation: a loaded model in eval mode under torch.inference_mode."""

import torch
from _data import SmallCNN, loaders

torch.manual_seed(0)
_, val_loader = loaders()
model = SmallCNN()
model.load_state_dict(SmallCNN().state_dict())
model.eval()

predictions = []
with torch.inference_mode():
    for x, _ in val_loader:
        predictions.append(model(x).argmax(1))
print(torch.cat(predictions).tolist())
