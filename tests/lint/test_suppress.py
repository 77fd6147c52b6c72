"""Suppression comments: which findings they silence, and which of them are unused."""

from __future__ import annotations

import textwrap

from gradguard.lint._finding import Related
from gradguard.lint._suppress import Suppressions
from tests.lint.lint_helpers import finding

CAUSE = Related(file="train.py", line=2, message="`model.eval()` here")


def _parse(text: str) -> Suppressions:
    return Suppressions.parse(textwrap.dedent(text))


def test_ignore_by_code_or_name_with_a_reason_on_the_finding_line() -> None:
    """ignore[GG103] and ignore[step-in-eval-mode] both silence GG103 on their line."""
    by_code = _parse("\n\n\n\nopt.step()  # gradguard: ignore[GG103] the teacher is frozen\n")
    by_name = _parse("\n\n\n\nopt.step()  # gradguard: ignore[step-in-eval-mode]\n")
    for suppressions in (by_code, by_name):
        kept, silenced = suppressions.filter([finding("GG103", line=5)])
        assert (kept, silenced) == ([], 1)


def test_comment_on_another_line_or_for_another_rule_does_not_silence() -> None:
    """A suppression silences only its own rules, on its own line."""
    suppressions = _parse("\n\n\n\nopt.step()  # gradguard: ignore[GG101]\n")
    other_rule = finding("GG103", line=5)
    other_line = finding("GG101", line=6)
    kept, silenced = suppressions.filter([other_rule, other_line])
    assert kept == [other_rule, other_line]
    assert silenced == 0


def test_comment_on_the_line_that_caused_the_state_silences() -> None:
    """noqa on `model.eval()` (a related line) silences the step it leads to."""
    suppressions = _parse("\nmodel.eval()  # noqa: GG103\n")
    kept, silenced = suppressions.filter([finding("GG103", line=9, related=(CAUSE,))])
    assert (kept, silenced) == ([], 1)
    elsewhere = Related(file="other.py", line=2, message="in another file")
    not_here = finding("GG103", line=9, related=(elsewhere,))
    assert suppressions.filter([not_here]) == ([not_here], 0)


def test_noqa_codes_are_prefixes_and_other_tools_codes_are_ignored() -> None:
    """flake8's reading: noqa: GG1 silences every GG1xx; E501 beside it is another tool's."""
    suppressions = _parse("\nx  # noqa: E501,GG1\n")
    kept, silenced = suppressions.filter([finding("GG106", line=2), finding("GG103", line=2)])
    assert (kept, silenced) == ([], 2)
    assert suppressions.unused("train.py", ["GG106", "GG103"]) == []


def test_bare_noqa_and_bare_ignore_silence_everything_on_their_line() -> None:
    """A blanket comment silences every rule on its line."""
    for comment in ("# noqa", "# gradguard: ignore"):
        suppressions = _parse(f"\nopt.step()  {comment}\n")
        assert suppressions.filter([finding("GG107", line=2)]) == ([], 1)


def test_parse_errors_are_never_silenced() -> None:
    """GG100 means nothing else was checked: a comment does not hide it."""
    suppressions = _parse("x = 1  # noqa\n")
    item = finding("GG100", line=1)
    assert suppressions.filter([item]) == ([item], 0)


def test_comment_text_inside_a_string_is_not_a_suppression() -> None:
    """Only real comments count (the file is tokenized)."""
    suppressions = _parse('\nx = "# gradguard: ignore[GG103]"\n')
    item = finding("GG103", line=2)
    assert suppressions.filter([item]) == ([item], 0)
    assert not _parse('s = "# gradguard: skip-file"\n').skip_file


def test_skip_file() -> None:
    """`# gradguard: skip-file` on its own line marks the file."""
    assert _parse("import torch\n# gradguard: skip-file\n").skip_file
    assert not _parse("import torch\n").skip_file


def test_unused_and_unknown_codes_are_reported_as_gg190() -> None:
    """Unused codes, unknown names and unknown GG codes each get a GG190 at the comment."""
    suppressions = _parse(
        """\
        a = 1  # gradguard: ignore[GG103, no-such-rule]
        b = 2  # noqa: GG199
        c = 3  # gradguard: ignore
        d = 4  # noqa
        """
    )
    suppressions.filter([])
    unused = suppressions.unused("train.py", ["GG103"])
    assert [(f.code, f.line, f.column) for f in unused] == [
        ("GG190", 1, 7), ("GG190", 2, 7), ("GG190", 3, 7),
    ]
    assert "GG103 silences no finding here" in unused[0].message
    assert "'no-such-rule' is not a gradguard rule" in unused[0].message
    assert "'GG199' is not a gradguard rule" in unused[1].message
    assert "it silences no finding" in unused[2].message
    assert all(f.severity == "warning" and f.name == "unused-ignore" for f in unused)


def test_a_used_comment_or_one_for_a_rule_that_did_not_run_is_not_unused() -> None:
    """Used codes are fine; a code whose rule was not selected is not judged."""
    suppressions = _parse("\nopt.step()  # gradguard: ignore[GG103, GG110]\n")
    suppressions.filter([finding("GG103", line=2)])
    assert suppressions.unused("train.py", ["GG103"]) == []


def test_source_that_does_not_tokenize_has_no_suppressions() -> None:
    """An unterminated string: no crash, no suppression."""
    suppressions = Suppressions.parse('x = """never closed\n# noqa\n')
    assert suppressions.by_line == {}


def test_a_word_that_only_starts_with_ignore_is_no_blanket() -> None:
    """`gradguard: ignore-this` is not `gradguard: ignore`: it silences nothing."""
    suppressions = _parse("\nopt.step()  # gradguard: ignore-this\n")
    item = finding("GG107", line=2)
    assert suppressions.filter([item]) == ([item], 0)
