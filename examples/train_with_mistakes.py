"""A small, realistic training script that makes the classic no_grad/eval mistakes.

Run it under the watchdog to see each one found, with its line and its fix:

    gradguard run examples/train_with_mistakes.py

The mistakes (each marked MISTAKE below): validation without ``model.eval()``, a model left in eval
mode after a checkpoint evaluation and trained on, inference without ``torch.no_grad()``, and
gradients never re-enabled after the final validation, so that fine-tuning crashes in ``backward()``
with PyTorch's unhelpful "element 0 of tensors does not require grad". Its fixed twin is
``train_fixed.py``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EPOCHS = 2


def make_data(samples: int, generator: torch.Generator) -> TensorDataset:
    features = torch.randn(samples, 20, generator=generator)
    labels = (features[:, :5].sum(dim=1) > 0).long()
    return TensorDataset(features, labels)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(20, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(64, 2),
    )


def train_one_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer
) -> float:
    total = 0.0
    for features, labels in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(features), labels)
        loss.backward()
        optimizer.step()  # MISTAKE 2 shows here: the model was left in eval mode
        total += loss.item()
    return total / len(loader)


def quick_validation(model: nn.Module, loader: DataLoader) -> float:
    correct = 0
    with torch.no_grad():
        for features, labels in loader:
            # MISTAKE 1: no model.eval(): dropout is on and BatchNorm statistics are overwritten.
            correct += (model(features).argmax(dim=1) == labels).sum().item()
    return correct / len(loader.dataset)


def checkpoint_score(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    with torch.no_grad():
        losses = [nn.functional.cross_entropy(model(x), y).item() for x, y in loader]
    return sum(losses) / len(losses)  # MISTAKE 2: no model.train() before training goes on


def predict(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    model.eval()
    logits = model(features)  # MISTAKE 3: no torch.no_grad(): a graph is built for nothing
    return logits.argmax(dim=1)


def final_validation(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    torch.set_grad_enabled(False)  # MISTAKE 4: gradients are never re-enabled
    losses = [nn.functional.cross_entropy(model(x), y).item() for x, y in loader]
    return sum(losses) / len(losses)


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    train_loader = DataLoader(make_data(512, generator), batch_size=64, shuffle=True)
    val_loader = DataLoader(make_data(128, generator), batch_size=64)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    model.train()
    for epoch in range(EPOCHS):
        loss = train_one_epoch(model, train_loader, optimizer)
        accuracy = quick_validation(model, val_loader)
        print(f"epoch {epoch}: train loss {loss:.3f}, validation accuracy {accuracy:.2f}")
        if epoch == 0:
            print(f"checkpoint score {checkpoint_score(model, val_loader):.3f}")

    predictions = predict(model, torch.randn(8, 20, generator=generator))
    print(f"predictions {predictions.tolist()}")

    print(f"final validation loss {final_validation(model, val_loader):.3f}")
    model.train()
    print("fine-tuning on the validation split")
    train_one_epoch(model, val_loader, optimizer)


if __name__ == "__main__":
    main()
