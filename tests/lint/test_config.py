"""[tool.gradguard.lint]: found from the paths upwards, every key validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradguard.lint._config import find, load
from gradguard.lint._errors import LintUsageError
from tests.lint.lint_helpers import write


def _pyproject(directory: Path, table: str) -> Path:
    return write(directory, "pyproject.toml", "[project]\nname = 'x'\n\n" + table)


def test_found_from_the_paths_upwards_skipping_pyprojects_without_the_table(
    tmp_path: Path,
) -> None:
    """The nearest pyproject.toml that has [tool.gradguard.lint] wins."""
    top = _pyproject(tmp_path, "[tool.gradguard.lint]\nselect = ['GG103']\n")
    _pyproject(tmp_path / "sub", "[tool.ruff]\nline-length = 80\n")
    write(tmp_path, "sub/pkg/a.py", "")
    assert find([str(tmp_path / "sub" / "pkg" / "a.py")]) == top
    assert find([str(tmp_path / "sub" / "pkg"), str(tmp_path / "sub")]) == top
    assert find([str(tmp_path / "sub" / "pkg")]) == top


def test_other_tools_pyproject_is_not_parsed(tmp_path: Path) -> None:
    """A pyproject.toml that never mentions gradguard is passed over, even when it is not TOML."""
    top = _pyproject(tmp_path, "[tool.gradguard.lint]\nfail-on = 'error'\n")
    write(tmp_path, "sub/pyproject.toml", "[tool.black\n")
    write(tmp_path, "sub/a.py", "")
    assert find([str(tmp_path / "sub" / "a.py")]) == top


def test_no_configuration_anywhere(tmp_path: Path) -> None:
    """Without any table above the paths: None (defaults apply)."""
    write(tmp_path, "a.py", "")
    found = find([str(tmp_path / "a.py")])
    assert found is None or tmp_path not in found.parents


def test_every_key_is_read(tmp_path: Path) -> None:
    """select, ignore, exclude, per-file-ignores and fail-on, with names and prefixes."""
    path = _pyproject(
        tmp_path,
        "[tool.gradguard.lint]\n"
        "select = ['GG10', 'eval-no-grad-pair']\n"
        "ignore = ['graph-accumulated']\n"
        "exclude = ['generated/']\n"
        "fail-on = 'error'\n"
        "[tool.gradguard.lint.per-file-ignores]\n"
        "'tests/**' = ['GG107', 'step-in-eval-mode']\n",
    )
    config = load(path)
    assert config.select is not None and {"GG101", "GG109", "GG110"} <= config.select
    assert config.ignore == {"GG106"}
    assert config.fail_on == "error"
    assert config.exclude is not None
    assert config.exclude.verdict(tmp_path / "generated", True)
    assert config.ignored_in(tmp_path / "tests" / "unit" / "test_a.py") == {"GG107", "GG103"}
    assert config.ignored_in(tmp_path / "src" / "a.py") == frozenset()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("selekt = ['GG101']", "unknown key 'selekt'; valid keys: select, ignore, exclude, "
         "per-file-ignores, fail-on"),
        ("select = 'GG101'", "select: expected a list of strings"),
        ("ignore = ['GG777']", "ignore: unknown rule 'GG777'; valid: ALL"),
        ("fail-on = 'sometimes'", "'sometimes' is not valid; choose from error, warning, note, "
         "never"),
        ("per-file-ignores = ['x']", "per-file-ignores: expected a table"),
        ("per-file-ignores = {'a.py' = 'GG101'}", "'a.py': expected a list of strings"),
        ("per-file-ignores = {'a.py' = ['bogus']}", "unknown rule 'bogus'"),
        ("exclude = ['']", "'' is not an exclude pattern"),
    ],
)
def test_bad_keys_and_values_list_the_valid_ones(
    tmp_path: Path, table: str, message: str
) -> None:
    """Each mistake in the table is an error naming the file, the key and what is valid."""
    path = _pyproject(tmp_path, f"[tool.gradguard.lint]\n{table}\n")
    with pytest.raises(LintUsageError, match=r"pyproject\.toml") as error:
        load(path)
    assert message in str(error.value)


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    """A pyproject.toml that is not TOML: a usage error naming it."""
    path = write(tmp_path, "pyproject.toml", "[tool.gradguard.lint\n")
    with pytest.raises(LintUsageError, match="cannot read it as TOML"):
        load(path)
    with pytest.raises(LintUsageError, match="cannot read it as TOML"):
        find([str(tmp_path)])


def test_a_table_that_is_not_a_table(tmp_path: Path) -> None:
    """tool.gradguard.lint = 3: expected a table."""
    path = write(tmp_path, "pyproject.toml", "[tool.gradguard]\nlint = 3\n")
    with pytest.raises(LintUsageError, match="expected a table, got 3"):
        load(path)
