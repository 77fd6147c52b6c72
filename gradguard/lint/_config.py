"""``[tool.gradguard.lint]`` in ``pyproject.toml``: found from the linted paths upwards, validated.

Keys: ``select``, ``ignore``, ``exclude`` (lists of strings), ``per-file-ignores`` (a table of
glob -> list of codes or names) and ``fail-on`` (``"error"``, ``"warning"``, ``"note"`` or
``"never"``). Patterns are relative to the directory of the ``pyproject.toml``. The command line
overrides each key it gives. An unknown key or a bad value is an error that lists the valid ones.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradguard.lint._errors import LintUsageError
from gradguard.lint._files import IgnoreList, exclude_list
from gradguard.lint._select import resolve

FAIL_ON = ("error", "warning", "note", "never")
KEYS = ("select", "ignore", "exclude", "per-file-ignores", "fail-on")
TABLE = "[tool.gradguard.lint]"


@dataclass
class FileConfig:
    """What one ``[tool.gradguard.lint]`` table says; ``None`` where it says nothing."""

    path: Path | None = None
    select: frozenset[str] | None = None
    ignore: frozenset[str] | None = None
    exclude: IgnoreList | None = None
    per_file_ignores: list[tuple[IgnoreList, frozenset[str]]] = field(default_factory=list)
    fail_on: str | None = None

    def ignored_in(self, file: Path) -> frozenset[str]:
        """The codes ``per-file-ignores`` switches off for ``file`` (an absolute path)."""
        codes: set[str] = set()
        for pattern, ignored in self.per_file_ignores:
            if pattern.verdict(file, False):
                codes.update(ignored)
        return frozenset(codes)


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        try:
            import tomli as tomllib
        except ImportError:
            raise LintUsageError(
                f"{path}: reading pyproject.toml on Python 3.10 needs the 'tomli' package "
                "(pip install 'gradguard[lint]'), or pass --no-config"
            ) from None
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise LintUsageError(f"{path}: cannot read it as TOML: {error}") from None
    return data


def _table(data: dict[str, Any]) -> Any:
    tool = data.get("tool")
    if not isinstance(tool, dict):
        return None
    gradguard = tool.get("gradguard")
    if not isinstance(gradguard, dict):
        return None
    return gradguard.get("lint")


def _strings(value: Any, where: str, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise LintUsageError(f"{where}: expected a list of strings ({what}), got {value!r}")
    return value


def parse_table(table: Any, path: Path) -> FileConfig:
    """Validate one ``[tool.gradguard.lint]`` table read from ``path``.

    Raises:
        LintUsageError: an unknown key or a bad value; the message lists the valid ones.
    """
    where = f"{path} {TABLE}"
    if not isinstance(table, dict):
        raise LintUsageError(f"{where}: expected a table, got {table!r}")
    unknown = [key for key in table if key not in KEYS]
    if unknown:
        raise LintUsageError(
            f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}"
        )
    base = path.parent.resolve()
    config = FileConfig(path=path)
    if "select" in table:
        config.select = resolve(
            _strings(table["select"], f"{where} select", "rule codes or names"),
            where=f"{where} select",
        )
    if "ignore" in table:
        config.ignore = resolve(
            _strings(table["ignore"], f"{where} ignore", "rule codes or names"),
            where=f"{where} ignore",
        )
    if "exclude" in table:
        patterns = _strings(table["exclude"], f"{where} exclude", ".gitignore-style globs")
        config.exclude = exclude_list(patterns, base, where=f"{where} exclude")
    if "per-file-ignores" in table:
        value = table["per-file-ignores"]
        key_where = f"{where} per-file-ignores"
        if not isinstance(value, dict):
            raise LintUsageError(
                f"{key_where}: expected a table of glob = [codes or names], got {value!r}"
            )
        for glob, codes in value.items():
            entry_where = f"{key_where} {glob!r}"
            items = _strings(codes, entry_where, "rule codes or names")
            ignored = resolve(items, where=entry_where)
            config.per_file_ignores.append((exclude_list([glob], base, where=key_where), ignored))
    if "fail-on" in table:
        fail_on = table["fail-on"]
        if fail_on not in FAIL_ON:
            raise LintUsageError(
                f"{where} fail-on: {fail_on!r} is not valid; choose from {', '.join(FAIL_ON)}"
            )
        config.fail_on = fail_on
    return config


def find(paths: Sequence[str]) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.gradguard.lint]`` table above the paths.

    The search starts at the deepest directory holding every path and goes up to the root.
    """
    resolved = [Path(p).resolve() for p in paths] or [Path.cwd()]
    directories = [p if p.is_dir() else p.parent for p in resolved]
    start = Path(os.path.commonpath([str(d) for d in directories]))
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        try:
            text = candidate.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        # Parse only a file that can hold the table: cheaper, and on Python 3.10 without tomli
        # another tool's pyproject.toml is no reason to fail.
        if "gradguard" in text and _table(_load_toml(candidate)) is not None:
            return candidate
    return None


def load(path: Path) -> FileConfig:
    """Read and validate the table of ``path`` (an empty configuration if it has none).

    Raises:
        LintUsageError: the file cannot be read, or its table is invalid.
    """
    if not path.is_file():
        raise LintUsageError(f"{path}: no such configuration file")
    table = _table(_load_toml(path))
    if table is None:
        return FileConfig(path=path)
    return parse_table(table, path)
