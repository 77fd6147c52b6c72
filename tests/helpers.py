"""Small real models and state readers shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


def flags(model: nn.Module) -> list[bool]:
    """Every submodule's own training flag, in modules() order."""
    return [m.training for m in model.modules()]


def requires(model: nn.Module) -> list[bool]:
    """Every parameter's own requires_grad flag."""
    return [p.requires_grad for p in model.parameters()]


class Net(nn.Module):
    """A small classifier with BatchNorm and dropout, the layers that eval() matters for."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def fine_tuning_net() -> Net:
    """A Net in training mode whose BatchNorm is frozen in eval, as in fine-tuning."""
    net = Net()
    net.train()
    net.features[1].eval()
    return net


class Encoder(nn.Module):
    """A backbone with BatchNorm and dropout: frozen or probed in the watchdog's tests."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Probe(nn.Module):
    """An :class:`Encoder` with a linear head (a linear probe when the encoder is frozen)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
