"""The one error the linter's interface raises for bad input: the command exits with status 2."""

from __future__ import annotations


class LintUsageError(ValueError):
    """Bad arguments or configuration; the message names what was given and what is valid."""
