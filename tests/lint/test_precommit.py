"""pre-commit: the hook manifest is valid, and the documented `repo: local` hook works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lint.lint_helpers import ASYNC_NO_GRAD, CLEAN, REPO, write

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

LOCAL_CONFIG = """\
repos:
  - repo: local
    hooks:
      - id: gradguard-lint
        name: gradguard lint
        entry: gradguard lint
        language: system
        types_or: [python, pyi]
"""


def _pre_commit(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PRE_COMMIT_HOME": str(home),
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_hook_manifest_is_valid_and_names_gradguard_lint(tmp_path: Path) -> None:
    """pre-commit's own validator accepts .pre-commit-hooks.yaml; the hook id is gradguard-lint."""
    manifest = REPO / ".pre-commit-hooks.yaml"
    result = _pre_commit("validate-manifest", str(manifest), cwd=tmp_path, home=tmp_path / "pc")
    assert result.returncode == 0, result.stdout + result.stderr
    text = manifest.read_text()
    assert "- id: gradguard-lint" in text
    assert "entry: gradguard lint" in text


def test_local_hook_from_the_readme_fails_a_mistake_and_passes_the_fix(tmp_path: Path) -> None:
    """In a git repository, the README's `repo: local` hook fails on GG108 and passes once fixed."""
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, timeout=60)
    write(project, ".pre-commit-config.yaml", LOCAL_CONFIG)
    source = write(project, "serve.py", ASYNC_NO_GRAD)
    subprocess.run(["git", "add", "."], cwd=project, check=True, timeout=60)
    failing = _pre_commit("run", "--all-files", cwd=project, home=tmp_path / "pc")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "GG108 grad-decorator-on-async" in failing.stdout
    source.write_text(CLEAN)
    passing = _pre_commit("run", "--all-files", cwd=project, home=tmp_path / "pc")
    assert passing.returncode == 0, passing.stdout + passing.stderr
