"""``gradguard lint`` against torch-preflight: findings on nine mistakes, wall time on real code.

Usage: ``bench_lint.py [PYTORCH_EXAMPLES_DIR] [--rounds N]`` (or ``GRADGUARD_BENCH_EXAMPLES``).
Without a pytorch/examples checkout the timing part is skipped, and torch-preflight's column is
skipped when it is not installed (``pip install torch-preflight==0.5.0``).

Each timed run is a fresh ``python -m gradguard lint`` process, interpreter start included, as a
pre-commit hook or CI step runs it, with bytecode cached as in any installed environment (a warm-up
run writes it; ``PYTHONDONTWRITEBYTECODE`` is dropped for the tools' processes). Rounds alternate
the order of the tools; a second gradguard run per round is the A/A control whose spread says how
noisy the machine was. CPU time is the children's user+system time. Targets: gradguard lints
pytorch/examples in at most 1 s wall (median) and at least 15x faster than torch-preflight in the
same run; exit 1 if missed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _common import host

HERE = Path(__file__).resolve().parent
# The nine mistakes of the linter's test suite, one function each, "# expect: GG10x" at the line
# gradguard must flag; clean.py is the same script fixed.
NINE = HERE.parent / "tests" / "lint" / "nine" / "mistakes.py"
FIXED = HERE.parent / "tests" / "lint" / "nine" / "clean.py"
_EXPECT = re.compile(r"#\s*expect:\s*(GG\d+)")
TARGET_WALL_S = 1.0
TARGET_RATIO = 15.0


def gradguard_command(path: Path) -> list[str]:
    return [
        sys.executable, "-m", "gradguard", "lint", "--no-config", "--fail-on", "never",
        "--format", "json", str(path),
    ]


def preflight_executable() -> str | None:
    beside = Path(sys.executable).parent / "torch-preflight"
    if beside.exists():
        return str(beside)
    return shutil.which("torch-preflight")


def preflight_command(exe: str, path: Path) -> list[str]:
    return [exe, "check", "--format", "json", "--no-color", str(path)]


# As users run them: bytecode cached (a development shell may set PYTHONDONTWRITEBYTECODE, which
# would make every run compile gradguard's changed modules again).
_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def run_timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, children's CPU seconds, stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=600, env=_ENV
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{command[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, cpu, done.stdout


def gradguard_findings(stdout: str) -> list[tuple[str, int]]:
    return [(f["code"], f["line"]) for f in json.loads(stdout)["findings"]]


def preflight_findings(stdout: str) -> list[tuple[str, int]]:
    return [(d["code"], d["line"]) for d in json.loads(stdout)["diagnostics"]]


def functions(path: Path) -> list[tuple[str, int, int]]:
    """(name, first line incl. decorators, last line) of each top-level function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            out.append((node.name, first, node.end_lineno or node.lineno))
    return out


def expectations(path: Path) -> dict[int, str]:
    """Line -> the code its "# expect:" comment names."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {n: m.group(1) for n, text in enumerate(lines, 1) if (m := _EXPECT.search(text))}


def score_nine(name: str, command: list[str], parse: object) -> None:
    """Print which of the nine functions the tool flags, and what it says on the fixed twin.

    A mistake counts as flagged when the tool reports anything inside its function (tools place
    findings differently); "exact" means the expected code at the expected line.
    """
    assert callable(parse)
    found = parse(run_timed([*command, str(NINE)])[2])
    clean = parse(run_timed([*command, str(FIXED)])[2])
    expected = expectations(NINE)
    hits = exact = 0
    for index, (function, first, last) in enumerate(functions(NINE), start=1):
        codes = sorted({code for code, line in found if first <= line <= last})
        wanted = [(line, code) for line, code in expected.items() if first <= line <= last]
        right = [w for w in wanted if (w[1], w[0]) in found]
        hits += bool(codes)
        exact += bool(wanted) and len(right) == len(wanted)
        want = ", ".join(f"{code}@{line}" for line, code in wanted)
        print(f"  {index}. {function:<22} expected {want:<12} got {', '.join(codes) or '-'}")
    # Another tool's codes are its own: only gradguard's can match the expected code.
    exactly = ""
    if "gradguard" in name:
        exactly = f" ({exact} with the expected code at the expected line)"
    print(
        f"  {name}: {hits} of {len(expected)} mistakes flagged{exactly}, {len(found)} findings; "
        f"on the clean twin: {len(clean)} findings {sorted(Counter(c for c, _ in clean).items())}"
    )


def _load() -> str:
    """The 1-minute load average: other work on the machine shows up in wall time."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


def describe(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1e3:8.1f} ms  "
        f"(min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", nargs="?", default=os.environ.get("GRADGUARD_BENCH_EXAMPLES"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {host()}")
    exe = preflight_executable()
    gg_base = gradguard_command(Path("."))[:-1]

    print(f"\nThe nine mistakes ({NINE.relative_to(HERE.parent)}), default rules of each tool:")
    print(" gradguard lint:")
    score_nine("gradguard lint", gg_base, gradguard_findings)
    if exe is None:
        print(" torch-preflight: not installed, skipped (pip install torch-preflight==0.5.0)")
    else:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        print(f" torch-preflight ({version.stdout.strip() or version.stderr.strip()}):")
        score_nine("torch-preflight", preflight_command(exe, Path("."))[:-1], preflight_findings)

    if not args.examples or not Path(args.examples).is_dir():
        print(
            "\npytorch/examples: not found, timing skipped (give its directory as the first "
            "argument or in GRADGUARD_BENCH_EXAMPLES)"
        )
        return 0
    examples = Path(args.examples)
    files = [p for p in examples.rglob("*.py") if ".git" not in p.parts]
    lines = sum(len(p.read_text(encoding="utf-8", errors="replace").splitlines()) for p in files)
    print(f"\npytorch/examples at {examples}: {len(files)} files, {lines:,} lines")

    tools: dict[str, list[str]] = {
        "gradguard": gradguard_command(examples),
        "gradguard (A/A)": gradguard_command(examples),
    }
    if exe is not None:
        tools["torch-preflight"] = preflight_command(exe, examples)
    wall: dict[str, list[float]] = {name: [] for name in tools}
    cpu: dict[str, list[float]] = {name: [] for name in tools}
    outputs: dict[str, str] = {}
    run_timed(tools["gradguard"])  # warm the file cache and .pyc files for everyone
    load_before = _load()
    for round_index in range(args.rounds):
        order = list(tools) if round_index % 2 == 0 else list(reversed(tools))
        for name in order:
            seconds, cpu_seconds, stdout = run_timed(tools[name])
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
            outputs[name] = stdout
    print(f"\nwall time per run, {args.rounds} rounds, order alternating "
          f"(load average before: {load_before}, after: {_load()}):")
    for name in tools:
        print(f"  {name:<16} {describe(wall[name])}   CPU {describe(cpu[name])}")
    gg = statistics.median(wall["gradguard"])
    aa = statistics.median(wall["gradguard (A/A)"])
    print(f"  A/A control: {aa / gg:.2f}x (1.00x = no drift between identical runs)")

    gg_found = Counter(code for code, _ in gradguard_findings(outputs["gradguard"]))
    print(f"\nfindings on pytorch/examples: gradguard lint {sum(gg_found.values())} "
          f"{sorted(gg_found.items())}")
    status = 0
    if gg > TARGET_WALL_S:
        print(f"  target missed: gradguard {gg:.2f} s > {TARGET_WALL_S:.1f} s")
        status = 1
    if exe is not None:
        tp_found = Counter(code for code, _ in preflight_findings(outputs["torch-preflight"]))
        print(f"  torch-preflight {sum(tp_found.values())} {sorted(tp_found.items())}")
        tp = statistics.median(wall["torch-preflight"])
        ratio = tp / gg
        print(f"\ntorch-preflight / gradguard wall time: {ratio:.1f}x "
              f"({tp * 1e3:.0f} ms vs {gg * 1e3:.0f} ms; target >= {TARGET_RATIO:.0f}x)")
        if ratio < TARGET_RATIO:
            print("  target missed")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
