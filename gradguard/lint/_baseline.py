"""Baselines: record today's findings once, then fail only on new ones.

A finding is matched by its code, its file and a fingerprint of the statement it flags: the
source text of its lines with comments and whitespace normalised away, so moving the statement
(lines inserted above it, re-indentation) keeps the match, and editing it does not. Identical
statements in one file are told apart by count: a baseline entry with ``count: 2`` absorbs two.

File format (``--write-baseline FILE``)::

    {"version": 1, "findings": [{"code": "GG103", "file": "train.py",
                                 "fingerprint": "1f3a...", "count": 1, "message": "..."}]}

``file`` is relative to the baseline file's directory, so the baseline works from any directory.
"""

from __future__ import annotations

import io
import json
import os
import tokenize
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gradguard.lint._errors import LintUsageError
from gradguard.lint._finding import Finding

VERSION = 1
# A finding at a def line may span the whole function: fingerprint its first lines only.
_MAX_LINES = 8
_SKIP = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
)


def normalised_statement(lines: Sequence[str], finding: Finding) -> str:
    """The flagged lines as one line of tokens, comments and layout removed."""
    first = max(finding.line, 1)
    last = min(max(finding.end_line, first), first + _MAX_LINES - 1, len(lines))
    snippet = [line.strip() for line in lines[first - 1 : last]]
    text = "\n".join(snippet)
    tokens: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type not in _SKIP:
                tokens.append(token.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        # An unclosed bracket (the statement goes on past the lines kept): what was read counts.
        pass
    if not tokens:
        return " ".join(" ".join(snippet).split())
    return " ".join(tokens)


def fingerprint(lines: Sequence[str], finding: Finding) -> str:
    """A short stable hash of the finding's code and normalised statement."""
    import hashlib  # here, not at the top: loading OpenSSL costs a clean run ~10 ms

    text = f"{finding.code}\0{normalised_statement(lines, finding)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _key_path(file: str, base: Path) -> str:
    absolute = Path(file).resolve()
    try:
        return Path(os.path.relpath(absolute, base)).as_posix()
    except ValueError:  # another drive on Windows
        return absolute.as_posix()


def write(path: Path, findings: Iterable[tuple[Finding, str]]) -> int:
    """Write the baseline of ``(finding, fingerprint)`` pairs to ``path``; returns how many."""
    base = path.resolve().parent
    counts: Counter[tuple[str, str, str]] = Counter()
    messages: dict[tuple[str, str, str], str] = {}
    for finding, print_ in findings:
        key = (_key_path(finding.file, base), finding.code, print_)
        counts[key] += 1
        messages.setdefault(key, finding.message)
    entries = [
        {"code": code, "file": file, "fingerprint": print_, "count": counts[key],
         "message": messages[key]}
        for key in sorted(counts)
        for file, code, print_ in (key,)
    ]
    text = json.dumps({"version": VERSION, "findings": entries}, indent=2) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise LintUsageError(f"--write-baseline {path}: cannot write it: {error}") from None
    return sum(counts.values())


class Baseline:
    """A loaded baseline: which findings it already knows."""

    def __init__(self, path: Path) -> None:
        """Load ``path``.

        Raises:
            LintUsageError: the file is missing, not JSON, or not a gradguard baseline.
        """
        where = f"--baseline {path}"
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise LintUsageError(
                f"{where}: cannot read it ({error.strerror}); create it with --write-baseline"
            ) from None
        except json.JSONDecodeError as error:
            raise LintUsageError(f"{where}: not JSON: {error}") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise LintUsageError(
                f"{where}: not a gradguard baseline of version {VERSION} "
                "(expected {\"version\": 1, \"findings\": [...]}); rewrite it with --write-baseline"
            )
        self._base = path.resolve().parent
        self._remaining: Counter[tuple[str, str, str]] = Counter()
        entries = data.get("findings")
        if not isinstance(entries, list):
            raise LintUsageError(f"{where}: 'findings' must be a list")
        for entry in entries:
            try:
                key = (str(entry["file"]), str(entry["code"]), str(entry["fingerprint"]))
                count = int(entry.get("count", 1))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise LintUsageError(
                    f"{where}: entry {entry!r} lacks 'file', 'code' or 'fingerprint'"
                ) from None
            self._remaining[key] += count

    def absorbs(self, finding: Finding, print_: str) -> bool:
        """Whether the baseline knows this finding (each entry absorbs ``count`` findings)."""
        key = (_key_path(finding.file, self._base), finding.code, print_)
        if self._remaining[key] > 0:
            self._remaining[key] -= 1
            return True
        return False
