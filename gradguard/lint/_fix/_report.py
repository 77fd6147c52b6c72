"""What ``--fix`` and ``--diff`` did: the fixes applied, the ones left and why, what remains."""

from __future__ import annotations

from dataclasses import dataclass, field

from gradguard.lint._finding import Finding


@dataclass(frozen=True)
class Applied:
    """One fix: the findings it removes and a sentence saying what changed."""

    file: str
    line: int
    codes: tuple[str, ...]
    description: str
    safe: bool


@dataclass(frozen=True)
class LeftAlone:
    """A finding that has a fix which was not applied, and why."""

    finding: Finding
    reason: str


@dataclass
class FixReport:
    """The outcome of fixing every file with fixable findings.

    ``remaining`` is what a plain ``gradguard lint`` reports after the fixes (for ``--diff``,
    what it reports now), with ``fingerprints`` for the baseline.
    """

    applied: list[Applied] = field(default_factory=list)
    left: list[LeftAlone] = field(default_factory=list)
    remaining: list[Finding] = field(default_factory=list)
    fingerprints: dict[Finding, str] = field(default_factory=dict)
    changed_files: list[str] = field(default_factory=list)
    diff: str = ""
    written: bool = False
    unsafe_available: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """What changed and what was left, one line each, for stderr."""
        lines: list[str] = []
        verb = "fixed" if self.written else "would fix"
        for fix in self.applied:
            tag = "" if fix.safe else " (unsafe fix)"
            codes = "/".join(fix.codes)
            lines.append(f"{fix.file}:{fix.line}: {codes} {verb}{tag}: {fix.description}")
        for left in self.left:
            f = left.finding
            lines.append(f"{f.file}:{f.line}: {f.code} left as it is: {left.reason}")
        for error in self.errors:
            lines.append(f"gradguard lint: {error}")
        count = sum(len(fix.codes) for fix in self.applied)
        files = len(self.changed_files)
        if self.written:
            head = f"Fixed {count} finding(s) in {files} file(s)"
        else:
            head = f"{count} finding(s) in {files} file(s) would be fixed (nothing written)"
        tail = f"; {len(self.left)} fixable finding(s) left as they are" if self.left else ""
        lines.append(head + tail + ".")
        if self.unsafe_available:
            lines.append(
                f"{self.unsafe_available} finding(s) left are of rules with an unsafe fix "
                "(GG102, GG103, GG104, GG109): review them with --diff --unsafe-fixes, apply them "
                "with --fix --unsafe-fixes."
            )
        return "\n".join(lines) + "\n"
