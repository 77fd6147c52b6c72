"""What one lint finding says: the shared record every rule produces and every reporter reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Related:
    """Another line that explains a finding (the ``model.eval()`` that caused the state)."""

    file: str
    line: int
    message: str


@dataclass(frozen=True)
class Finding:
    """One mistake found in one file.

    Lines are 1-based, columns 0-based (as ``ast`` gives them); ``end_line``/``end_column`` close
    the flagged expression or statement. ``fix`` is one sentence saying what to do.
    """

    code: str
    name: str
    severity: Severity
    message: str
    fix: str
    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    related: tuple[Related, ...] = field(default=())
