"""A saliency map: an eval-mode forward with gradients on, whose graph backward uses."""

import torch
from _data import SmallCNN, loaders

torch.manual_seed(0)
_, val_loader = loaders()
model = SmallCNN()
model.load_state_dict(SmallCNN().state_dict())
model.eval()

maps = []
for x, _ in val_loader:
    x = x.clone().requires_grad_(True)
    scores = model(x)
    top = scores.gather(1, scores.argmax(1, keepdim=True)).sum()
    top.backward()
    maps.append(x.grad.abs().amax(1))
print(torch.cat(maps).shape)
