"""The flake8 plugin through real flake8: codes, flake8's own noqa and configuration apply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gradguard.lint._flake8 import DEFAULT_IGNORE
from tests.lint.lint_helpers import (
    ASYNC_NO_GRAD,
    ASYNC_NO_GRAD_DECORATOR_LINE,
    ASYNC_NO_GRAD_DEF_LINE,
    EVAL_NO_GRAD_PAIR,
    EVAL_NO_GRAD_PAIR_LINE,
    write,
)


def _flake8(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flake8", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _gg_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if ": GG" in line]


def test_flake8_reports_gradguard_findings_by_default(tmp_path: Path) -> None:
    """The GG1 entry point is selected by default; the line carries code, name and fix."""
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    result = _flake8("serve.py", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    (line,) = _gg_lines(result)
    assert line.startswith(f"serve.py:{ASYNC_NO_GRAD_DEF_LINE}:1: GG108 grad-decorator-on-async")
    assert " Fix: " in line


def test_flake8_noqa_and_configuration_apply(tmp_path: Path) -> None:
    """flake8's noqa on the line silences it; extend-ignore in .flake8 silences the rule."""
    write(
        tmp_path,
        "noqa.py",
        ASYNC_NO_GRAD.replace("(model, x):", "(model, x):  # noqa: GG108"),
    )
    assert _gg_lines(_flake8("noqa.py", cwd=tmp_path)) == []
    # flake8 is what honours it: with flake8's noqa switched off, the finding is back.
    assert len(_gg_lines(_flake8("--disable-noqa", "noqa.py", cwd=tmp_path))) == 1
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    write(tmp_path, ".flake8", "[flake8]\nextend-ignore = GG108\n")
    assert _gg_lines(_flake8("serve.py", cwd=tmp_path)) == []
    assert len(_gg_lines(_flake8("--isolated", "serve.py", cwd=tmp_path))) == 1
    assert _gg_lines(_flake8("--isolated", "--select", "E", "serve.py", cwd=tmp_path)) == []


def test_gradguard_comments_work_under_flake8_too(tmp_path: Path) -> None:
    """ignore[...] on the decorator line (the cause) silences the finding, as in gradguard lint."""
    lines = ASYNC_NO_GRAD.splitlines(keepends=True)
    index = ASYNC_NO_GRAD_DECORATOR_LINE - 1
    lines[index] = lines[index].rstrip("\n") + "  # gradguard: ignore[grad-decorator-on-async]\n"
    write(tmp_path, "cause.py", "".join(lines))
    write(tmp_path, "skip.py", "# gradguard: skip-file\n" + ASYNC_NO_GRAD)
    assert _gg_lines(_flake8("--isolated", "cause.py", "skip.py", cwd=tmp_path)) == []


def test_rules_off_by_default_are_off_in_flake8_too(tmp_path: Path) -> None:
    """GG110 is silent under plain flake8 and reported with --extend-select GG110."""
    assert set(DEFAULT_IGNORE) == {"GG110", "GG190"}
    write(tmp_path, "evaluate.py", EVAL_NO_GRAD_PAIR)
    assert _gg_lines(_flake8("--isolated", "evaluate.py", cwd=tmp_path)) == []
    selected = _gg_lines(_flake8("--isolated", "--extend-select", "GG110", "evaluate.py",
                                 cwd=tmp_path))
    assert [line.split(": ")[0:2] for line in selected] == [
        [f"evaluate.py:{EVAL_NO_GRAD_PAIR_LINE}:5", "GG110 eval-no-grad-pair"]
    ]
