"""The linter on the watchdog's corpus and on the nine classic mistakes, with their clean twins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradguard.lint._analysis import analyze
from gradguard.lint._rules import RULES

_HERE = Path(__file__).parent
_CORPUS = _HERE.parent / "corpus"
_EXAMPLES = _HERE.parent.parent / "examples"
_EXPECT = re.compile(r"#\s*expect:\s*([A-Z0-9, ]+)")

#: What the linter finds statically in each mistake script of the runtime corpus, beside the
#: runtime code the script marks: (line, static code).
CORPUS_FINDINGS = {
    "mistake_grad_never_reenabled.py": {(16, "GG104")},
    "mistake_left_in_eval.py": {(18, "GG103")},
    "mistake_loaded_model_without_eval.py": {(14, "GG101")},
    "mistake_step_without_backward.py": {(20, "GG107")},
    "mistake_validation_without_no_grad.py": {(22, "GG102"), (23, "GG106")},
}

#: What the linter finds in the example pair: MISTAKE 2 (the model left in eval by
#: `checkpoint_score()` and trained on) at the call of the stepping helper, MISTAKE 3 and 4 at
#: their lines. MISTAKE 1 (validation run by a helper under no_grad in training mode) is the
#: watchdog's alone.
EXAMPLE_FINDINGS = {(70, "GG102"), (76, "GG104"), (91, "GG103")}


def enabled_findings(path: Path) -> set[tuple[int, str]]:
    return {
        (f.line, f.code)
        for f in analyze(path.read_text(), str(path))
        if RULES[f.code].enabled_by_default
    }


@pytest.mark.parametrize("name", sorted(CORPUS_FINDINGS))
def test_corpus_mistake_is_found_statically(name: str) -> None:
    assert enabled_findings(_CORPUS / name) == CORPUS_FINDINGS[name]


@pytest.mark.parametrize("path", sorted(_CORPUS.glob("clean_*.py")), ids=lambda p: p.name)
def test_corpus_clean_twin_is_silent(path: Path) -> None:
    assert enabled_findings(path) == set()


def test_every_corpus_mistake_is_covered() -> None:
    assert {p.name for p in _CORPUS.glob("mistake_*.py")} == set(CORPUS_FINDINGS)


def test_all_nine_classic_mistakes_are_found_on_their_lines() -> None:
    source = (_HERE / "nine" / "mistakes.py").read_text()
    marked = {
        (number, code.strip())
        for number, line in enumerate(source.splitlines(), start=1)
        if (match := _EXPECT.search(line))
        for code in match.group(1).split(",")
    }
    assert {code for _, code in marked} == {f"GG10{n}" for n in range(1, 10)}
    assert enabled_findings(_HERE / "nine" / "mistakes.py") == marked


def test_the_nine_mistakes_clean_twin_is_silent() -> None:
    assert enabled_findings(_HERE / "nine" / "clean.py") == set()


def test_example_with_mistakes_is_found_where_each_mistake_shows() -> None:
    source = (_EXAMPLES / "train_with_mistakes.py").read_text()
    lines = source.splitlines()
    assert "train_one_epoch(model, train_loader, optimizer)" in lines[91 - 1]
    assert "MISTAKE 3" in lines[70 - 1] and "MISTAKE 4" in lines[76 - 1]
    assert enabled_findings(_EXAMPLES / "train_with_mistakes.py") == EXAMPLE_FINDINGS


def test_example_fixed_twin_is_silent() -> None:
    assert enabled_findings(_EXAMPLES / "train_fixed.py") == set()
