"""The flake8 plugin: ``flake8`` reports gradguard's GG1xx findings beside its own.

Registered as the ``flake8.extension`` entry point ``GG1``, so flake8 selects the codes by
default; flake8's ``--select``/``--ignore``/``--extend-select``, ``per-file-ignores`` and
``# noqa`` (on the finding's line, flake8's rule) apply as to any plugin. GG110 (a note, off by
default in ``gradguard lint``) is off here too until ``--extend-select GG110``. gradguard's own
comments (``# gradguard: ignore[...]``, also on the line that caused the state, and
``# gradguard: skip-file``) are honoured as ``gradguard lint`` honours them. A file that does
not parse is flake8's E999, not GG100.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from typing import Any

from gradguard import __version__
from gradguard.lint._rules import RULES
from gradguard.lint._suppress import Suppressions

# Off by default in flake8 as in gradguard lint; GG100 is flake8's own E999.
DEFAULT_IGNORE = tuple(code for code, rule in RULES.items() if not rule.enabled_by_default)


class GradguardChecker:
    """flake8 checker: one instance per file, given the parsed tree, the file name and its lines."""

    name = "gradguard"
    version = __version__

    def __init__(self, tree: ast.AST, filename: str, lines: Sequence[str]) -> None:
        """Keep what flake8 gives (the tree is unused: the analysis parses the source itself)."""
        self._filename = filename
        self._lines = lines

    @classmethod
    def add_options(cls, option_manager: Any) -> None:
        """Leave the rules that are off by default off until selected."""
        option_manager.extend_default_ignore(list(DEFAULT_IGNORE))

    def run(self) -> Iterator[tuple[int, int, str, type[GradguardChecker]]]:
        """Yield ``(line, column, "GG1xx name: message", type)`` per finding, as flake8 wants."""
        from gradguard.lint._driver import default_analyze

        source = "".join(self._lines)
        # flake8 applies its own noqa (and --disable-noqa); gradguard's comments are ours to read.
        suppressions = Suppressions.parse(source, noqa=False)
        if suppressions.skip_file:
            return
        findings = [f for f in default_analyze()(source, self._filename) if f.code != "GG100"]
        kept, _ = suppressions.filter(findings)
        for finding in kept:
            text = f"{finding.code} {finding.name}: {finding.message} Fix: {finding.fix}"
            yield finding.line, finding.column, text, type(self)
