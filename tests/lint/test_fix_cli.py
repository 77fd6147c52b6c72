"""``gradguard lint --fix / --diff / --unsafe-fixes`` in real subprocesses."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.lint.lint_helpers import ASYNC_NO_GRAD, run_lint, write

STEP_WITHOUT_BACKWARD = textwrap.dedent(
    """\


    def train(model, opt, loader, log):
        for x in loader:
            opt.zero_grad()
            loss = model(x).sum()
            if log:
                loss.backward()
            opt.step()
    """
)

GRAD_OFF = textwrap.dedent(
    """\
    import torch


    def predict(model, x):
        torch.set_grad_enabled(False)
        return model(x)
    """
)


def test_diff_prints_the_fix_and_writes_nothing(tmp_path: Path) -> None:
    """--diff shows a unified diff on stdout, the summary on stderr, and leaves the file alone."""
    path = write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    result = run_lint("--diff", "serve.py", cwd=tmp_path)
    assert path.read_text() == ASYNC_NO_GRAD
    assert result.stdout.startswith("--- serve.py\n+++ serve.py\n@@ ")
    assert "-@torch.no_grad()\n" in result.stdout
    assert "+@gradguard.inference_fn(models=[])\n" in result.stdout
    assert "GG108 would fix" in result.stderr
    assert "nothing written" in result.stderr
    assert result.returncode == 1  # the GG108 error is still in the file


def test_fix_writes_keeps_mode_and_exits_clean(tmp_path: Path) -> None:
    """--fix rewrites in place, keeps the mode bits, leaves no temporary file, exits 0."""
    path = write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    path.chmod(0o750)
    result = run_lint("--fix", "serve.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert "@gradguard.inference_fn(models=[])\nasync def predict" in text
    assert text.startswith("import gradguard\nimport torch\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    assert sorted(os.listdir(tmp_path)) == ["serve.py"]
    assert "serve.py:5: GG108 fixed: replaced `@torch.no_grad()`" in result.stderr
    assert "Fixed 1 finding(s) in 1 file(s)." in result.stderr
    assert "GG108" not in result.stdout


def test_fix_exits_with_the_status_of_what_remains(tmp_path: Path) -> None:
    """A finding without a fix stays, is reported, and makes the exit status 1."""
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    write(tmp_path, "train.py", STEP_WITHOUT_BACKWARD)
    result = run_lint("--fix", ".", cwd=tmp_path)
    assert result.returncode == 1
    assert "train.py:9:9: GG107" in result.stdout
    assert "GG108" not in result.stdout
    again = run_lint("--fix", ".", cwd=tmp_path)
    assert "Fixed 0 finding(s) in 0 file(s)." in again.stderr
    assert again.returncode == 1


def test_fix_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    """Running --fix on its own result leaves every byte as it is."""
    path = write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    run_lint("--fix", "serve.py", cwd=tmp_path)
    once = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    second = run_lint("--fix", "serve.py", cwd=tmp_path)
    assert second.returncode == 0
    assert path.read_bytes() == once
    assert path.stat().st_mtime_ns == mtime  # not even rewritten


def test_unsafe_fixes_only_with_the_flag(tmp_path: Path) -> None:
    """GG104's fix is unsafe: --fix leaves it and says so; --fix --unsafe-fixes applies it."""
    path = write(tmp_path, "predict.py", GRAD_OFF)
    safe = run_lint("--fix", "predict.py", cwd=tmp_path)
    assert path.read_text() == GRAD_OFF
    assert safe.returncode == 1
    assert "1 finding(s) left are of rules with an unsafe fix" in safe.stderr
    shown = run_lint("--diff", "--unsafe-fixes", "predict.py", cwd=tmp_path)
    assert "+    with torch.set_grad_enabled(False):\n" in shown.stdout
    assert path.read_text() == GRAD_OFF
    unsafe = run_lint("--fix", "--unsafe-fixes", "predict.py", cwd=tmp_path)
    assert unsafe.returncode == 0, unsafe.stdout + unsafe.stderr
    assert "with torch.set_grad_enabled(False):\n        return model(x)\n" in path.read_text()
    assert "GG104 fixed (unsafe fix)" in unsafe.stderr


def test_unsafe_fixes_alone_is_bad_usage(tmp_path: Path) -> None:
    """--unsafe-fixes means nothing without --fix or --diff: exit 2 with a message saying so."""
    write(tmp_path, "predict.py", GRAD_OFF)
    result = run_lint("--unsafe-fixes", "predict.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "--unsafe-fixes" in result.stderr and "--fix" in result.stderr


def test_fix_without_libcst_says_how_to_install_it(tmp_path: Path) -> None:
    """Where libcst cannot be imported, --fix and --diff say to install gradguard[fix]."""
    fake = write(
        tmp_path / "no-libcst",
        "libcst/__init__.py",
        "raise ModuleNotFoundError(\"No module named 'libcst'\", name='libcst')\n",
    )
    env = {"PYTHONPATH": str(fake.parent.parent)}
    path = write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    for flag in ("--fix", "--diff"):
        result = run_lint(flag, "serve.py", cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr
        assert "pip install 'gradguard[fix]'" in result.stderr
        assert "Traceback" not in result.stderr
    assert path.read_text() == ASYNC_NO_GRAD
    plain = run_lint("serve.py", cwd=tmp_path, env=env)  # linting itself needs no libcst
    assert plain.returncode == 1
    assert "GG108" in plain.stdout


def test_libcst_is_not_loaded_when_nothing_will_be_rewritten(tmp_path: Path) -> None:
    """A GG110 pair that no fix can apply to (no train() after it) never imports libcst."""
    fake = write(
        tmp_path / "trap",
        "libcst/__init__.py",
        "raise RuntimeError('libcst was imported')\n",
    )
    env = {"PYTHONPATH": str(fake.parent.parent)}
    source = textwrap.dedent(
        """\
        import torch


        def evaluate(model, x):
            model.eval()
            with torch.no_grad():
                return model(x)
        """
    )
    path = write(tmp_path, "evaluate.py", source)
    result = run_lint("--fix", "--select", "ALL", "evaluate.py", cwd=tmp_path, env=env)
    assert "libcst was imported" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert "GG110 left as it is: no `model.train()` follows the block" in result.stderr
    assert path.read_text() == source


def test_help_lists_the_fix_options(tmp_path: Path) -> None:
    """``gradguard lint --help`` documents --fix, --diff, --unsafe-fixes and the extra."""
    result = run_lint("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--fix", "--diff", "--unsafe-fixes", "gradguard[fix]"):
        assert option in result.stdout


def test_diff_with_a_machine_format_is_bad_usage(tmp_path: Path) -> None:
    """--diff prints a diff; asking for JSON at the same time is refused before any work."""
    path = write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    result = run_lint("--diff", "--format", "json", "serve.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "--diff prints a unified diff, not --format json" in result.stderr
    assert path.read_text() == ASYNC_NO_GRAD


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_pre_commit_hook_with_fix_rewrites_and_fails_the_commit_once(tmp_path: Path) -> None:
    """``args: [--fix]`` on the local hook: pre-commit fails as files changed, then passes."""
    project = tmp_path / "project"
    project.mkdir()
    write(project, "serve.py", ASYNC_NO_GRAD)
    write(
        project,
        ".pre-commit-config.yaml",
        textwrap.dedent(
            """\
            repos:
              - repo: local
                hooks:
                  - id: gradguard-lint
                    name: gradguard lint
                    entry: gradguard lint
                    args: [--fix]
                    language: system
                    types_or: [python, pyi]
            """
        ),
    )
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "PRE_COMMIT_HOME": str(tmp_path / "pc"),
        "NO_COLOR": "1",
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    run("git", "init", "-q")
    run("git", "add", ".")
    first = run(sys.executable, "-m", "pre_commit", "run", "--all-files")
    assert first.returncode == 1
    assert "files were modified by this hook" in first.stdout
    assert "@gradguard.inference_fn(models=[])" in (project / "serve.py").read_text()
    run("git", "add", ".")
    second = run(sys.executable, "-m", "pre_commit", "run", "--all-files")
    assert second.returncode == 0, second.stdout


def test_baselined_findings_are_not_fixed(tmp_path: Path) -> None:
    """A finding the baseline absorbs is not reported, so --fix leaves its code alone."""
    path = write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    recorded = run_lint("--write-baseline", "baseline.json", "serve.py", cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    write(tmp_path, "new.py", ASYNC_NO_GRAD)
    result = run_lint("--fix", "--baseline", "baseline.json", "serve.py", "new.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert path.read_text() == ASYNC_NO_GRAD
    assert "@gradguard.inference_fn(models=[])" in (tmp_path / "new.py").read_text()
    assert "new.py:5: GG108 fixed" in result.stderr
