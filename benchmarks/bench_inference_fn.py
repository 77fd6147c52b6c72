"""What ``@inference_fn`` costs per call, against ``@torch.no_grad()`` measured in the same run.

Target: a decorated ``predict(model, x)`` on a 41-module MLP (20 x (Linear(64, 64), ReLU) in a
Sequential) at batch 1 costs at most 1.05x the same function decorated with ``@torch.no_grad()``
on a model already in eval. Also printed: the per-call overhead in microseconds, the cost when the
model starts in training mode (41 flags switched and restored per call), and the per-step cost
that the decorator adds to generators, coroutines and async generators.

Baseline and candidate runs are interleaved, timed in process CPU time with one intra-op thread,
and the figures are medians over many repeats, so that a busy machine disturbs both sides alike.

Usage: python benchmarks/bench_inference_fn.py [--repeats N]; exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Generator
from typing import Any

import torch
from torch import nn

import gradguard

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine

TARGET = 1.05


def mlp() -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(20):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    return nn.Sequential(*layers)


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    # CPU time of this process (one intra-op thread): time spent descheduled while other
    # processes run on a shared machine is not counted against either side.
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def compare(
    base: Callable[[], object], cand: Callable[[], object], calls: int, repeats: int
) -> tuple[float, float, float]:
    """(median baseline us, median candidate us, median of the per-repeat ratios)."""
    for _ in range(3):  # warm caches, the tree cache and the allocator
        per_call_us(base, calls)
        per_call_us(cand, calls)
    bases, cands, ratios = [], [], []
    for repeat in range(repeats):
        # Alternate which side goes first, so drift in machine load hits both equally.
        if repeat % 2:
            c = per_call_us(cand, calls)
            b = per_call_us(base, calls)
        else:
            b = per_call_us(base, calls)
            c = per_call_us(cand, calls)
        bases.append(b)
        cands.append(c)
        ratios.append(c / b)
    return statistics.median(bases), statistics.median(cands), statistics.median(ratios)


@types.coroutine
def _suspend() -> Generator[None, None, None]:
    yield None


def drive(coroutine: Any) -> int:
    """Run a coroutine that only awaits ``_suspend()`` by hand: no event loop in the timing."""
    steps = 0
    try:
        while True:
            coroutine.send(None)
            steps += 1
    except StopIteration:
        return steps


def drive_async_generator(agen: Any) -> int:
    steps = 0
    while True:
        awaitable = agen.__anext__()
        try:
            while True:
                awaitable.send(None)
                steps += 1
        except StopIteration:
            steps += 1
        except StopAsyncIteration:
            return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=101, help="interleaved repeats (median)")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"machine: {machine()}")

    model = mlp().eval()
    x = torch.randn(1, 64)
    print(f"model: {sum(1 for _ in model.modules())}-module MLP, batch 1")

    @torch.no_grad()
    def predict_no_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    @gradguard.inference_fn
    def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    assert torch.equal(predict(model, x), predict_no_grad(model, x))
    base, cand, ratio = compare(
        lambda: predict_no_grad(model, x), lambda: predict(model, x), 100, options.repeats
    )
    print(
        f"predict, model in eval : @torch.no_grad() {base:8.2f} us   @inference_fn {cand:8.2f} us"
        f"   ratio {ratio:.3f}x (target <= {TARGET}x)   overhead {cand - base:+.2f} us/call"
    )
    met = ratio <= TARGET

    trained = mlp().train()
    tb, tc, tr = compare(
        lambda: predict_no_grad(model, x),
        lambda: predict(trained, x),
        400,
        max(5, options.repeats // 4),
    )
    print(
        f"predict, model in train: @torch.no_grad() (eval model) {tb:8.2f} us   "
        f"@inference_fn {tc:8.2f} us   ratio {tr:.3f}x   overhead {tc - tb:+.2f} us/call "
        "(41 flags switched and restored)"
    )

    # Per-step cost on a trivial body, so the figure is the decorator's alone.
    steps = 200

    def plain_gen(model: nn.Module) -> Generator[int, None, None]:
        yield from range(steps)

    torch_gen = torch.no_grad()(plain_gen)
    guarded_gen = gradguard.inference_fn(plain_gen)
    gb, gc, _ = compare(
        lambda: sum(torch_gen(model)), lambda: sum(guarded_gen(model)), 20, options.repeats
    )
    print(
        f"generator step : @torch.no_grad() {gb / steps:6.2f} us   @inference_fn "
        f"{gc / steps:6.2f} us   added {(gc - gb) / steps:+.2f} us/step"
    )

    async def plain_coro(model: nn.Module) -> int:
        for _ in range(steps):
            await _suspend()
        return 0

    guarded_coro = gradguard.inference_fn(plain_coro)
    cb, cc, _ = compare(
        lambda: drive(plain_coro(model)), lambda: drive(guarded_coro(model)), 20, options.repeats
    )
    print(
        f"coroutine step : undecorated {cb / steps:6.2f} us   @inference_fn {cc / steps:6.2f} us"
        f"   added {(cc - cb) / steps:+.2f} us/step (torch.no_grad has no per-step async form)"
    )

    async def plain_agen(model: nn.Module) -> Any:
        for i in range(steps // 2):
            await _suspend()
            yield i

    guarded_agen = gradguard.inference_fn(plain_agen)
    ab, ac, _ = compare(
        lambda: drive_async_generator(plain_agen(model)),
        lambda: drive_async_generator(guarded_agen(model)),
        20,
        options.repeats,
    )
    print(
        f"async gen step : undecorated {ab / steps:6.2f} us   @inference_fn {ac / steps:6.2f} us"
        f"   added {(ac - ab) / steps:+.2f} us/step"
    )
    print(f"target {TARGET}x on predict: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
