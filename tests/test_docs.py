"""The README and docs/ say only what exists: every relative link and every command shown resolves.

Links: the file (and the heading an ``#anchor`` names) exists. Commands in shell code blocks:
``gradguard CMD`` is a registered command and every option shown is in ``gradguard CMD --help``;
``pytest --gradguard...`` options are the plugin's; ``make TARGET`` is a Makefile target; a path
into this repository (``examples/...``) exists; a wheel named in a command has the package's
version.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gradguard import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
REPO_DIRS = ("examples/", "benchmarks/", "tests/", "docs/", "gradguard/", ".venv/bin/")
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]  # type: ignore[index]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def links(page: Path) -> list[str]:
    """Every link and image target of the page, outside code blocks."""
    targets, in_code = [], False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            targets += [a or b for a, b in LINK.findall(line)]
    return targets


def shell_lines(page: Path) -> list[str]:
    """Every command line of the page's shell code blocks (continuations joined)."""
    lines, language, pending = [], None, ""
    for line in page.read_text().splitlines():
        fence = FENCE.match(line)
        if fence:
            language = None if language is not None else fence.group(2)
            continue
        if language not in SHELL_LANGUAGES or language is None:
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text and not text.startswith("#"):
            lines.append(text)
    return lines


def test_pages_are_found() -> None:
    """The README, the docs index and its pages, and the integrations page are all checked."""
    names = {page.name for page in PAGES}
    assert {"README.md", "cli.md", "watchdog.md", "integrations.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    """Each relative link names an existing file, and an anchor an existing heading there."""
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, broken


@functools.cache
def command_help(command: str) -> str:
    """``gradguard COMMAND --help`` (the top level's for ``""``), failing if it does not run."""
    args = [command, "--help"] if command else ["--help"]
    result = subprocess.run(
        [sys.executable, "-m", "gradguard", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"gradguard {' '.join(args)}: {result.stderr}"
    return result.stdout


@functools.cache
def pytest_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, timeout=120
    )
    return result.stdout


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, re.M))


def problems_of(line: str) -> list[str]:
    """What in one shell command line does not exist."""
    words = [word.strip("[]") for word in shlex.split(line, comments=True)]
    while words and re.match(r"^[A-Z_]+=", words[0]):
        words.pop(0)  # VAR=value prefixes
    found: list[str] = []
    for word in words:
        if word.startswith(REPO_DIRS) and not (ROOT / word).exists():
            found.append(f"{line}: no file {word}")
        wheel = re.match(r"dist/gradguard-([^-]+)-", word)
        if wheel and wheel.group(1) != VERSION:
            found.append(f"{line}: the wheel's version is {VERSION}, not {wheel.group(1)}")
    if words[:1] == ["make"]:
        found += [f"{line}: no make target {t}" for t in words[1:] if t not in make_targets()]
    if words[:1] == ["pytest"] or words[:3] == ["python", "-m", "pytest"]:
        options = [w.split("=")[0] for w in words if w.startswith("--gradguard")]
        found += [f"{line}: pytest has no {o}" for o in options if o not in pytest_help()]
    for index, word in enumerate(words):
        is_command = word in ("gradguard", ".venv/bin/gradguard") and (
            index == 0 or words[index - 1] == "-m"
        )
        if not is_command:
            continue
        rest = words[index + 1 :]
        if not rest:
            continue
        if rest[0].startswith("-"):
            if rest[0] not in command_help(""):
                found.append(f"{line}: gradguard has no option {rest[0]}")
            continue
        if rest[0] not in cli.SUBCOMMANDS:
            found.append(f"{line}: gradguard has no command {rest[0]!r}")
            continue
        text = command_help(rest[0])
        for option in rest[1:]:
            if option == "-m" or option.endswith(".py") or option in ("SCRIPT", "MODULE"):
                break  # what follows belongs to the script
            if option.startswith("-") and option.split("=")[0] not in text:
                found.append(f"{line}: gradguard {rest[0]} has no option {option}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_command_shown_exists(page: Path) -> None:
    """Every gradguard command and option, make target, pytest option and repo path shown."""
    problems = [problem for line in shell_lines(page) for problem in problems_of(line)]
    assert not problems, problems


def test_the_checker_catches_what_does_not_exist() -> None:
    """An unknown command, option, target, file or wheel version is reported."""
    assert problems_of("gradguard frobnicate x.py")
    assert problems_of("gradguard run --frobnicate x.py")
    assert problems_of("gradguard bench --no-such-option")
    assert problems_of("make frobnicate")
    assert problems_of("python examples/no_such_example.py")
    assert problems_of("pip install dist/gradguard-9.9.9-py3-none-any.whl")
    assert problems_of("pytest --gradguard-frobnicate")
    assert not problems_of("GRADGUARD_STRICT=1 gradguard run --strict examples/train_fixed.py -x")
