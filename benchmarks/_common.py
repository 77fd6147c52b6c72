"""Shared helpers for the benchmarks: interleaved timing and a machine description.

Importing this module does not import torch (the lint benchmarks never need it).
"""

from __future__ import annotations

import os
import platform
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


def interleaved(
    candidates: dict[str, Callable[[], object]], *, rounds: int = 30, calls: int = 50
) -> dict[str, float]:
    """Median seconds per call of each candidate, run round-robin so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():
        for _ in range(max(1, calls // 5)):
            fn()
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}
