"""Tiny deterministic data and models shared by the corpus scripts (kept small so they run fast)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def loaders(batch_size: int = 8) -> tuple[DataLoader[tuple[torch.Tensor, ...]], ...]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 8, 8, generator=generator)
    y = torch.randint(0, 3, (48,), generator=generator)
    train = TensorDataset(x[:32], y[:32])
    val = TensorDataset(x[32:], y[32:])
    return (
        DataLoader(train, batch_size=batch_size, shuffle=False),
        DataLoader(val, batch_size=batch_size),
    )


class SmallCNN(nn.Module):
    """A CNN with BatchNorm and dropout: the layers whose behaviour eval() changes."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
