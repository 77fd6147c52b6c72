"""Pinned excerpts of real training code: the analysis makes exactly the hand-labelled findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradguard.lint._analysis import analyze

_REAL = Path(__file__).parent / "real"
_LABELS = json.loads((_REAL / "labels.json").read_text())["findings"]
_EXCERPTS = sorted(_REAL.rglob("*.py.txt"))


def _name(path: Path) -> str:
    return path.relative_to(_REAL).as_posix()[: -len(".txt")]


@pytest.mark.parametrize("path", _EXCERPTS, ids=_name)
def test_excerpt_makes_exactly_the_labelled_findings(path: Path) -> None:
    name = _name(path)
    found = {(f.line, f.code) for f in analyze(path.read_text(encoding="utf-8"), name)}
    labelled = {(label["line"], label["code"]) for label in _LABELS if label["file"] == name}
    assert found == labelled


def test_every_label_is_a_true_finding_of_an_excerpt() -> None:
    names = {_name(path) for path in _EXCERPTS}
    assert all(label["verdict"] == "true" for label in _LABELS)
    assert {label["file"] for label in _LABELS} <= names


def test_each_codebase_keeps_its_licence_and_source() -> None:
    readme = (_REAL / "README.md").read_text()
    for codebase in ("pytorch-examples", "lightning", "accelerate", "timm", "litgpt", "opacus"):
        assert (_REAL / codebase / "LICENSE").is_file()
        assert f"`{codebase}/`" in readme
