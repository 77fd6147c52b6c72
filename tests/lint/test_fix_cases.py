"""``--fix --unsafe-fixes`` over every snippet of the rules' test cases: never broken, idempotent.

The invalid and valid snippets of ``tests/lint/cases.py`` are code the analysis is held to; here
each is fixed with every rule selected and every fix on. Whatever a fix does or leaves, the file
compiles, nothing fails, a second run changes nothing, every comment survives, and a rule whose
finding was fixed no longer fires there.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gradguard.lint._analysis import analyze
from tests.lint.cases import INVALID, VALID
from tests.lint.fix_helpers import comments, fix_text

SNIPPETS = [
    pytest.param(source, id=f"{kind}-{code}-{index}")
    for kind, table in (("invalid", INVALID), ("valid", VALID))
    for code, sources in table.items()
    for index, source in enumerate(sources)
]


@pytest.mark.parametrize("source", SNIPPETS)
def test_fixing_a_case_never_breaks_it(source: str, tmp_path: Path) -> None:
    """The fixed snippet compiles, keeps its comments, and is a fixed point of --fix."""
    once, report = fix_text(tmp_path, source, unsafe=True)
    assert report.errors == []
    compile(once, "m.py", "exec")
    assert set(comments(source)) <= set(comments(once))
    before = Counter(f.code for f in analyze(source, "m.py"))
    after = Counter(f.code for f in report.remaining)
    for fix in report.applied:
        for code in fix.codes:
            assert after[code] < before[code], (code, fix.description)
    twice, again = fix_text(tmp_path, once, unsafe=True)
    assert twice == once
    assert again.applied == []
