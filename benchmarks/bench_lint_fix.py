"""``gradguard lint --fix`` on pytorch/examples: wall time against a plain ``gradguard lint``.

Usage: ``bench_lint_fix.py [PYTORCH_EXAMPLES_DIR] [--rounds N]`` (or ``GRADGUARD_BENCH_EXAMPLES``);
without a pytorch/examples checkout it says so and exits 0.

Every timed run is a fresh ``python -m gradguard lint`` process (interpreter start included) on a
fresh copy of the tree (the copy is not timed), since ``--fix`` rewrites files. Per round:
plain lint (the baseline), ``--fix`` with the default rules, ``--fix --select ALL
--unsafe-fixes`` (every rule, every fix: the worst case, libcst parsing every file with a
fixable finding), and a second plain lint as the A/A control; the order alternates each round.
CPU time is the children's user+system time. Target: ``--fix`` (both variants) at most 2 s wall
(median); exit 1 if missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import host

TARGET_WALL_S = 2.0
# Users run with bytecode caches: a setting that turns them off would time compilation instead.
ENVIRONMENT = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def command(tree: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gradguard", "lint", "--no-config", "--fail-on", "never",
        *extra, str(tree),
    ]


def run_timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, children's CPU seconds, stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=600, env=ENVIRONMENT
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv[3:]} failed ({done.returncode}): {done.stderr[-2000:]}")
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, used, done.stderr


def describe(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1e3:7.1f} ms "
        f"(min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", nargs="?", default=os.environ.get("GRADGUARD_BENCH_EXAMPLES"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {host()}")
    if not args.examples or not Path(args.examples).is_dir():
        print(
            "pytorch/examples: not found, skipped (give its directory as the first argument or "
            "in GRADGUARD_BENCH_EXAMPLES)"
        )
        return 0
    source = Path(args.examples)
    files = [p for p in source.rglob("*.py") if ".git" not in p.parts]
    lines = sum(len(p.read_text(encoding="utf-8", errors="replace").splitlines()) for p in files)
    print(f"pytorch/examples at {source}: {len(files)} files, {lines:,} lines")
    variants: dict[str, tuple[str, ...]] = {
        "lint (baseline)": (),
        "lint --fix": ("--fix",),
        "lint --fix --select ALL --unsafe-fixes": ("--fix", "--select", "ALL", "--unsafe-fixes"),
        "lint (A/A)": (),
    }
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    last: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:

        def fresh(name: str) -> Path:
            tree = Path(scratch) / name.replace(" ", "_")
            shutil.rmtree(tree, ignore_errors=True)
            shutil.copytree(source, tree, ignore=shutil.ignore_patterns(".git"))
            return tree

        run_timed(command(fresh("warm")))  # the file cache and .pyc files, for every variant
        for round_index in range(args.rounds):
            order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
            for name in order:
                tree = fresh("tree")
                seconds, cpu_seconds, stderr = run_timed(command(tree, *variants[name]))
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
                last[name] = stderr
    print(f"\nwall time per run, {args.rounds} rounds, order alternating:")
    base = statistics.median(wall["lint (baseline)"])
    for name in variants:
        ratio = statistics.median(wall[name]) / base
        print(f"  {name:<40} {describe(wall[name])}  {ratio:4.2f}x   CPU {describe(cpu[name])}")
    print("  (A/A: two identical plain runs; its ratio is the noise of this machine)")
    for name in ("lint --fix", "lint --fix --select ALL --unsafe-fixes"):
        summary = [line for line in last[name].splitlines() if "finding(s)" in line]
        print(f"  {name}: {summary[-1] if summary else '(no summary)'}")
    status = 0
    for name in ("lint --fix", "lint --fix --select ALL --unsafe-fixes"):
        median = statistics.median(wall[name])
        if median > TARGET_WALL_S:
            print(f"  target missed: {name} {median:.2f} s > {TARGET_WALL_S:.1f} s")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
