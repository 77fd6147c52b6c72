"""The corpus: real training and inference scripts run under the watchdog.

Each ``mistake_*.py`` script must produce exactly the findings its ``# expect: GGxxx`` comments mark
(code and line), and each ``clean_*.py`` script must produce none at all.
"""

from __future__ import annotations

import contextlib
import gc
import re
import runpy
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import gradguard

CORPUS = Path(__file__).parent / "corpus"
SCRIPTS = sorted(p.name for p in CORPUS.glob("*.py") if not p.name.startswith("_"))
EXPECT = re.compile(r"#\s*expect:\s*(GG\d{3})")


def expected_findings(script: Path) -> list[tuple[str, int]]:
    """(code, line) of every `# expect: GGxxx` marker in a script."""
    found = []
    for lineno, text in enumerate(script.read_text().splitlines(), start=1):
        found.extend((code, lineno) for code in EXPECT.findall(text))
    return sorted(found)


def run_watched(script: Path) -> tuple[list[gradguard.Finding], list[warnings.WarningMessage]]:
    """Run a script as __main__ under watch(); return its findings and gradguard warnings."""
    sys.path.insert(0, str(CORPUS))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with gradguard.watch(strict=False):
                # GG003 always raises: the script stops there, as it would for a user.
                with contextlib.suppress(gradguard.GradGuardError):
                    runpy.run_path(str(script), run_name="__main__")
                gc.collect()
    finally:
        sys.path.remove(str(CORPUS))
        sys.modules.pop("_data", None)
        torch.set_grad_enabled(True)
    ours = [w for w in caught if issubclass(w.category, gradguard.GradGuardWarning)]
    return gradguard.findings(), ours


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    """Each script starts with no findings and leaves the watchdog uninstalled."""
    gradguard.unwatch()
    gradguard.clear_findings()
    yield
    gradguard.unwatch()
    gradguard.clear_findings()


def test_corpus_has_mistakes_and_clean_scripts() -> None:
    """The corpus covers every watchdog check and the clean cases named in the issue."""
    marked = {code for name in SCRIPTS for code, _ in expected_findings(CORPUS / name)}
    assert marked == {"GG001", "GG002", "GG003", "GG004", "GG005"}
    clean = {name for name in SCRIPTS if name.startswith("clean_")}
    assert clean == {
        "clean_dqn_target.py",
        "clean_frozen_bn_finetune.py",
        "clean_inference_mode_eval.py",
        "clean_lightning.py",
        "clean_mc_dropout.py",
        "clean_pgd.py",
        "clean_saliency.py",
        "clean_train_validate.py",
        "clean_update_bn.py",
    }
    for name in clean:
        assert expected_findings(CORPUS / name) == []


@pytest.mark.parametrize("name", [n for n in SCRIPTS if n.startswith("mistake_")])
def test_mistake_is_found_with_code_and_line(name: str) -> None:
    """Each mistake is found with the right code at the marked line, and nothing else."""
    script = CORPUS / name
    expected = expected_findings(script)
    assert expected, f"{name} marks no expected finding"
    found, caught = run_watched(script)
    assert sorted((f.code, f.lineno) for f in found) == expected
    assert all(f.filename == str(script) for f in found)
    warned = sorted((w.category.code, w.lineno) for w in caught)
    assert warned == [(code, line) for code, line in expected if code != "GG003"]
    assert all(w.filename == str(script) for w in caught)
    for finding in found:
        assert "Fix: " not in finding.message and finding.fix


@pytest.mark.parametrize("name", [n for n in SCRIPTS if n.startswith("clean_")])
def test_clean_script_has_no_finding(name: str) -> None:
    """Correct code, including intended eval-mode gradients and train-mode no_grad, is silent."""
    found, caught = run_watched(CORPUS / name)
    assert found == []
    assert caught == []
