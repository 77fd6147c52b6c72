"""The fixed twin of ``train_with_mistakes.py``: the same training, without the mistakes.

Run it under the watchdog to see a clean run:

    gradguard run examples/train_fixed.py

Each evaluation runs inside ``gradguard.evaluating(model)``, which puts the model in eval mode with
gradients off and, at the end of the block, gives every module back its own training flag and the
grad mode back as it was; inference uses ``mode="inference"`` (``torch.inference_mode``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gradguard

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
        optimizer.step()
        total += loss.item()
    return total / len(loader)


def quick_validation(model: nn.Module, loader: DataLoader) -> float:
    correct = 0
    with gradguard.evaluating(model):
        for features, labels in loader:
            correct += (model(features).argmax(dim=1) == labels).sum().item()
    return correct / len(loader.dataset)


def checkpoint_score(model: nn.Module, loader: DataLoader) -> float:
    with gradguard.evaluating(model):
        losses = [nn.functional.cross_entropy(model(x), y).item() for x, y in loader]
    return sum(losses) / len(losses)


def predict(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    with gradguard.evaluating(model, mode="inference"):
        return model(features).argmax(dim=1)


def final_validation(model: nn.Module, loader: DataLoader) -> float:
    with gradguard.evaluating(model):
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
    print("fine-tuning on the validation split")
    train_one_epoch(model, val_loader, optimizer)


if __name__ == "__main__":
    main()
