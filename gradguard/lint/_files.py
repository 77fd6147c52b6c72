"""Which files ``gradguard lint`` reads: ``.py``/``.pyi`` under the given paths, minus the excluded.

Directories are walked in sorted order. ``.gitignore`` files apply to what a walk finds (those of
the enclosing git work tree above the starting directory too); ``--exclude`` and the
configuration's ``exclude`` apply to walked and explicitly named files alike, so a pre-commit hook
that passes file names honours them. Patterns follow ``.gitignore`` syntax (``*``, ``**``, ``?``,
``[...]``, a trailing ``/`` for directories, a ``/`` inside anchoring to the base directory,
``!`` to re-include).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gradguard.lint._errors import LintUsageError

SUFFIXES = (".py", ".pyi")
# Never worth walking into: version control, environments and caches.
DEFAULT_EXCLUDE = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "node_modules",
    "site-packages",
    "__pypackages__",
)


@dataclass(frozen=True)
class Pattern:
    """One ``.gitignore``-style line, compiled, relative to the directory it applies to."""

    regex: re.Pattern[str]
    negated: bool
    dir_only: bool
    text: str


def _translate(glob: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = glob[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif char == "\\" and i + 1 < len(glob):
            i += 1
            out.append(re.escape(glob[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def compile_pattern(line: str) -> Pattern | None:
    """A ``.gitignore`` line as a :class:`Pattern`; ``None`` for blanks and comments."""
    text = line.rstrip("\n").rstrip("\r")
    if not text.endswith("\\ "):
        text = text.rstrip()
    if not text or text.startswith("#"):
        return None
    negated = text.startswith("!")
    if negated:
        text = text[1:]
    dir_only = text.endswith("/")
    body = text.rstrip("/")
    if not body:
        return None
    anchored = "/" in body
    body = body.lstrip("/")
    prefix = "" if anchored else "(?:.*/)?"
    regex = re.compile(prefix + _translate(body) + r"\Z")
    return Pattern(regex, negated, dir_only, line.strip())


@dataclass
class IgnoreList:
    """Patterns that apply below one base directory."""

    base: Path
    patterns: list[Pattern]

    def verdict(self, path: Path, is_dir: bool) -> bool | None:
        """``True`` excluded, ``False`` re-included, ``None`` when no pattern speaks of ``path``."""
        try:
            relative = path.relative_to(self.base).as_posix()
        except ValueError:
            return None
        if relative == ".":
            return None
        result: bool | None = None
        for pattern in self.patterns:
            if pattern.dir_only and not is_dir:
                continue
            if pattern.regex.match(relative):
                result = not pattern.negated
        return result


def exclude_list(patterns: Iterable[str], base: Path, *, where: str) -> IgnoreList:
    """``--exclude``/configuration patterns relative to ``base``.

    Raises:
        LintUsageError: a pattern that is not a string or is empty.
    """
    compiled: list[Pattern] = []
    for raw in patterns:
        pattern = compile_pattern(raw) if isinstance(raw, str) else None
        if pattern is None:
            raise LintUsageError(
                f"{where}: {raw!r} is not an exclude pattern; give a .gitignore-style glob "
                "such as 'build/', 'tests/fixtures/**' or '*_pb2.py'"
            )
        compiled.append(pattern)
    return IgnoreList(base, compiled)


def _read_gitignore(directory: Path) -> IgnoreList | None:
    try:
        text = (directory / ".gitignore").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    patterns = [p for p in (compile_pattern(line) for line in text.splitlines()) if p]
    return IgnoreList(directory, patterns) if patterns else None


def _git_root(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None


def _excluded(lists: Sequence[IgnoreList], path: Path, is_dir: bool) -> bool:
    excluded = False
    for ignore in lists:
        verdict = ignore.verdict(path, is_dir)
        if verdict is not None:
            excluded = verdict
    return excluded


def discover(
    paths: Sequence[str],
    exclude: Sequence[IgnoreList] = (),
    *,
    respect_gitignore: bool = True,
) -> list[str]:
    """The files to lint, as paths spelled from the arguments (``src/a.py`` for ``src``).

    Args:
        paths: files and directories; a file is linted whatever its suffix.
        exclude: pattern lists from ``--exclude`` and the configuration.
        respect_gitignore: read ``.gitignore`` files while walking.

    Raises:
        LintUsageError: a path that does not exist.
    """
    found: list[str] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise LintUsageError(f"{given}: no such file or directory")
        absolute = path.resolve()
        if path.is_file():
            if absolute not in seen and not _excluded(exclude, absolute, False):
                seen.add(absolute)
                found.append(given)
            continue
        lists = list(exclude)
        if respect_gitignore:
            root = _git_root(absolute)
            if root is not None:
                for directory in reversed(absolute.parents):
                    if directory == root or root in directory.parents:
                        gitignore = _read_gitignore(directory)
                        if gitignore is not None:
                            lists.append(gitignore)
        _walk(given, absolute, lists, respect_gitignore, found, seen)
    return found


def _walk(
    spelled: str,
    absolute: Path,
    lists: list[IgnoreList],
    respect_gitignore: bool,
    found: list[str],
    seen: set[Path],
) -> None:
    if respect_gitignore:
        gitignore = _read_gitignore(absolute)
        if gitignore is not None:
            lists = [*lists, gitignore]
    try:
        entries = sorted(os.scandir(absolute), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        child = absolute / entry.name
        child_spelled = os.path.join(spelled, entry.name) if spelled != "." else entry.name
        # A symlinked directory is not followed: it could lead back up the tree.
        if entry.is_dir(follow_symlinks=False):
            if entry.name in DEFAULT_EXCLUDE or _excluded(lists, child, True):
                continue
            _walk(child_spelled, child, lists, respect_gitignore, found, seen)
        elif entry.name.endswith(SUFFIXES) and entry.is_file():
            if child in seen or _excluded(lists, child, False):
                continue
            seen.add(child)
            found.append(child_spelled)
