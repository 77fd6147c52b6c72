"""The built wheel, installed into a clean virtual environment, works as a user's install would.

This builds the sdist and the wheel (``python -m build``, as ``make dist`` does), creates a fresh
virtual environment without this checkout on its path, installs the pinned CPU PyTorch through
``constraints-dev.txt`` and then the wheel, and runs the installed ``gradguard`` command and the
pytest plugin from there. It needs nothing but the package registries; it takes about a minute,
so it is marked ``install`` (``pytest -m "not install"`` leaves it out; ``make test`` runs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints-dev.txt"
# tomllib is 3.11+; the version line is all that is needed.
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]  # type: ignore[index]

pytestmark = pytest.mark.install


@dataclass(frozen=True)
class Install:
    """A clean virtual environment with the wheel installed, and where it came from."""

    bin: Path
    wheel: Path
    sdist: Path
    work: Path

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """A command of the environment, with none of this checkout on its path."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GRADGUARD_", "PYTHON", "VIRTUAL_ENV", "PYTEST_"))
        }
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=cwd or self.work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )


def _check(command: list[str], **kwargs: object) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """Build the distributions, then install the wheel into a brand-new virtual environment."""
    base = tmp_path_factory.mktemp("install")
    dist = base / "dist"
    # The checkout as `git clone` leaves it: build from a copy, so no stale build/ is reused.
    source = base / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "dist", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    # Files a user leaves in a checkout, which no distribution may carry.
    (source / "gradguard.sarif").write_text("{}\n")
    (source / "scratch").mkdir()
    (source / "scratch" / "notes.py").write_text("print('mine')\n")
    _check([sys.executable, "-m", "build", "--outdir", str(dist), str(source)])
    (wheel,) = dist.glob("gradguard-*.whl")
    (sdist,) = dist.glob("gradguard-*.tar.gz")

    environment = base / "venv"
    venv.create(environment, with_pip=True)
    python = str(environment / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS)]
    # --no-compile, as `make install` does: byte-compiling all of torch costs more than unpacking
    # it; the modules the tests import are compiled on first use.
    _check([*pip, "--no-compile", "torch==2.13.0"])
    _check([*pip, str(wheel), "pytest>=8"])
    work = base / "project"
    work.mkdir()
    return Install(environment / "bin", wheel, sdist, work)


def test_wheel_and_sdist_carry_the_package_its_types_and_complete_metadata(
    installed: Install,
) -> None:
    """The wheel has the package, py.typed, the entry points and the metadata PyPI shows."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        metadata = Parser().parsestr(wheel.read(f"gradguard-{VERSION}.dist-info/METADATA").decode())
        entry_points = wheel.read(f"gradguard-{VERSION}.dist-info/entry_points.txt").decode()
    assert "gradguard/py.typed" in names
    assert "gradguard/_watchdog/_reach.py" in names
    assert not [name for name in names if name.startswith(("tests/", "examples/"))]
    assert "gradguard = gradguard.cli:main" in entry_points
    assert "gradguard = gradguard.pytest_plugin" in entry_points
    urls = metadata.get_all("Project-URL") or []
    assert {url.split(",")[0] for url in urls} >= {"Homepage", "Documentation", "Changelog"}
    classifiers = metadata.get_all("Classifier") or []
    tested = f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}"
    assert tested in classifiers
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.10"
    with tarfile.open(installed.sdist) as sdist:
        paths = {Path(*Path(name).parts[1:]).as_posix() for name in sdist.getnames()}
    assert {"README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "Makefile"} <= paths
    assert {"gradguard/py.typed", "tests/test_install.py", "docs/watchdog.md"} <= paths
    assert {"examples/train_with_mistakes.py", "requirements-dev.txt"} <= paths
    assert not [path for path in paths if path.startswith(("scratch", "gradguard.sarif"))]


def test_installed_command_reports_its_version_and_comes_from_the_environment(
    installed: Install,
) -> None:
    """`gradguard --version` is the console script of the clean environment, not the checkout."""
    version = installed.run("gradguard", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"gradguard {VERSION}\n"
    where = installed.run("python", "-c", "import gradguard, torch; print(gradguard.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.bin.parent)


def test_installed_run_finds_the_mistakes_of_the_example_and_none_in_its_twin(
    installed: Install,
) -> None:
    """`gradguard run` on the shipped examples: the mistakes end in GG003, the twin is clean."""
    for name in ("train_with_mistakes.py", "train_fixed.py"):
        shutil.copy(ROOT / "examples" / name, installed.work / name)
    mistakes = installed.run("gradguard", "run", "train_with_mistakes.py")
    assert mistakes.returncode == 1, mistakes.stderr
    assert "GradGuardError: GG003 backward-without-grad" in mistakes.stderr
    assert "GG002 train-mode-without-grad" in mistakes.stderr
    fixed = installed.run("gradguard", "run", "train_fixed.py")
    assert fixed.returncode == 0, fixed.stderr
    assert "gradguard: no findings" in fixed.stderr


def test_installed_pytest_plugin_fails_the_test_that_makes_a_finding(installed: Install) -> None:
    """`pytest --gradguard` in the clean environment loads the plugin from the wheel."""
    (installed.work / "test_model.py").write_text(
        textwrap.dedent(
            """\
            import torch
            import gradguard


            def model():
                return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())


            def test_scope_switched_back_to_train():
                net = model()
                with gradguard.evaluating(net):
                    net.train()


            def test_clean_evaluation():
                net = model()
                with gradguard.evaluating(net):
                    net(torch.randn(2, 4))
            """
        )
    )
    result = installed.run("python", "-m", "pytest", "--gradguard", "-p", "no:cacheprovider")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "GG006 scope-state-changed" in result.stdout
    assert "1 failed, 1 passed" in result.stdout
