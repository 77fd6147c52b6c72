"""evaluating(model) enter+exit against the hand-written idiom, as ratios measured in one run.

Baseline: ``model.eval(); with torch.no_grad(): ...; model.train()``. Also measured: capturing and
restoring every flag by name the way Lightning's evaluation loop does, and setting every flag
directly (the floor). Target: evaluating <= 0.35x the idiom on both models, and below Lightning.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from gradguard import evaluating

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _common import interleaved, machine


def transformer_241() -> nn.Module:
    """24 TransformerEncoderLayers in a Sequential: 241 modules."""
    return nn.Sequential(*[nn.TransformerEncoderLayer(64, 4, 128) for _ in range(24)])


def wide_2201() -> nn.Module:
    """100 blocks of 21 small layers: 2,201 modules."""
    blocks = []
    for _ in range(100):
        layers: list[nn.Module] = []
        for _ in range(7):
            layers += [nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout()]
        blocks.append(nn.Sequential(*layers))
    return nn.Sequential(*blocks)


def idiom(model: nn.Module) -> None:
    model.eval()
    with torch.no_grad():
        pass
    model.train()


def lightning_style(model: nn.Module) -> None:
    flags = {name: module.training for name, module in model.named_modules()}
    model.eval()
    with torch.no_grad():
        pass
    for name, module in model.named_modules():
        module.training = flags[name]


def gradguard_scope(model: nn.Module) -> None:
    with evaluating(model):
        pass


def direct_flags(model: nn.Module, mods: list[nn.Module]) -> None:
    flags = [m.training for m in mods]
    for m in mods:
        m.__dict__["training"] = False
    with torch.no_grad():
        pass
    for m, flag in zip(mods, flags):
        m.__dict__["training"] = flag


def main() -> int:
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    failed = False
    models = (("241-module transformer", transformer_241()), ("2,201-module", wide_2201()))
    for name, model in models:
        count = len(list(model.modules()))
        mods = list(model.modules())
        calls = 20 if count > 1000 else 100
        times = interleaved(
            {
                "idiom": lambda m=model: idiom(m),
                "evaluating": lambda m=model: gradguard_scope(m),
                "lightning-style": lambda m=model: lightning_style(m),
                "direct flags": lambda m=model, ms=mods: direct_flags(m, ms),
            },
            rounds=15,
            calls=calls,
        )
        base = times["idiom"]
        print(f"\n{name} ({count} modules); idiom = {base * 1e6:.1f} us per enter+exit")
        for label, seconds in times.items():
            print(f"  {label:16s} {seconds * 1e6:9.1f} us  {seconds / base:5.2f}x")
        ratio = times["evaluating"] / base
        ok = ratio <= 0.35 and times["evaluating"] < times["lightning-style"]
        verdict = "met" if ok else "MISSED"
        print(f"  target evaluating <= 0.35x idiom and < lightning-style: {verdict}")
        failed |= not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
