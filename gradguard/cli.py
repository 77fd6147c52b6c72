"""The ``gradguard`` command: ``gradguard run`` (a script under the watchdog) and ``gradguard bench``.

Each subcommand lives in its own module, imported only when it is used, which exposes
``configure_parser(parser)`` and ``main(namespace) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("gradguard._run", "run a script or module under the watchdog and summarise findings"),
    "bench": ("gradguard._bench", "measure what no_grad and inference_mode save on real models"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand's module is imported)."""
    parser = argparse.ArgumentParser(
        prog="gradguard",
        description="Find no_grad/eval mistakes in PyTorch code and measure what no_grad saves.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradguard`` console script and ``python -m gradguard``."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args:
        parser.print_help(sys.stderr)
        return 2
    namespace = parser.parse_args(args)
    result: int = namespace._module.main(namespace)
    return result
