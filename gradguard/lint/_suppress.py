"""Suppression comments: ``gradguard: ignore[...]``, ``noqa: GG1xx`` and ``gradguard: skip-file``.

A comment suppresses a finding on the finding's own line or on a line that caused the state
(one of its ``related`` lines in the same file), so ``model.eval()  # gradguard: ignore[GG103]``
silences the step it leads to. ``ignore[...]`` takes codes or names, an optional reason after the
bracket; ``noqa`` takes codes, and only its ``GG`` codes concern gradguard (the rest belong to
other tools). A bare ``noqa`` or ``gradguard: ignore`` silences every rule on its line.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass, field

from gradguard.lint._finding import Finding
from gradguard.lint._rules import RULES
from gradguard.lint._select import lookup

_IGNORE = re.compile(
    r"#\s*gradguard\s*:\s*ignore(?![\w-])(?:\[(?P<items>[^\]]*)\])?", re.IGNORECASE
)
_SKIP_FILE = re.compile(r"#\s*gradguard\s*:\s*skip-file\b", re.IGNORECASE)
# flake8's own grammar: bare "noqa", "noqa: X1,X2", "NOQA:X1 X2", each after a hash.
_NOQA = re.compile(
    r"#\s*noqa(?::\s?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE
)

ALL = "*"


@dataclass
class Directive:
    """One suppression comment: the codes it names (``ALL`` for a blanket one)."""

    line: int
    column: int
    text: str
    codes: dict[str, str]  # code -> the token as written
    own: bool  # "gradguard: ignore" (ours alone) rather than "noqa" (shared with other tools)
    unknown: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)


@dataclass
class Suppressions:
    """The suppression comments of one file, and which of them were used."""

    skip_file: bool = False
    by_line: dict[int, list[Directive]] = field(default_factory=dict)
    read_noqa: bool = True

    @classmethod
    def parse(cls, source: str, *, noqa: bool = True) -> Suppressions:
        """Read the comments of ``source``; a file that does not tokenize has none.

        Args:
            source: the file's text.
            noqa: read ``noqa`` comments too (the flake8 plugin leaves them to flake8).
        """
        result = cls(read_noqa=noqa)
        # Tokenizing costs as much as parsing; most files have no suppression comment at all.
        lowered = source.lower()
        if "gradguard" not in lowered and not (noqa and "noqa" in lowered):
            return result
        try:
            for token in tokenize.generate_tokens(io.StringIO(source).readline):
                if token.type == tokenize.COMMENT:
                    result._add(token.string, token.start[0], token.start[1])
        except (tokenize.TokenError, IndentationError, SyntaxError):
            pass
        return result

    def _add(self, comment: str, line: int, column: int) -> None:
        if _SKIP_FILE.match(comment):
            self.skip_file = True
            return
        # One comment may carry both forms, a flake8 one and ours.
        for match in _IGNORE.finditer(comment):
            items = match.group("items")
            directive = Directive(line, column + match.start(), match.group(0), {}, own=True)
            if items is None:
                directive.codes[ALL] = ""
            else:
                for item in items.replace(",", " ").split():
                    code = lookup(item)
                    if code is None:
                        directive.unknown.append(item)
                    else:
                        directive.codes[code] = item
            self.by_line.setdefault(line, []).append(directive)
        for match in _NOQA.finditer(comment) if self.read_noqa else ():
            codes = match.group("codes")
            directive = Directive(line, column + match.start(), match.group(0), {}, own=False)
            if codes is None:
                directive.codes[ALL] = ""
            else:
                for item in codes.replace(",", " ").split():
                    upper = item.upper()
                    if not upper.startswith("GG"):
                        continue
                    # flake8 reads noqa codes as prefixes: GG1 silences GG101 to GG110.
                    matched = [code for code in RULES if code.startswith(upper)]
                    if not matched:
                        directive.unknown.append(item)
                    for code in matched:
                        directive.codes[code] = item
                if not directive.codes and not directive.unknown:
                    continue
            self.by_line.setdefault(line, []).append(directive)

    def suppresses(self, finding: Finding) -> bool:
        """Whether a comment on the finding's line or a related line silences it; marks it used."""
        lines = [finding.line]
        lines.extend(r.line for r in finding.related if r.file == finding.file)
        hit = False
        for line in lines:
            for directive in self.by_line.get(line, ()):
                if finding.code in directive.codes:
                    directive.used.add(finding.code)
                    hit = True
                elif ALL in directive.codes:
                    directive.used.add(ALL)
                    hit = True
        return hit

    def filter(self, findings: Iterable[Finding]) -> tuple[list[Finding], int]:
        """The findings no comment silences, and how many were silenced."""
        kept: list[Finding] = []
        silenced = 0
        for finding in findings:
            if finding.code != "GG100" and self.suppresses(finding):
                silenced += 1
            else:
                kept.append(finding)
        return kept, silenced

    def unused(self, path: str, active: Iterable[str]) -> list[Finding]:
        """GG190 findings: codes that silenced nothing, and names or codes that are no rule.

        Args:
            path: the file, as findings name it.
            active: the codes that ran; a comment naming a rule that did not run is not unused.
        """
        rule = RULES["GG190"]
        running = set(active)
        out: list[Finding] = []
        for line in sorted(self.by_line):
            for directive in self.by_line[line]:
                problems: list[str] = []
                for item in directive.unknown:
                    problems.append(f"{item!r} is not a gradguard rule")
                for code, written in directive.codes.items():
                    if code in directive.used:
                        continue
                    if code == ALL:
                        # A bare noqa may be there for another tool.
                        if directive.own and not directive.used:
                            problems.append("it silences no finding")
                    elif code in running:
                        problems.append(f"{written} silences no finding here")
                if not problems:
                    continue
                out.append(
                    Finding(
                        code=rule.code,
                        name=rule.name,
                        severity=rule.severity,
                        message=f"unused suppression {directive.text!r}: " + "; ".join(problems),
                        fix="remove the comment, or the codes in it that no longer apply "
                        "(run `gradguard lint --explain CODE` for valid codes)",
                        file=path,
                        line=directive.line,
                        column=directive.column,
                        end_line=directive.line,
                        end_column=directive.column + len(directive.text),
                    )
                )
        return out
