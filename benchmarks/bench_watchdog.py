"""What the watchdog costs correct code: watched against unwatched, as ratios measured in one run.

Workloads: a CNN training step (forward, backward, optimizer step) and an eval forward under
``no_grad`` at batch 32, and an eval forward of a 41-module MLP at batch 1 (where a per-call cost
shows most). Each round times the same workload unwatched, under ``watch()`` and under
``watch(deep=True)``, one after the other, so machine drift hits all three alike; the figure is
the median over rounds. Targets: default level at most 1.02x for the CNN, at most 1.05x for the
MLP. ``deep=True`` has no target: its figures are what the README documents.

Options: ``--quick`` (5 rounds instead of 21), ``--cuda`` (the same workloads on the GPU).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

import gradguard

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine

Workload = Callable[[], object]


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(32, 10),
    )


def mlp_41() -> nn.Module:
    """20 Linear + 20 ReLU in a Sequential: 41 modules with the root."""
    layers: list[nn.Module] = []
    for _ in range(20):
        layers += [nn.Linear(32, 32), nn.ReLU()]
    return nn.Sequential(*layers)


DEVICE = "cuda" if "--cuda" in sys.argv else "cpu"


def training_step() -> tuple[nn.Module, Workload]:
    model = cnn().to(DEVICE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(32, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (32,), device=DEVICE)

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return model, step


def eval_forward(model: nn.Module, x: torch.Tensor) -> Workload:
    def forward() -> None:
        with torch.no_grad():
            model(x)

    return forward


def time_block(fn: Workload, calls: int) -> float:
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def measure(
    model: nn.Module, fn: Workload, train: bool, *, rounds: int, calls: int
) -> dict[str, float]:
    """Median seconds per call unwatched, watched and watched deep, interleaved per round."""
    samples: dict[str, list[float]] = {"unwatched": [], "watch()": [], "watch(deep=True)": []}
    for _ in range(max(1, calls // 2)):
        fn()
    for _ in range(rounds):
        for label in samples:
            handle = None
            if label != "unwatched":
                handle = gradguard.watch(deep=label == "watch(deep=True)")
            # The model is found the way real code shows it: train() or eval() before use.
            model.train(train)
            fn()
            samples[label].append(time_block(fn, calls))
            if handle is not None:
                handle.close()
    return {label: statistics.median(values) for label, values in samples.items()}


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    warnings.simplefilter("error", gradguard.GradGuardWarning)  # correct code: must stay silent
    quick = "--quick" in sys.argv
    print(f"machine: {machine()}")
    if DEVICE == "cuda":
        print(f"device: {torch.cuda.get_device_name()} (timed with torch.cuda.synchronize)")
    train_model, train_fn = training_step()
    eval_model = cnn().to(DEVICE)
    mlp = mlp_41().to(DEVICE)
    workloads = [
        ("CNN training step, batch 32", train_model, train_fn, True, 1.02, 10),
        (
            "CNN eval forward (no_grad), batch 32",
            eval_model,
            eval_forward(eval_model, torch.randn(32, 3, 32, 32, device=DEVICE)),
            False,
            1.02,
            20,
        ),
        (
            "41-module MLP eval forward (no_grad), batch 1",
            mlp,
            eval_forward(mlp, torch.randn(1, 32, device=DEVICE)),
            False,
            1.05,
            400,
        ),
    ]
    failed = False
    for name, model, fn, train, target, calls in workloads:
        if DEVICE == "cuda" and calls < 100:
            calls *= 5  # the GPU runs these faster: keep each timed block long enough
        times = measure(model, fn, train, rounds=5 if quick else 21, calls=calls)
        base = times["unwatched"]
        print(f"\n{name}; unwatched = {base * 1e6:.1f} us per call")
        for label, seconds in times.items():
            print(f"  {label:18s} {seconds * 1e6:10.1f} us  {seconds / base:6.3f}x")
        ratio = times["watch()"] / base
        verdict = "met" if ratio <= target else "MISSED"
        print(f"  target watch() <= {target:.2f}x: {verdict} ({ratio:.3f}x)")
        failed |= ratio > target
    gradguard.unwatch()
    if gradguard.findings():
        print("unexpected findings:", gradguard.findings())
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
