"""``gradguard --help``: every registered command, the version and the other ways in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gradguard import cli


def help_text(columns: int = 80) -> str:
    """`gradguard --help` as a user's terminal of ``columns`` columns shows it."""
    env = dict(os.environ, COLUMNS=str(columns))
    result = subprocess.run(
        [sys.executable, "-m", "gradguard", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_help_lists_every_registered_command_on_one_line() -> None:
    """Each subcommand appears once, with its help text on the same line."""
    lines = help_text().splitlines()
    for name, (_, description) in cli.SUBCOMMANDS.items():
        matching = [line for line in lines if line.split()[:1] == [name]]
        assert len(matching) == 1, (name, lines)
        assert matching[0].endswith(description)


def test_help_names_the_version_the_plugin_and_the_environment_variables() -> None:
    """--version, `pytest --gradguard`, GRADGUARD_WATCH and GRADGUARD_STRICT, one line each."""
    text = help_text()
    lines = text.splitlines()
    for start in ("--version", "pytest --gradguard", "GRADGUARD_WATCH=1", "GRADGUARD_STRICT=1"):
        (line,) = [line for line in lines if line.strip().startswith(start)]
        assert len(line.split(maxsplit=2 if start.startswith("pytest") else 1)) > 1, line
    assert max(len(line) for line in lines) <= 80


def test_a_newly_registered_command_is_listed_without_editing_the_help(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The help is derived from SUBCOMMANDS: registering a command is enough to list it."""
    monkeypatch.setitem(
        cli.SUBCOMMANDS, "lintish", ("gradguard._bench", "check source files without running them")
    )
    text = cli.build_parser(only="").format_help()
    assert "    lintish   check source files without running them" in text


def test_version_option_is_the_package_version() -> None:
    """`gradguard --version` and the parser's own --version print the same line."""
    from gradguard import __version__

    with pytest.raises(SystemExit) as exit_:
        cli.build_parser(only="").parse_args(["--version"])
    assert exit_.value.code == 0
    result = subprocess.run(
        [sys.executable, "-m", "gradguard", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout == f"gradguard {__version__}\n"
