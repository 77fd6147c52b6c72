"""File discovery: suffixes, sorted walk, .gitignore semantics and exclude patterns."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradguard.lint._errors import LintUsageError
from gradguard.lint._files import compile_pattern, discover, exclude_list
from tests.lint.lint_helpers import write


def _tree(root: Path, *names: str) -> None:
    for name in names:
        write(root, name, "")


def test_walks_py_and_pyi_in_sorted_order_and_skips_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only .py/.pyi, sorted, spelled from the argument; .venv and __pycache__ skipped."""
    _tree(tmp_path, "b.py", "a/z.pyi", "a/y.py", "c.txt", ".venv/lib/x.py", "__pycache__/q.py")
    monkeypatch.chdir(tmp_path)
    assert discover(["."]) == ["a/y.py", "a/z.pyi", "b.py"]
    assert discover(["a"]) == ["a/y.py", "a/z.pyi"]


def test_named_file_is_linted_whatever_its_suffix_and_only_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file given by name is read even without .py; given twice, read once."""
    _tree(tmp_path, "script", "a.py")
    monkeypatch.chdir(tmp_path)
    assert discover(["script", "a.py", "."]) == ["script", "a.py"]


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    """A path that does not exist is named in the error."""
    with pytest.raises(LintUsageError, match=r"missing\.py: no such file or directory"):
        discover([str(tmp_path / "missing.py")])


def test_gitignore_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Directory-only, anchored, **, negation and nested .gitignore files; the repo root's too."""
    (tmp_path / ".git").mkdir()
    write(tmp_path, ".gitignore", "build/\n/top.py\n**/gen_*.py\n*.py[i]\n!keep.pyi\n")
    write(tmp_path, "src/.gitignore", "local.py\n")
    _tree(
        tmp_path,
        "build/a.py", "top.py", "src/top.py", "src/deep/gen_x.py", "src/stub.pyi", "keep.pyi",
        "src/local.py", "other/local.py", "src/ok.py",
    )
    monkeypatch.chdir(tmp_path)
    assert discover(["."]) == ["keep.pyi", "other/local.py", "src/ok.py", "src/top.py"]
    # Walking from inside the work tree still applies the root's .gitignore.
    assert discover(["src"]) == ["src/ok.py", "src/top.py"]
    assert len(discover(["."], respect_gitignore=False)) == 9


def test_exclude_patterns_apply_to_walked_and_named_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--exclude: a basename glob anywhere, a path relative to its base."""
    _tree(tmp_path, "a/x_pb2.py", "a/b.py", "tests/fixtures/f.py", "tests/t.py")
    monkeypatch.chdir(tmp_path)
    exclude = exclude_list(["*_pb2.py", "tests/fixtures/"], tmp_path.resolve(), where="--exclude")
    assert discover(["."], [exclude]) == ["a/b.py", "tests/t.py"]
    assert discover(["a/x_pb2.py", "a/b.py"], [exclude]) == ["a/b.py"]


def test_pattern_translation_edge_cases() -> None:
    """Comments and blanks are no pattern; escaped characters and classes work."""
    assert compile_pattern("# comment") is None
    assert compile_pattern("   ") is None
    pattern = compile_pattern(r"\#name[0-9].py")
    assert pattern is not None and pattern.regex.match("#name3.py")
    assert not pattern.regex.match("#namex.py")
    anywhere = compile_pattern("docs/**")
    assert anywhere is not None and anywhere.regex.match("docs/a/b.py")
    assert not anywhere.regex.match("src/docs/a.py")


def test_symlinked_directories_are_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link back up the tree does not make the walk loop or read files twice."""
    _tree(tmp_path, "pkg/a.py")
    (tmp_path / "pkg" / "loop").symlink_to(tmp_path, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert discover(["."]) == ["pkg/a.py"]
