"""docs/integrations.md: each snippet runs under `gradguard run` against the real library.

A snippet is the ```python block after a ``<!-- test: NAME -->`` line; it must produce exactly the
findings its ``# <- GGxxx`` comments mark (code and line), nothing from the library's own loops.
Nothing is downloaded: the Hugging Face snippet saves a tiny random model and loads it back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "integrations.md"
SNIPPET = re.compile(r"<!-- test: (\w+) -->\n```python\n(.*?)```", re.S)
MARK = re.compile(r"# <- (GG\d{3})")
SNIPPETS = dict(SNIPPET.findall(PAGE.read_text()))


def test_page_has_a_snippet_per_library() -> None:
    """Lightning, Hugging Face, Ignite and Accelerate each have a tested snippet."""
    assert set(SNIPPETS) == {"lightning", "transformers", "ignite", "accelerate"}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_snippet_reports_exactly_the_marked_finding(name: str, tmp_path: Path) -> None:
    """The library's own loop is clean; the mistake marked in the snippet is found at its line."""
    source = SNIPPETS[name]
    script = tmp_path / f"{name}_snippet.py"
    script.write_text(source)
    expected = sorted(
        (code, line)
        for line, text in enumerate(source.splitlines(), start=1)
        for code in MARK.findall(text)
    )
    assert expected, "a snippet marks the finding it shows"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    report = tmp_path / "findings.json"
    result = subprocess.run(
        [sys.executable, "-m", "gradguard", "run", "--json", str(report), str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(report.read_text())["findings"]
    assert sorted((f["code"], f["line"]) for f in found) == expected, result.stderr
    assert {f["file"] for f in found} == {str(script)}
