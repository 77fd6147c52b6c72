"""Run every benchmark here (bench_*.py), each in its own process; exit 1 if any missed."""

from __future__ import annotations

import pathlib
import subprocess
import sys


def main() -> int:
    here = pathlib.Path(__file__).resolve().parent
    status = 0
    for script in sorted(here.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        status |= subprocess.call([sys.executable, str(script)]) != 0
    return status


if __name__ == "__main__":
    sys.exit(main())
