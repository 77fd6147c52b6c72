"""The ``gradguard`` command: ``run`` (a script under the watchdog), ``bench``, ``lint``.

Each subcommand lives in its own module, imported only when it is used, which exposes
``configure_parser(parser)`` and ``main(namespace) -> int``. ``gradguard --help`` lists the
commands registered in :data:`SUBCOMMANDS`, so a new one appears there by being registered.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("gradguard._run", "run a script or module under the watchdog, summarise findings"),
    "bench": ("gradguard._bench", "measure what no_grad and inference_mode save on real models"),
    "lint": ("gradguard.lint._cli", "find no_grad/eval mistakes in source files before they run"),
}


# The ways in that are not subcommands, for the end of `gradguard --help`: one line each.
OTHER_WAYS = """\
the watchdog without this command:
  pytest --gradguard    pytest plugin: a finding fails the test that caused it
  GRADGUARD_WATCH=1     watch from `import gradguard` on (=deep: as with --deep)
  GRADGUARD_STRICT=1    raise every finding as GradGuardError where it happens

'gradguard COMMAND --help' gives a command's options; the reference is in docs/."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that subcommand's module is imported."""
    from gradguard import __version__

    parser = argparse.ArgumentParser(
        prog="gradguard",
        description="Find no_grad/eval mistakes in PyTorch code and measure what no_grad saves.",
        epilog=OTHER_WAYS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"gradguard {__version__}",
        help="print the version and exit",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.configure_parser(sub)
            sub.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradguard`` console script and ``python -m gradguard``."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args and args[0] in SUBCOMMANDS else None
    parser = build_parser(only=command or "")
    if command is None:
        if args and args[0] in ("-h", "--help"):
            parser.print_help()
            return 0
        if args and args[0] == "--version":
            from gradguard import __version__

            print(f"gradguard {__version__}")
            return 0
        if args:
            parser.print_usage(sys.stderr)
            print(
                f"gradguard: error: unknown command {args[0]!r}; choose from "
                f"{', '.join(SUBCOMMANDS)} (or --help, --version)",
                file=sys.stderr,
            )
            return 2
        parser.print_help(sys.stderr)
        return 2
    namespace = parser.parse_args(args)
    result: int = namespace._module.main(namespace)
    return result
