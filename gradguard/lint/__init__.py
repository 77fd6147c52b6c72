"""gradguard.lint: find no_grad/eval mistakes in source code before it runs.

Importable without torch: the analysis uses only the standard library's ``ast``.
"""

from __future__ import annotations

from gradguard.lint._finding import Finding, Related
from gradguard.lint._rules import RULES, Rule

__all__ = ["RULES", "Finding", "Related", "Rule"]
