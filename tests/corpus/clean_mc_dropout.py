"""Monte-Carlo dropout: dropout on at inference on purpose, declared with gradguard.allow."""

import torch
from _data import SmallCNN, loaders

import gradguard

torch.manual_seed(0)
_, val_loader = loaders()
model = SmallCNN()
model.eval()
for module in model.modules():
    if isinstance(module, torch.nn.Dropout):
        module.train()
model.head.train()

x, _ = next(iter(val_loader))
with torch.no_grad(), gradguard.allow("train-mode-without-grad"):
    samples = torch.stack([model.head(model.features(x)).softmax(1) for _ in range(8)])
print("predictive std", samples.std(0).mean().item())
