"""evaluating(model) enter+exit against the hand-written idiom, as ratios measured in one run.

Baseline: ``model.eval(); with torch.no_grad(): ...; model.train()``. Also measured: capturing and
restoring every flag by name the way Lightning's evaluation loop does, setting every flag directly
(the floor), and the idiom against itself (the A/A control: how far two runs of the same code
drift apart here). Models: 241 and 2,201 modules, and a 5-module one (Linear, BatchNorm1d, ReLU,
Dropout in a Sequential), where the fixed cost of a scope shows; on that one, also a forward of a
batch of 2 inside each. Thread CPU time, interleaved, each round in a new seeded order.
Targets: evaluating <= 0.35x the idiom on the two large models, and below Lightning; <= 0.8x the
idiom on the small model (the forward row is printed, with no target: its margin is within this
benchmark's A/A spread on a shared machine).
"""

from __future__ import annotations

import statistics
import sys

import torch
from torch import nn

from gradguard import evaluating

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _common import interleaved_samples, machine


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


def small_5() -> nn.Module:
    """Linear, BatchNorm1d, ReLU and Dropout in a Sequential: 5 modules."""
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout())


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


def idiom_forward(model: nn.Module, x: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        model(x)
    model.train()


def gradguard_scope_forward(model: nn.Module, x: torch.Tensor) -> None:
    with evaluating(model):
        model(x)


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
    print("clock: CPU time of the benchmark's thread; each round in a new seeded order")
    failed = False
    models = (
        ("5-module", small_5(), 0.8),
        ("241-module transformer", transformer_241(), 0.35),
        ("2,201-module", wide_2201(), 0.35),
    )
    x = torch.randn(2, 4)
    for name, model, target in models:
        count = len(list(model.modules()))
        mods = list(model.modules())
        calls = 20 if count > 1000 else 100 if count > 100 else 1000
        arms = {
            "idiom": lambda m=model: idiom(m),
            "idiom (A/A)": lambda m=model: idiom(m),
            "evaluating": lambda m=model: gradguard_scope(m),
            "lightning-style": lambda m=model: lightning_style(m),
            "direct flags": lambda m=model, ms=mods: direct_flags(m, ms),
        }
        small = count < 100
        if small:
            arms["idiom + forward"] = lambda m=model: idiom_forward(m, x)
            arms["evaluating + forward"] = lambda m=model: gradguard_scope_forward(m, x)
        samples = interleaved_samples(arms, rounds=15, calls=calls)
        times = {label: statistics.median(values) for label, values in samples.items()}
        base = times["idiom"]
        spread = sorted(a / b for a, b in zip(samples["idiom (A/A)"], samples["idiom"]))
        print(f"\n{name} ({count} modules); idiom = {base * 1e6:.1f} us per enter+exit")
        for label, seconds in times.items():
            reference = times["idiom + forward"] if "forward" in label else base
            print(f"  {label:21s} {seconds * 1e6:9.1f} us  {seconds / reference:5.2f}x")
        print(
            f"  A/A control: {times['idiom (A/A)'] / base:.2f}x "
            f"(per round {spread[0]:.2f}-{spread[-1]:.2f}x)"
        )
        ratio = times["evaluating"] / base
        ok = ratio <= target
        wanted = f"evaluating <= {target}x idiom"
        if not small:
            ok = ok and times["evaluating"] < times["lightning-style"]
            wanted += " and < lightning-style"
        verdict = "met" if ok else "MISSED"
        print(f"  target {wanted}: {verdict}")
        failed |= not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
