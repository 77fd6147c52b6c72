"""``gradguard lint`` as users run it: a real subprocess per test, in a temporary project."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.lint.lint_helpers import (
    ASYNC_NO_GRAD,
    ASYNC_NO_GRAD_DECORATOR_LINE,
    ASYNC_NO_GRAD_DEF_LINE,
    CLEAN,
    EVAL_NO_GRAD_PAIR,
    EVAL_NO_GRAD_PAIR_LINE,
    REPO,
    run_lint,
    write,
)

UNUSED_NOQA = "x = 1  # noqa: GG101\n"


def test_reports_a_finding_like_ruff_with_fix_and_cause_and_exits_1(tmp_path: Path) -> None:
    """Text output: path:line:col: CODE name: message, then the fix and the related line."""
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    result = run_lint(cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    head = f"serve.py:{ASYNC_NO_GRAD_DEF_LINE}:1: GG108 grad-decorator-on-async: "
    assert lines[0].startswith(head)
    assert lines[1].startswith("  fix: ")
    assert lines[2].startswith(f"  serve.py:{ASYNC_NO_GRAD_DECORATOR_LINE}: ")
    assert lines[-1] == "Found 1 finding (1 error) in 1 of 1 file."
    assert result.stderr == ""


def test_clean_project_exits_0(tmp_path: Path) -> None:
    """Nothing found: exit 0 and a line saying how many files were read."""
    write(tmp_path, "a.py", CLEAN)
    write(tmp_path, "pkg/b.pyi", "def f() -> int: ...\n")
    write(tmp_path, "notes.txt", "not python\n")
    result = run_lint(cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "No findings in 2 files.\n"


def test_parse_error_is_gg100_and_other_files_are_still_linted(tmp_path: Path) -> None:
    """A file that does not parse is GG100; the next file's finding is still reported."""
    write(tmp_path, "a_broken.py", "def f(:\n")
    write(tmp_path, "b_serve.py", ASYNC_NO_GRAD)
    result = run_lint(cwd=tmp_path)
    assert result.returncode == 1
    assert "a_broken.py:1:" in result.stdout
    assert "GG100 parse-error" in result.stdout
    assert f"b_serve.py:{ASYNC_NO_GRAD_DEF_LINE}:1: GG108" in result.stdout


def test_undecodable_file_is_gg100(tmp_path: Path) -> None:
    """Bytes that are not valid in the file's encoding: GG100, not a traceback."""
    (tmp_path / "latin.py").write_bytes(b"x = '\xff\xfe'\n")
    result = run_lint(cwd=tmp_path)
    assert result.returncode == 1
    assert "latin.py:1:1: GG100 parse-error: cannot read latin.py" in result.stdout
    assert "Traceback" not in result.stderr


def test_select_and_ignore_take_codes_names_and_prefixes(tmp_path: Path) -> None:
    """--ignore by name silences a rule; --select by code or prefix keeps only those."""
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    write(tmp_path, "broken.py", "def f(:\n")
    ignored = run_lint("--ignore", "grad-decorator-on-async,GG100", cwd=tmp_path)
    assert ignored.returncode == 0, ignored.stdout
    only_parse = run_lint("--select", "GG100", cwd=tmp_path)
    assert "GG100" in only_parse.stdout and "GG108" not in only_parse.stdout
    prefix = run_lint("--select", "gg10", cwd=tmp_path)
    assert "GG100" in prefix.stdout and "GG108" in prefix.stdout


def test_bad_usage_exits_2_naming_what_is_valid(tmp_path: Path) -> None:
    """Unknown rule, missing path, unknown format: exit 2 with a message listing valid values."""
    write(tmp_path, "a.py", CLEAN)
    unknown = run_lint("--select", "GG999", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "--select: unknown rule 'GG999'" in unknown.stderr
    assert "GG103 (step-in-eval-mode)" in unknown.stderr
    missing = run_lint("nope.py", cwd=tmp_path)
    assert missing.returncode == 2
    assert "nope.py: no such file or directory" in missing.stderr
    bad_format = run_lint("--format", "xml", cwd=tmp_path)
    assert bad_format.returncode == 2
    assert "text" in bad_format.stderr and "sarif" in bad_format.stderr
    bad_fail_on = run_lint("--fail-on", "sometimes", cwd=tmp_path)
    assert bad_fail_on.returncode == 2


def test_fail_on_sets_the_lowest_failing_severity(tmp_path: Path) -> None:
    """A warning fails by default, not with --fail-on error; an error passes with never."""
    write(tmp_path, "a.py", UNUSED_NOQA)
    assert run_lint("--warn-unused-ignores", cwd=tmp_path).returncode == 1
    assert run_lint("--warn-unused-ignores", "--fail-on", "error", cwd=tmp_path).returncode == 0
    assert run_lint("--warn-unused-ignores", "--fail-on", "note", cwd=tmp_path).returncode == 1
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    never = run_lint("--fail-on", "never", cwd=tmp_path)
    assert never.returncode == 0
    assert "GG108" in never.stdout


def test_off_by_default_rule_reports_only_when_selected_and_notes_pass_by_default(
    tmp_path: Path,
) -> None:
    """GG110 is off by default; selected, it is a note, which fails only with --fail-on note."""
    write(tmp_path, "evaluate.py", EVAL_NO_GRAD_PAIR)
    default = run_lint(cwd=tmp_path)
    assert (default.returncode, default.stdout) == (0, "No findings in 1 file.\n")
    selected = run_lint("--select", "eval-no-grad-pair", cwd=tmp_path)
    assert selected.returncode == 0
    assert selected.stdout.startswith(f"evaluate.py:{EVAL_NO_GRAD_PAIR_LINE}:5: GG110 ")
    assert "(1 note)" in selected.stdout
    assert run_lint("--select", "ALL", "--fail-on", "note", cwd=tmp_path).returncode == 1


def test_parallel_and_sequential_runs_report_the_same(tmp_path: Path) -> None:
    """Enough files for worker processes: -j 2 prints exactly what -j 1 prints."""
    for index in range(40):
        text = (ASYNC_NO_GRAD, EVAL_NO_GRAD_PAIR, CLEAN, "def f(:\n")[index % 4]
        write(tmp_path, f"pkg{index % 3}/m{index:02d}.py", text)
    sequential = run_lint("--select", "ALL", "--format", "json", "-j", "1", cwd=tmp_path)
    parallel = run_lint("--select", "ALL", "--format", "json", "-j", "2", cwd=tmp_path)
    assert sequential.returncode == parallel.returncode == 1
    assert parallel.stdout == sequential.stdout
    codes = [f["code"] for f in json.loads(parallel.stdout)["findings"]]
    assert sorted(set(codes)) == ["GG100", "GG108", "GG110"]
    assert len(codes) == 30
    assert run_lint("-j", "0", cwd=tmp_path).returncode == 2


def test_output_writes_the_report_to_a_file_and_the_summary_to_stderr(tmp_path: Path) -> None:
    """--output FILE: the report goes there, stdout stays empty, the summary goes to stderr."""
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    result = run_lint("--format", "json", "--output", "report.json", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Found 1 finding (1 error)" in result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert [f["code"] for f in report["findings"]] == ["GG108"]


def test_json_output_matches_the_documented_schema(tmp_path: Path) -> None:
    """{"version": 1, "findings": [...]} with exactly the documented keys, 1-based positions."""
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    result = run_lint("--format", "json", cwd=tmp_path)
    document = json.loads(result.stdout)
    assert list(document) == ["version", "findings"]
    assert document["version"] == 1
    (item,) = document["findings"]
    assert list(item) == [
        "code", "name", "severity", "message", "fix", "file", "line", "column",
        "end_line", "end_column", "related",
    ]
    assert item["code"] == "GG108"
    assert item["severity"] == "error"
    assert (item["file"], item["line"], item["column"]) == ("serve.py", ASYNC_NO_GRAD_DEF_LINE, 1)
    assert [list(r) for r in item["related"]] == [["file", "line", "message"]]
    assert item["related"][0]["line"] == ASYNC_NO_GRAD_DECORATOR_LINE


def test_github_format_prints_workflow_annotations(tmp_path: Path) -> None:
    """--format github: one ::error line per finding, message and fix joined by %0A."""
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    result = run_lint("--format", "github", cwd=tmp_path)
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        f"::error file=serve.py,line={ASYNC_NO_GRAD_DEF_LINE},col=1,"
    )
    assert "title=GG108 grad-decorator-on-async::" in first
    assert "%0AFix: " in first


def test_statistics_counts_findings_per_rule(tmp_path: Path) -> None:
    """--statistics: one line per rule with its count, instead of the list."""
    write(tmp_path, "a.py", ASYNC_NO_GRAD)
    write(tmp_path, "b.py", ASYNC_NO_GRAD)
    write(tmp_path, "c.py", "def f(:\n")
    result = run_lint("--statistics", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["2", "GG108", "grad-decorator-on-async", "error"]
    assert lines[1].split() == ["1", "GG100", "parse-error", "error"]
    assert lines[2] == "Found 3 findings (3 errors) in 3 of 3 files."


def test_explain_prints_the_rule_by_code_or_name(tmp_path: Path) -> None:
    """--explain GG108 and --explain grad-decorator-on-async print the same documentation."""
    by_code = run_lint("--explain", "GG108", cwd=tmp_path)
    by_name = run_lint("--explain", "Grad-Decorator-On-Async", cwd=tmp_path)
    assert by_code.returncode == 0 == by_name.returncode
    assert by_code.stdout == by_name.stdout
    assert by_code.stdout.startswith("GG108 grad-decorator-on-async (error, on by default)")
    assert "# gradguard: ignore[grad-decorator-on-async]" in by_code.stdout
    unknown = run_lint("--explain", "GG42", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "--explain: unknown rule 'GG42'" in unknown.stderr


def test_explain_shows_examples_and_runtime_twin_from_the_table(tmp_path: Path) -> None:
    """'Bad:'/'Good:' blocks exactly when the table has examples; the runtime twin is named."""
    from gradguard.lint._rules import RULES

    for code in ("GG103", "GG108"):
        rule = RULES[code]
        out = run_lint("--explain", code, cwd=tmp_path).stdout
        assert ("Bad:" in out) == bool(rule.bad_example)
        assert ("Good:" in out) == bool(rule.good_example)
        assert (f"Runtime twin: {rule.runtime_twin}" in out) == bool(rule.runtime_twin)


def test_suppression_on_the_finding_line_or_the_causing_line(tmp_path: Path) -> None:
    """ignore[...] on the def line, or noqa on the decorator line that caused it, silences it."""
    on_def = ASYNC_NO_GRAD.replace(
        "async def predict(model, x):",
        "async def predict(model, x):  # gradguard: ignore[grad-decorator-on-async] tested",
    )
    on_cause = ASYNC_NO_GRAD.replace("@torch.no_grad()", "@torch.no_grad()  # noqa: GG108")
    write(tmp_path, "a.py", on_def)
    write(tmp_path, "b.py", on_cause)
    result = run_lint("--warn-unused-ignores", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout == "No findings in 2 files (2 silenced by comments).\n"


def test_warn_unused_ignores_reports_unused_and_unknown_codes(tmp_path: Path) -> None:
    """GG190 for a suppression that silences nothing and for one naming no rule."""
    source = "x = 1  # gradguard: ignore[GG101, no-such-rule]\ny = 2  # noqa: E501\n"
    write(tmp_path, "a.py", source)
    quiet = run_lint(cwd=tmp_path)
    assert quiet.returncode == 0
    result = run_lint("--warn-unused-ignores", cwd=tmp_path)
    assert result.returncode == 1
    (first, *_rest) = result.stdout.splitlines()
    assert first.startswith("a.py:1:8: GG190 unused-ignore: ")
    assert "GG101 silences no finding here" in first
    assert "'no-such-rule' is not a gradguard rule" in first
    assert "a.py:2" not in result.stdout  # another tool's code is not ours to judge


def test_skip_file_comment_skips_the_whole_file(tmp_path: Path) -> None:
    """# gradguard: skip-file anywhere in a file: nothing reported there."""
    write(tmp_path, "a.py", "# gradguard: skip-file\n" + ASYNC_NO_GRAD)
    result = run_lint(cwd=tmp_path)
    assert result.returncode == 0
    assert "1 file skipped" in result.stdout


def test_gitignore_and_exclude_are_honoured(tmp_path: Path) -> None:
    """A git-ignored directory is not walked; --exclude drops files walked or named."""
    (tmp_path / ".git").mkdir()
    write(tmp_path, ".gitignore", "generated/\n")
    write(tmp_path, "generated/serve.py", ASYNC_NO_GRAD)
    write(tmp_path, "src/serve.py", ASYNC_NO_GRAD)
    walked = run_lint("src", ".", cwd=tmp_path)
    assert "generated" not in walked.stdout
    assert walked.stdout.count("GG108") == 1
    excluded = run_lint("--exclude", "src/", cwd=tmp_path)
    assert excluded.returncode == 0
    named = run_lint("--exclude", "serve.py", "src/serve.py", cwd=tmp_path)
    assert named.returncode == 0
    assert named.stdout == "No findings in 0 files.\n"
    no_gitignore = run_lint("--no-gitignore", cwd=tmp_path)
    assert no_gitignore.stdout.count("GG108") == 2


def test_configuration_from_pyproject_above_the_paths(tmp_path: Path) -> None:
    """[tool.gradguard.lint] in a parent directory applies; the command line overrides it."""
    write(
        tmp_path,
        "pyproject.toml",
        textwrap.dedent(
            """\
            [project]
            name = "demo"

            [tool.gradguard.lint]
            ignore = ["grad-decorator-on-async"]
            per-file-ignores = {"legacy/*.py" = ["GG100"]}
            """
        ),
    )
    write(tmp_path, "pkg/serve.py", ASYNC_NO_GRAD)
    write(tmp_path, "legacy/old.py", "def f(:\n")
    result = run_lint("pkg", "legacy", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    from_inside = run_lint("serve.py", cwd=tmp_path / "pkg")
    assert from_inside.returncode == 0
    overridden = run_lint("--ignore", "GG110", "pkg", cwd=tmp_path)
    assert overridden.returncode == 1
    no_config = run_lint("--no-config", "legacy", cwd=tmp_path)
    assert "GG100" in no_config.stdout


def test_bad_configuration_exits_2_listing_valid_keys_and_values(tmp_path: Path) -> None:
    """An unknown key or a bad fail-on value: exit 2, message listing the valid ones."""
    write(tmp_path, "a.py", CLEAN)
    write(tmp_path, "pyproject.toml", "[tool.gradguard.lint]\nselekt = ['GG101']\n")
    result = run_lint(cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key 'selekt'" in result.stderr
    assert "select, ignore, exclude, per-file-ignores, fail-on" in result.stderr
    write(tmp_path, "pyproject.toml", "[tool.gradguard.lint]\nfail-on = 'always'\n")
    result = run_lint(cwd=tmp_path)
    assert result.returncode == 2
    assert "'always' is not valid; choose from error, warning, note, never" in result.stderr


def test_fail_on_from_configuration(tmp_path: Path) -> None:
    """fail-on = "never" in pyproject.toml; --fail-on on the command line wins over it."""
    write(tmp_path, "pyproject.toml", "[tool.gradguard.lint]\nfail-on = 'never'\n")
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    assert run_lint(cwd=tmp_path).returncode == 0
    assert run_lint("--fail-on", "error", cwd=tmp_path).returncode == 1


def test_baseline_fails_only_on_new_findings_and_survives_line_shifts(tmp_path: Path) -> None:
    """--write-baseline records today's findings; --baseline reports only new ones."""
    source = write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    written = run_lint("--write-baseline", "gg-baseline.json", cwd=tmp_path)
    assert written.returncode == 0
    assert "wrote 1 finding(s)" in written.stderr
    data = json.loads((tmp_path / "gg-baseline.json").read_text())
    assert data["version"] == 1
    assert [(e["code"], e["file"], e["count"]) for e in data["findings"]] == [
        ("GG108", "serve.py", 1)
    ]
    source.write_text("# a comment\n\n\n" + ASYNC_NO_GRAD)
    shifted = run_lint("--baseline", "gg-baseline.json", cwd=tmp_path)
    assert shifted.returncode == 0, shifted.stdout
    assert "1 in the baseline" in shifted.stdout
    source.write_text(ASYNC_NO_GRAD + "\n\n" + ASYNC_NO_GRAD.replace("predict", "embed"))
    new = run_lint("--baseline", "gg-baseline.json", cwd=tmp_path)
    assert new.returncode == 1
    assert new.stdout.count("GG108") == 1
    assert "async def embed" in new.stdout or "embed" in new.stdout


def test_unwritable_output_or_baseline_is_bad_usage(tmp_path: Path) -> None:
    """--output or --write-baseline into a missing directory: exit 2 naming the file."""
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    output = run_lint("--output", "missing/report.txt", cwd=tmp_path)
    assert output.returncode == 2
    assert "--output missing/report.txt: cannot write it" in output.stderr
    baseline = run_lint("--write-baseline", "missing/b.json", cwd=tmp_path)
    assert baseline.returncode == 2
    assert "--write-baseline missing/b.json: cannot write it" in baseline.stderr


def test_missing_baseline_is_bad_usage(tmp_path: Path) -> None:
    """--baseline naming a file that does not exist: exit 2 and how to make one."""
    write(tmp_path, "a.py", CLEAN)
    result = run_lint("--baseline", "absent.json", cwd=tmp_path)
    assert result.returncode == 2
    assert "create it with --write-baseline" in result.stderr


def test_gradguard_help_lists_lint(tmp_path: Path) -> None:
    """`gradguard --help` names the lint subcommand; `gradguard lint --help` its options."""
    import subprocess
    import sys

    top = subprocess.run(
        [sys.executable, "-m", "gradguard", "--help"], capture_output=True, text=True,
        check=False, timeout=60,
    )
    assert "lint" in top.stdout
    result = run_lint("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--select", "--fail-on", "--baseline", "--explain", "--statistics"):
        assert option in result.stdout


def test_lint_imports_no_torch(tmp_path: Path) -> None:
    """In an interpreter where `import torch` fails, gradguard lint still lints and reports."""
    fake = write(
        tmp_path / "no-torch",
        "torch/__init__.py",
        "raise ImportError('gradguard lint must not import torch')\n",
    )
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    env = {"PYTHONPATH": str(fake.parent.parent)}
    import os
    import subprocess
    import sys

    check = subprocess.run(
        [sys.executable, "-c", "import torch"], env={**os.environ, **env},
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert "gradguard lint must not import torch" in check.stderr  # the trap is set
    for args in (
        (),
        ("--format", "sarif"),
        ("--format", "json", "--statistics"),
        ("--format", "github"),
        ("--explain", "GG103"),
        ("--warn-unused-ignores", "--write-baseline", "b.json"),
    ):
        result = run_lint(*args, cwd=tmp_path, env=env)
        assert "ImportError" not in result.stderr, (args, result.stderr)
        assert result.returncode in (0, 1), (args, result.stderr)
        if not args:
            assert "GG108" in result.stdout
    # GRADGUARD_WATCH=1 in the environment (a shell that watches everything) changes nothing.
    watched = run_lint(cwd=tmp_path, env={**env, "GRADGUARD_WATCH": "1"})
    assert "ImportError" not in watched.stderr, watched.stderr
    assert watched.returncode == 1 and "GG108" in watched.stdout


def _interpreter(version: str) -> str | None:
    """A python of that version that really runs (a pyenv shim may only say it is not active)."""
    import glob
    import shutil
    import subprocess

    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    for candidate in candidates:
        if candidate is None:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True, text=True, check=False, timeout=60,
        )
        wanted = str(tuple(int(part) for part in version.split(".")))
        if probe.returncode == 0 and probe.stdout.strip() == wanted:
            return candidate
    return None


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_lint_runs_on_other_pythons_that_have_no_torch_at_all(tmp_path: Path, version: str) -> None:
    """On an interpreter without torch installed, gradguard lint lints (Python 3.10 included)."""
    import subprocess

    import typing_extensions

    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no working python{version} on this machine")
    probe = subprocess.run(
        [python, "-c", "import torch"], capture_output=True, text=True, check=False, timeout=60
    )
    if probe.returncode == 0:
        pytest.skip(f"python{version} has torch installed")
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(Path(typing_extensions.__file__).parent)])}
    result = subprocess.run(
        [python, "-m", "gradguard", "lint", "--no-config", "-j", "2", "."],
        cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, check=False,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert f"serve.py:{ASYNC_NO_GRAD_DEF_LINE}:1: GG108" in result.stdout
