"""Reporters: the findings of a run as text, JSON, SARIF 2.1.0 or GitHub workflow annotations.

Each reporter module has ``render(result, context) -> str``; the CLI writes the string to stdout
or to ``--output FILE``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gradguard.lint._driver import LintResult

FORMATS = ("text", "json", "sarif", "github")


@dataclass(frozen=True)
class Context:
    """What a reporter needs beside the findings."""

    root: Path
    statistics: bool = False
    color: bool = False


Render = Callable[[LintResult, Context], str]


def reporter(name: str) -> Render:
    """The ``render`` function of the reporter called ``name`` (one of :data:`FORMATS`)."""
    module = importlib.import_module(f"gradguard.lint._reporters._{name}")
    render: Render = module.render
    return render
