"""Adversarial evaluation with projected gradient descent, then accuracy under no_grad."""

import torch
from _data import SmallCNN, loaders
from torch import nn

torch.manual_seed(0)
_, val_loader = loaders()
model = SmallCNN()
model.eval()
criterion = nn.CrossEntropyLoss()


def pgd(x: torch.Tensor, y: torch.Tensor, eps: float = 0.1, step: float = 0.03) -> torch.Tensor:
    adversarial = x.clone()
    for _ in range(3):
        adversarial.requires_grad_(True)
        loss = criterion(model(adversarial), y)
        (grad,) = torch.autograd.grad(loss, adversarial)
        adversarial = adversarial.detach() + step * grad.sign()
        adversarial = x + (adversarial - x).clamp(-eps, eps)
    return adversarial.detach()


correct = 0
for x, y in val_loader:
    adversarial = pgd(x, y)
    with torch.no_grad():
        correct += (model(adversarial).argmax(1) == y).sum().item()
print("robust accuracy", correct / 16)
