"""Two-process gloo DistributedDataParallel train/evaluate loop under the watchdog (CPU).

Run by tests/test_watchdog_distributed.py as ``python ddp_worker.py OUT_DIR``. Each rank first
runs a correct loop, then one with two classic mistakes, then a step after only the model inside
the wrapper was switched to eval, and writes its findings per phase to ``OUT_DIR/rank{N}.json``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import gradguard


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        x, y = torch.randn(8, 8), torch.randint(0, 2, (8,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()  # mistake: steps a model left in eval


def validate(model: nn.Module) -> float:
    with torch.no_grad():
        return sum(model(torch.randn(8, 8)).sum().item() for _ in range(2))  # mistake: no eval()


def findings() -> list[dict[str, object]]:
    return [
        {"code": f.code, "line": f.lineno, "file": f.filename, "message": f.message}
        for f in gradguard.findings()
    ]


def run(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(rank)
    # A file store has no server: rank 0 leaving first cannot pull a TCP store from under rank 1
    # while it tears its process group down (gloo then aborts the process).
    store = os.path.join(out_dir, "store")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    warnings.simplefilter("ignore", gradguard.GradGuardWarning)
    gradguard.watch()
    model = DistributedDataParallel(Net())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    result: dict[str, list[dict[str, object]]] = {}

    # Correct: train(), then eval() + no_grad for validation, then train() again.
    for _epoch in range(2):
        model.train()
        train_steps(model, optimizer, 2)
        model.eval()
        validate(model)
    result["correct"] = findings()
    gradguard.clear_findings()

    # Wrong: validation without eval(), then training resumes after an eval() without train().
    model.train()
    train_steps(model, optimizer, 1)
    validate(model)
    model.eval()
    train_steps(model, optimizer, 1)
    result["wrong"] = findings()
    gradguard.clear_findings()

    # Wrong the other way round: the model inside is switched (model.module.eval(), the wrapper's
    # own flag stays training), then training resumes through the wrapper.
    model.train()
    model.module.eval()
    train_steps(model, optimizer, 1)
    result["inner"] = findings()

    gradguard.unwatch()
    dist.barrier()
    dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as out:
        json.dump(result, out)
    # torch 2.13's gloo sometimes aborts in C++ static destructors at interpreter exit ("terminate
    # called without an active exception"), after all the work is done: leave without them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    mp.spawn(run, args=(sys.argv[1],), nprocs=2, join=True)
