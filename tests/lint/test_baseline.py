"""Baselines: fingerprints stable under line shifts, counts for repeated statements, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradguard.lint._baseline import Baseline, fingerprint, normalised_statement, write
from gradguard.lint._errors import LintUsageError
from tests.lint.lint_helpers import finding


def test_fingerprint_ignores_position_indentation_comments_and_spacing() -> None:
    """The same statement moved, re-indented or re-commented keeps its fingerprint."""
    before = ["for x in data:", "    optimizer.step()"]
    after = ["", "", "def train():", "  for x in data:", "        optimizer.step( )  # step"]
    assert fingerprint(before, finding("GG107", line=2)) == fingerprint(
        after, finding("GG107", line=5)
    )
    assert normalised_statement(after, finding("GG107", line=5)) == "optimizer . step ( )"


def test_fingerprint_changes_with_the_statement_or_the_code() -> None:
    """Another statement or another rule at the same place is another finding."""
    lines = ["optimizer.step()", "scaler.step(optimizer)"]
    assert fingerprint(lines, finding("GG107", line=1)) != fingerprint(
        lines, finding("GG107", line=2)
    )
    assert fingerprint(lines, finding("GG107", line=1)) != fingerprint(
        lines, finding("GG103", line=1)
    )


def test_multi_line_statement_and_unclosed_bracket() -> None:
    """A statement over several lines is joined; one cut at the cap still fingerprints."""
    lines = ["loss = criterion(", "    model(x),", "    y)"]
    item = finding("GG106", line=1)
    spanning = type(item)(**{**item.__dict__, "end_line": 3})
    assert normalised_statement(lines, spanning) == "loss = criterion ( model ( x ) , y )"
    assert normalised_statement(lines, item) == "loss = criterion ("


def test_baseline_absorbs_as_many_findings_as_it_recorded(tmp_path: Path) -> None:
    """Two identical statements recorded: two absorbed, a third is new."""
    path = tmp_path / "baseline.json"
    item = finding("GG107", file=str(tmp_path / "train.py"))
    assert write(path, [(item, "abc"), (item, "abc")]) == 2
    data = json.loads(path.read_text())
    assert data["findings"][0]["file"] == "train.py"
    assert data["findings"][0]["count"] == 2
    baseline = Baseline(path)
    assert [baseline.absorbs(item, "abc") for _ in range(3)] == [True, True, False]
    assert not Baseline(path).absorbs(item, "other")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('{"version": 2, "findings": []}', "not a gradguard baseline of version 1"),
        ('{"version": 1, "findings": {}}', "'findings' must be a list"),
        ('{"version": 1, "findings": [{"code": "GG101"}]}', "lacks 'file', 'code'"),
    ],
)
def test_bad_baseline_files_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    """A baseline that is not one is refused with what is wrong."""
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(LintUsageError, match=message):
        Baseline(path)
