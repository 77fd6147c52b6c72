"""The reporters: text, JSON, SARIF 2.1.0 (validated against the official schema) and GitHub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gradguard.lint._driver import LintResult
from gradguard.lint._finding import Related
from gradguard.lint._reporters import Context, reporter
from gradguard.lint._reporters._github import annotation
from gradguard.lint._reporters._sarif import FINGERPRINT_KEY
from gradguard.lint._reporters._text import format_finding, summary
from gradguard.lint._rules import RULES
from tests.lint.lint_helpers import ASYNC_NO_GRAD, finding, run_lint, write

SCHEMA_PATH = Path(__file__).with_name("sarif-schema-2.1.0.json")
JSON_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "lint-report.schema.json"


def _result(*findings: Any, files: int = 3) -> LintResult:
    result = LintResult(findings=list(findings), files=files)
    for index, item in enumerate(findings):
        result.fingerprints[item] = f"{index:016x}"
    return result


def _validate_sarif(document: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft4Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_file_is_the_official_sarif_2_1_0_schema() -> None:
    """The vendored schema is OASIS's 2.1.0 schema, and it rejects a log missing 'runs'."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    with pytest.raises(AssertionError, match="runs"):
        _validate_sarif({"version": "2.1.0"})


def test_sarif_is_valid_and_carries_rules_locations_and_fingerprints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid SARIF 2.1.0: every rule with help, %SRCROOT%-relative URIs, related locations."""
    monkeypatch.chdir(tmp_path)
    cause = Related(file="src/train.py", line=50, message="`model.eval()` here")
    first = finding("GG103", file="src/train.py", line=57, related=(cause,))
    second = finding("GG110", file="src/eval.py", line=3)
    text = reporter("sarif")(_result(first, second), Context(root=tmp_path))
    document = json.loads(text)
    _validate_sarif(document)
    run = document["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "gradguard"
    assert [rule["id"] for rule in driver["rules"]] == list(RULES)
    gg103 = driver["rules"][list(RULES).index("GG103")]
    assert gg103["name"] == "step-in-eval-mode"
    assert gg103["defaultConfiguration"]["level"] == "error"
    assert gg103["help"]["text"].startswith(RULES["GG103"].summary)
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.resolve().as_uri() + "/"
    result = run["results"][0]
    assert result["ruleId"] == "GG103"
    assert driver["rules"][result["ruleIndex"]]["id"] == "GG103"
    assert result["level"] == "error"
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "src/train.py", "uriBaseId": "%SRCROOT%"}
    assert location["region"]["startLine"] == 57
    assert location["region"]["startColumn"] == 5
    (related,) = result["relatedLocations"]
    assert related["physicalLocation"]["region"]["startLine"] == 50
    assert related["message"]["text"] == "`model.eval()` here"
    assert result["partialFingerprints"] == {FINGERPRINT_KEY: "0000000000000000"}
    assert run["results"][1]["level"] == "note"
    assert "relatedLocations" not in run["results"][1]


def test_sarif_file_outside_the_root_gets_an_absolute_uri(tmp_path: Path) -> None:
    """A file outside %SRCROOT% is named by an absolute file: URI, and the log stays valid."""
    outside = tmp_path / "elsewhere" / "x.py"
    item = finding("GG108", file=str(outside))
    document = json.loads(reporter("sarif")(_result(item), Context(root=tmp_path / "root")))
    _validate_sarif(document)
    location = document["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": outside.resolve().as_uri()}


def test_sarif_from_the_command_line_validates(tmp_path: Path) -> None:
    """`gradguard lint --format sarif` on a real mistake: schema-valid, related location kept."""
    write(tmp_path, "pkg/serve.py", ASYNC_NO_GRAD)
    result = run_lint("--format", "sarif", cwd=tmp_path)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    _validate_sarif(document)
    (item,) = document["runs"][0]["results"]
    assert item["ruleId"] == "GG108"
    uri = item["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "pkg/serve.py"
    assert item["relatedLocations"][0]["physicalLocation"]["region"]["startLine"] == 4


def test_empty_sarif_is_valid(tmp_path: Path) -> None:
    """No findings: still a valid log with the rules listed and an empty results array."""
    document = json.loads(reporter("sarif")(_result(), Context(root=tmp_path)))
    _validate_sarif(document)
    assert document["runs"][0]["results"] == []


def test_text_line_format_and_summary() -> None:
    """path:line:col (1-based column): CODE name: message, fix, related; counted summary."""
    cause = Related(file="train.py", line=50, message="`model.eval()` here")
    item = finding("GG103", line=57, column=8, related=(cause,))
    assert format_finding(item).splitlines() == [
        f"train.py:57:9: GG103 step-in-eval-mode: {item.message}",
        "  fix: do the right thing",
        "  train.py:50: `model.eval()` here",
    ]
    result = _result(item, finding("GG102", line=9), finding("GG102", file="b.py"))
    assert summary(result) == "Found 3 findings (1 error, 2 warnings) in 2 of 3 files."
    assert summary(_result(files=1)) == "No findings in 1 file."


def test_text_colours_only_when_asked() -> None:
    """Colour codes appear with color=True and never otherwise."""
    item = finding("GG103")
    assert "\033[" not in format_finding(item)
    assert "\033[31m" in format_finding(item, color=True)


def _validate_json_report(document: dict[str, Any]) -> None:
    schema = json.loads(JSON_SCHEMA_PATH.read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_json_report_follows_the_documented_schema(tmp_path: Path) -> None:
    """docs/lint-report.schema.json accepts the report of every rule, and rejects a bad one."""
    cause = Related(file="train.py", line=2, message="`model.eval()` here")
    items = [finding(code, line=index + 3, related=(cause,)) for index, code in enumerate(RULES)]
    document = json.loads(reporter("json")(_result(*items), Context(root=tmp_path)))
    _validate_json_report(document)
    broken = {"version": 1, "findings": [{**document["findings"][0], "severity": "fatal"}]}
    with pytest.raises(AssertionError, match="fatal"):
        _validate_json_report(broken)
    write(tmp_path, "serve.py", ASYNC_NO_GRAD)
    write(tmp_path, "broken.py", "def f(:\n")
    from_cli = run_lint("--format", "json", "--select", "ALL", cwd=tmp_path)
    _validate_json_report(json.loads(from_cli.stdout))


def test_json_positions_are_one_based(tmp_path: Path) -> None:
    """JSON counts lines and columns from 1, like the text output and SARIF."""
    item = finding("GG106", line=12, column=0)
    document = json.loads(reporter("json")(_result(item), Context(root=tmp_path)))
    (entry,) = document["findings"]
    assert (entry["line"], entry["column"], entry["end_line"], entry["end_column"]) == (
        12, 1, 12, 11,
    )
    assert entry["severity"] == "warning"


def test_github_annotation_escapes_its_special_characters() -> None:
    """Newlines, % and the property separators are escaped as GitHub's commands require."""
    item = finding("GG110", file="odd,name:1.py", line=3)
    line = annotation(item)
    assert line.startswith("::notice file=odd%2Cname%3A1.py,line=3,col=5,endLine=3,endColumn=15,")
    assert "\n" not in line
    assert line.endswith("%0AFix: do the right thing")
