"""Shared helpers for the benchmarks: interleaved timing and a machine description.

Importing this module does not import torch (the lint benchmarks never need it).
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from collections.abc import Callable


def host() -> str:
    """The processor, its cores and the Python version, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def machine() -> str:
    """One line naming the machine and torch, so every figure says where it came from."""
    import torch

    return f"{host()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"


def interleaved_samples(
    candidates: dict[str, Callable[[], object]],
    *,
    rounds: int = 30,
    calls: int = 50,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate in every round, in the CPU time of this thread.

    Round-robin, so that drift hits all alike, each round in a new seeded order, so that no arm
    always runs after the same neighbour, nor twice in a row at every round's edge.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():
        for _ in range(max(1, calls // 5)):
            fn()
    order = list(candidates.items())
    shuffler = random.Random(seed)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name, fn in order:
            start = time.thread_time_ns()
            for _ in range(calls):
                fn()
            samples[name].append((time.thread_time_ns() - start) / 1e9 / calls)
    return samples


def interleaved(
    candidates: dict[str, Callable[[], object]], *, rounds: int = 30, calls: int = 50
) -> dict[str, float]:
    """Median seconds per call of each candidate (see :func:`interleaved_samples`)."""
    samples = interleaved_samples(candidates, rounds=rounds, calls=calls)
    return {name: statistics.median(values) for name, values in samples.items()}
