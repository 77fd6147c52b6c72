"""Findings from every process of the program reach ``gradguard run``'s summary and JSON.

Real child processes: ``multiprocessing`` with fork, spawn and forkserver,
``torch.multiprocessing.spawn``, DataLoader workers and a ``Pool`` ended by ``terminate()``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradguard import Finding
from gradguard._watchdog import _processes

# pytorch/examples' mnist_hogwild on synthetic data, with loss.backward() removed.
HOGWILD = """\
import sys

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, kernel_size=5)
        self.fc = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        return F.log_softmax(self.fc(x.flatten(1)), dim=1)


def train(rank, model):
    torch.manual_seed(rank)
    data = torch.utils.data.TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    model.train()
    for data, target in loader:
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        optimizer.step()  # the mistake: loss.backward() removed


if __name__ == "__main__":
    method = sys.argv[1]
    torch.manual_seed(1)
    model = Net()
    model.share_memory()
    if method == "torch.multiprocessing.spawn":
        mp.spawn(train, args=(model,), nprocs=2)
    else:
        context = mp.get_context(method)
        processes = [context.Process(target=train, args=(rank, model)) for rank in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    print("trained", flush=True)
"""
STEP_LINE = 30


def run(tmp_path: Path, name: str, text: str, *args: str) -> tuple[str, list[dict[str, object]]]:
    """`gradguard run --json` on a script in its own temp dir; (stderr, findings)."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(text))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    env.pop("RANK", None)
    env.update(TMPDIR=str(temporary), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "gradguard", "run", "--json", "out.json", name, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Nothing left behind: the children's reports were read and removed.
    assert [p.name for p in temporary.iterdir() if p.name.startswith("gradguard")] == []
    document = json.loads((tmp_path / "out.json").read_text())
    return result.stderr, document["findings"]


@pytest.mark.parametrize(
    ("method", "process"),
    [
        ("fork", "ForkProcess"),
        ("spawn", "SpawnProcess"),
        ("forkserver", "ForkServerProcess"),
        ("torch.multiprocessing.spawn", "SpawnProcess"),
    ],
)
def test_hogwild_children_step_without_backward_reaches_the_parents_summary(
    tmp_path: Path, method: str, process: str
) -> None:
    """GG005 in two training processes: one finding, 4 steps, both processes named."""
    stderr, found = run(tmp_path, "hogwild.py", HOGWILD, method)
    script = str(tmp_path / "hogwild.py")
    assert [(f["code"], f["file"], f["line"], f["count"]) for f in found] == [
        ("GG005", script, STEP_LINE, 4)
    ]
    assert sorted(found[0]["processes"]) == [f"{process}-1", f"{process}-2"]  # type: ignore[call-overload]
    summary = stderr[stderr.index("gradguard: 1 finding\n") :].splitlines()
    assert summary[1].startswith(
        f"  GG005 step-without-gradients at {script}:{STEP_LINE} (4 times, in "
    )
    assert f"{process}-1" in summary[1] and f"{process}-2" in summary[1]
    # While it runs, each child says it in one short line pointing to the summary, as the parent.
    live = stderr[: stderr.index("gradguard: 1 finding\n")]
    assert live.count(f"hogwild.py:{STEP_LINE}: GG005 step-without-gradients (see summary)\n") == 2
    assert "StepWithoutGradientsWarning" not in live


DATALOADER = """\
import torch
from torch import nn

encoder = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
encoder.train()  # the mistake: features computed with dropout active


def features(x):
    with torch.no_grad():
        return encoder(x)


class Encoded(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return features(torch.randn(1, 4))


if __name__ == "__main__":
    features(torch.randn(1, 4))
    loader = torch.utils.data.DataLoader(Encoded(), batch_size=2, num_workers=2)
    print(sum(batch.shape[0] for batch in loader), flush=True)
"""


def test_dataloader_workers_findings_merge_with_the_parents_at_one_site(tmp_path: Path) -> None:
    """GG002 in the parent and in both workers at one line: one finding, counts added."""
    stderr, found = run(tmp_path, "encode.py", DATALOADER)
    assert [(f["code"], f["line"], f["count"]) for f in found] == [("GG002", 10, 9)]
    assert sorted(found[0]["processes"]) == ["MainProcess", "Process-1", "Process-2"]  # type: ignore[call-overload]
    assert "(9 times, in MainProcess, " in stderr


POOL = """\
import multiprocessing

import torch


def step(seed):
    torch.manual_seed(seed)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    optimizer.step()  # no backward
    return seed


if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(2) as pool:  # exit: terminate()
        print(sorted(pool.map(step, range(4))), flush=True)
"""


def test_pool_workers_ended_by_terminate_still_report(tmp_path: Path) -> None:
    """`with Pool()` ends its workers with SIGTERM: they report before they die."""
    _stderr, found = run(tmp_path, "pool.py", POOL)
    assert [(f["code"], f["line"], f["count"]) for f in found] == [("GG005", 11, 4)]
    assert "MainProcess" not in found[0]["processes"]  # type: ignore[operator]


def test_a_single_childs_findings_are_named_in_the_summary(tmp_path: Path) -> None:
    """One child and no finding of the parent's: the summary still names the child."""
    single = HOGWILD.replace("for rank in range(2)", "for rank in range(1)")
    stderr, found = run(tmp_path, "hogwild.py", single, "fork")
    assert [(f["count"], f["processes"]) for f in found] == [(2, ["ForkProcess-1"])]
    assert f"hogwild.py:{STEP_LINE} (2 times, in ForkProcess-1)\n" in stderr


def test_merge_adds_counts_and_names_processes() -> None:
    """The parent's finding and a child's at the same site become one, in first-seen order."""
    own = [Finding("GG005", "step-without-gradients", "m", "/a.py", 3, 2, "f")]
    child = [
        {**vars(Finding("GG005", "step-without-gradients", "m", "/a.py", 3, 5, "f"))},
        {**vars(Finding("GG002", "train-mode-without-grad", "n", "/a.py", 9, 1, "g"))},
    ]
    merged = _processes.merge(own, [("Process-1", child), ("Process-2", child[:1])])
    assert [(f.code, f.lineno, f.count, f.processes) for f in merged] == [
        ("GG005", 3, 12, ("MainProcess", "Process-1", "Process-2")),
        ("GG002", 9, 1, ("Process-1",)),
    ]
    assert own[0].count == 2 and own[0].processes == ()  # the parent's own records are untouched


# A server thread of the parent is inside a watched forward when the parent forks; the child's
# own thread (whose id the C library may give again: the parent's thread does not exist there)
# runs an encoder left in training mode under no_grad.
FORKED_MID_FORWARD = """\
import multiprocessing
import threading

import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, gate=None):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.drop = nn.Dropout(0.5)
        self.gate = gate

    def forward(self, x):
        if self.gate is not None:
            self.gate[0].set()
            self.gate[1].wait()
        return self.drop(self.fc(x))


def encode():
    encoder = Encoder()
    encoder.train()
    with torch.no_grad():
        encoder(torch.ones(1, 2))  # the mistake: dropout active under no_grad


def child():
    worker = threading.Thread(target=encode)
    worker.start()
    worker.join()


def serve(model):
    with torch.no_grad():
        model(torch.ones(1, 2))


if __name__ == "__main__":
    entered, release = threading.Event(), threading.Event()
    served = Encoder((entered, release)).eval()
    server = threading.Thread(target=serve, args=(served,))
    server.start()
    entered.wait()
    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join()
    release.set()
    server.join()
    print("served", flush=True)
"""


def test_a_forked_childs_threads_are_watched_though_a_parents_thread_was_mid_forward(
    tmp_path: Path,
) -> None:
    """The parent's threads in flight at the fork are not the child's: its own are checked."""
    _stderr, found = run(tmp_path, "forked.py", FORKED_MID_FORWARD)
    assert [(f["code"], f["line"], f["processes"]) for f in found] == [
        ("GG002", 26, ["ForkProcess-1"])
    ]


STARTED_IN_A_FORWARD = """\
import multiprocessing

import torch
from torch import nn


def encode():
    encoder = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    encoder.train()
    with torch.no_grad():
        encoder(torch.ones(1, 2))  # the mistake: dropout active under no_grad


class Launcher(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        process = multiprocessing.get_context("fork").Process(target=encode)
        process.start()
        process.join()
        return self.fc(x)


if __name__ == "__main__":
    launcher = Launcher().eval()
    with torch.no_grad():
        launcher(torch.ones(1, 2))
    print("launched", flush=True)
"""


def test_a_process_started_inside_a_watched_forward_is_watched(tmp_path: Path) -> None:
    """A multiprocessing child runs its target, never the rest of the forward that started it."""
    _stderr, found = run(tmp_path, "launched.py", STARTED_IN_A_FORWARD)
    assert [(f["code"], f["line"], f["processes"]) for f in found] == [
        ("GG002", 11, ["ForkProcess-1"])
    ]


WAITS_FOR_SIGTERM = """\
import multiprocessing
import time

import torch


def work():
    torch.ones(1)


if __name__ == "__main__":
    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join()
    print("ready", flush=True)
    time.sleep(120)
"""


def test_a_run_terminated_by_sigterm_leaves_no_directory_behind(tmp_path: Path) -> None:
    """`timeout`, a job scheduler or `kill` ends the run: its children's folder goes with it."""
    (tmp_path / "waits.py").write_text(WAITS_FOR_SIGTERM)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    env.update(TMPDIR=str(temporary), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "gradguard", "run", "waits.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        assert [p.name for p in temporary.iterdir() if p.name.startswith("gradguard")] != []
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGTERM
    assert [p.name for p in temporary.iterdir() if p.name.startswith("gradguard")] == []
