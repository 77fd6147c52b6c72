"""Helpers for the linter's interface tests: ``gradguard lint`` subprocesses and sample files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from gradguard.lint._finding import Finding, Related

REPO = Path(__file__).resolve().parents[2]

# A real mistake the analysis reports: @torch.no_grad() on an async def (GG108, error), at the
# def line, with the decorator line as the cause.
ASYNC_NO_GRAD = textwrap.dedent(
    """\
    import torch


    @torch.no_grad()
    async def predict(model, x):
        return model(x)
    """
)
ASYNC_NO_GRAD_DEF_LINE = 5
ASYNC_NO_GRAD_DECORATOR_LINE = 4

# The hand-written pair gradguard.evaluating replaces: GG110, a note, off unless selected.
EVAL_NO_GRAD_PAIR = textwrap.dedent(
    """\
    import torch


    def evaluate(model, loader):
        model.eval()
        with torch.no_grad():
            for x in loader:
                model(x)
    """
)
EVAL_NO_GRAD_PAIR_LINE = 5

CLEAN = textwrap.dedent(
    """\
    import torch


    @torch.no_grad()
    def predict(model, x):
        return model(x)
    """
)


def write(directory: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``directory/name`` (parents created) and return the path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run_lint(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gradguard lint ARGS`` in ``cwd`` and capture its output."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gradguard", "lint", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def finding(
    code: str = "GG103",
    *,
    line: int = 5,
    file: str = "train.py",
    related: tuple[Related, ...] = (),
    column: int = 4,
) -> Finding:
    """A finding of rule ``code`` as the analysis would make it."""
    from gradguard.lint._rules import RULES

    rule = RULES[code]
    return Finding(
        code=code,
        name=rule.name,
        severity=rule.severity,
        message=f"{rule.summary} (at line {line})",
        fix="do the right thing",
        file=file,
        line=line,
        column=column,
        end_line=line,
        end_column=column + 10,
        related=related,
    )
