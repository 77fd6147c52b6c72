"""What `watch()` adds to a training step and an eval forward, in instructions (deterministic).

Timing a few microseconds on a shared machine needs many rounds and still leaves a wide
interval; the number of CPU instructions a call executes does not depend on the machine's load.
This script counts them with valgrind's callgrind, switched on only around the measured calls
(a tiny C helper issues callgrind's client requests): per workload, unwatched and under
``watch()``, three times each in the order A B A B A B, every arm warmed up first (64 calls) so
the interpreter's specialised instructions have settled after each install and removal, and the
garbage collector off while counting. It prints the instructions per call of each arm (10- and
100-module models, batch 1; and the parts of a training step alone: a ``no_grad()`` block, an
``optimizer.step()``), the least of its three counts, and the difference. The least, because
what varies between counts of the same arm is work that lands in one block only (the allocator
returning memory, a dictionary resizing): it only ever adds. The spread of the three counts of
each arm is printed beside it.

``--simulate`` also simulates the caches and the branch predictor (callgrind's
``--cache-sim=yes --branch-sim=yes``) and prints, beside the instructions, the first-level cache
misses (instruction and data) and the mispredicted branches per call: what a few instructions
cost in time depends on them (see ``benchmarks/README.md``). The simulated machine is simpler
than a real one, so read the differences between the arms, not the counts themselves.

Needs ``valgrind`` and a C compiler (``cc``); takes about four minutes (ten with
``--simulate``). Run it as ``python benchmarks/instructions_watchdog.py``: it compiles the
helper into a temporary directory and runs itself again under valgrind.
"""

from __future__ import annotations

import ctypes
import gc
import os
import shutil
import subprocess
import sys
import tempfile

HELPER = r"""
#include <valgrind/callgrind.h>
void gg_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void gg_stop(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
"""
CALLS = 50
ORDER = ("unwatched", "watch()") * 3


def measure(library: str) -> None:
    """Under valgrind: run every workload in every arm, one callgrind dump per block of calls."""
    import torch

    import gradguard

    sys.path.insert(0, os.path.dirname(__file__))
    from bench_watchdog import chain, eval_forward, training_step

    helper = ctypes.CDLL(library)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(1, 8)
    y = torch.randint(0, 8, (1,))
    workloads = {}
    for size in (10, 100):
        model = chain(size)
        workloads[f"{size}-module training step"] = (model, training_step(model, x, y), True)
        workloads[f"{size}-module eval forward (no_grad)"] = (model, eval_forward(model, x), False)
    model = chain(10)
    model(x).sum().backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)

    def no_grad_block() -> None:
        with torch.no_grad():
            pass

    workloads["no_grad() block, empty"] = (model, no_grad_block, True)
    workloads["optimizer.step() alone (10-module model)"] = (model, optimizer.step, True)
    for name, (model, fn, train) in workloads.items():
        for arm in ORDER:
            handle = gradguard.watch() if arm != "unwatched" else None
            model.train(train)
            for _ in range(64):
                fn()
            # A collection of the whole heap landing in one block would count millions of
            # instructions that belong to neither arm: none runs while counting.
            gc.collect()
            gc.disable()
            helper.gg_start()
            for _ in range(CALLS):
                fn()
            helper.gg_stop(f"{name}|{arm}".encode())
            gc.enable()
            if handle is not None:
                handle.close()


def _totals(dump: list[str]) -> tuple[str | None, dict[str, int]]:
    """The label of one callgrind dump and its totals, by event name."""
    label = None
    events: list[str] = []
    totals: dict[str, int] = {}
    for line in dump:
        if line.startswith("desc: Trigger: Client Request: "):
            label = line.split(": ", 3)[-1].strip()
        elif line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("totals:"):
            totals = dict(zip(events, map(int, line.split()[1:])))
    return label, totals


def _line(what: str, base: list[float], watched: list[float]) -> str:
    return (
        f"unwatched {min(base):,.0f} {what} per call (its counts {max(base) - min(base):,.0f} "
        f"apart); watch() {min(watched) - min(base):+,.0f} "
        f"({(min(watched) / min(base) - 1) * 100:+.2f}%; its counts "
        f"{max(watched) - min(watched):,.0f} apart)"
    )


def report(folder: str) -> None:
    counts: dict[str, dict[str, list[dict[str, int]]]] = {}
    dumps = [n for n in os.listdir(folder) if n.startswith("callgrind.out.") and n.count(".") == 3]
    for entry in sorted(dumps, key=lambda n: int(n.rsplit(".", 1)[-1])):
        with open(os.path.join(folder, entry)) as dump:
            label, totals = _totals(list(dump))
        if label and totals and "|" in label:
            name, arm = label.split("|")
            counts.setdefault(name, {}).setdefault(arm, []).append(totals)
    for name, arms in counts.items():
        base = [totals["Ir"] / CALLS for totals in arms["unwatched"]]
        watched = [totals["Ir"] / CALLS for totals in arms["watch()"]]
        print(f"{name}: {_line('instructions', base, watched)}")
        simulated = (
            ("first-level cache misses", ("I1mr", "D1mr", "D1mw")),
            # Conditional and indirect (the interpreter's dispatch) mispredictions together.
            ("mispredicted branches", ("Bcm", "Bim")),
        )
        for what, events in simulated:
            if events[0] in arms["unwatched"][0]:
                base = [sum(t[e] for e in events) / CALLS for t in arms["unwatched"]]
                watched = [sum(t[e] for e in events) / CALLS for t in arms["watch()"]]
                print(f"{' ' * len(name)}  {_line(what, base, watched)}")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--inside":
        measure(sys.argv[2])
        return 0
    simulate = "--simulate" in sys.argv[1:]
    for tool in ("valgrind", "cc"):
        if shutil.which(tool) is None:
            print(f"instructions_watchdog.py needs {tool!r} on PATH", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "helper.c")
        library = os.path.join(folder, "libhelper.so")
        with open(source, "w") as out:
            out.write(HELPER)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", library, source], check=True)
        env = dict(os.environ, PYTHONHASHSEED="0")
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                *(["--cache-sim=yes", "--branch-sim=yes"] if simulate else []),
                f"--callgrind-out-file={folder}/callgrind.out.%p",
                sys.executable,
                os.path.abspath(__file__),
                "--inside",
                library,
            ],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        counted = "instructions, simulated caches and branches" if simulate else "instructions"
        print(f"python {sys.version.split()[0]}, {counted} counted by valgrind's callgrind")
        report(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
