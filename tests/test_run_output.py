"""What `gradguard run` prints: each finding in full once, live lines short and wrapped, and
tracebacks of findings that end at the program's own frame."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GG002_SCRIPT = """\
import warnings
import torch
from torch import nn

model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout())
model.train()
for _ in range(3):
    with torch.no_grad():
        model(torch.randn(8, 4))  # line 9: validation that forgot eval()
warnings.warn("an unrelated warning of the program's own")
print("done", flush=True)
"""
GG002_LINE = 9

GG003_SCRIPT = """\
import torch
from torch import nn


def train_step(model):
    loss = model(torch.randn(8, 4)).sum()
    loss.backward()  # line 7


model = nn.Linear(4, 1)
model.train()
with torch.no_grad():
    train_step(model)
"""
GG003_LINE = 7


def run(
    tmp_path: Path, script: str, *args: str, columns: int | None = None, watch: bool = True
) -> subprocess.CompletedProcess[str]:
    """The script in tmp_path, under `gradguard run ARGS` (or plain python); stderr a pipe."""
    (tmp_path / "train.py").write_text(textwrap.dedent(script))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    command = [sys.executable, "-m", "gradguard", "run", *args] if watch else [sys.executable]
    return subprocess.run(
        [*command, "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def gg002_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """`gradguard run train.py` on GG002_SCRIPT, stderr a pipe without COLUMNS; run once for the
    tests that read its plain output."""
    return run(tmp_path_factory.mktemp("gg002"), GG002_SCRIPT)


def frames(traceback_text: str) -> list[str]:
    """The file names of a rendered traceback's frames, outermost first."""
    return re.findall(r'^  File "([^"]+)", line \d+', traceback_text, re.M)


def test_live_finding_is_one_short_line_and_the_summary_has_it_in_full(
    gg002_run: subprocess.CompletedProcess[str],
) -> None:
    """The GG002 warning shows as `train.py:9: GG002 train-mode-without-grad (see summary)`;
    its message appears once, in the summary; the program's own warning is Python's as ever."""
    result = gg002_run
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"train.py:{GG002_LINE}: GG002 train-mode-without-grad (see summary)"
    assert result.stderr.count("is in training mode but ran forward") == 1
    assert "TrainModeWithoutGradWarning" not in result.stderr
    assert "UserWarning: an unrelated warning of the program's own" in result.stderr
    summary = result.stderr[result.stderr.index("gradguard: 1 finding\n") :]
    assert "is in training mode but ran forward" in summary
    assert "1 BatchNorm1d (updating its running statistics)" in summary


def test_json_keeps_the_whole_message(tmp_path: Path) -> None:
    """--json has the complete message and fix, whatever the terminal shows."""
    result = run(tmp_path, GG002_SCRIPT, "--json", "out.json", columns=50)
    assert result.returncode == 0, result.stderr
    (finding,) = json.loads((tmp_path / "out.json").read_text())["findings"]
    assert "\n" not in finding["message"]
    assert finding["message"].endswith("or training resumed with gradients still off")
    assert finding["fix"].startswith("to evaluate, call model.eval() first")


def test_output_is_wrapped_to_the_terminal_width_without_breaking_paths(tmp_path: Path) -> None:
    """With COLUMNS=72 every line of the summary fits in 72 columns, except a line holding one
    path too long to fit, which is never broken."""
    result = run(tmp_path, GG002_SCRIPT, columns=72)
    assert result.returncode == 0, result.stderr
    summary = result.stderr[result.stderr.index("gradguard: 1 finding\n") :].splitlines()
    assert len(summary) > 5
    for line in summary:
        words = line.split()
        assert len(line) <= 72 or max(map(len, words)) > 72 - 12, line
    assert str(tmp_path / "train.py") in result.stderr  # the path whole


def test_a_pipe_without_columns_gets_unwrapped_lines(
    gg002_run: subprocess.CompletedProcess[str],
) -> None:
    """Output to a pipe (no terminal, no COLUMNS) is not wrapped: one line per message."""
    result = gg002_run
    summary = result.stderr[result.stderr.index("gradguard: 1 finding\n") :].splitlines()
    assert len(summary) == 4
    assert summary[2].startswith("      Sequential is in training mode")


def test_plain_watch_keeps_pythons_warnings(tmp_path: Path) -> None:
    """Outside `gradguard run`, watch() warns as Python does: class, full message and fix."""
    script = "import gradguard\ngradguard.watch()\n" + GG002_SCRIPT
    result = run(tmp_path, script, watch=False)
    assert result.returncode == 0, result.stderr
    assert (
        f"train.py:{GG002_LINE + 2}: TrainModeWithoutGradWarning: GG002 train-mode-without-grad: "
        "Sequential is in training mode"
    ) in result.stderr
    assert "\nFix: to evaluate, call model.eval() first" in result.stderr
    assert "(see summary)" not in result.stderr


def test_strict_traceback_ends_at_the_programs_frame(tmp_path: Path) -> None:
    """--strict: the GradGuardError's traceback has the script's frames only, and its last line
    points to the summary, which has the finding in full."""
    result = run(tmp_path, GG002_SCRIPT, "--strict")
    assert result.returncode == 1
    error = result.stderr[: result.stderr.index("gradguard: 1 finding\n")]
    assert frames(error) == [str(tmp_path / "train.py")]
    assert error.endswith("gradguard.GradGuardError: GG002 train-mode-without-grad (see summary)\n")


def test_gg003_traceback_ends_at_the_backward_line_and_keeps_pytorchs_error(
    tmp_path: Path,
) -> None:
    """GG003 under `gradguard run`: the error's frames are the script's, ending at its
    loss.backward() line; the chained PyTorch error keeps its own traceback."""
    result = run(tmp_path, GG003_SCRIPT)
    assert result.returncode == 1
    cause, explained = result.stderr.split("The above exception was the direct cause")
    assert "RuntimeError: element 0 of tensors does not require grad" in cause
    assert any("torch" in name for name in frames(cause))
    explained = explained[: explained.index("gradguard: 1 finding\n")]
    assert frames(explained) == [str(tmp_path / "train.py")] * 2
    assert f"line {GG003_LINE}, in train_step\n    loss.backward()  # line 7\n" in explained


def test_gg003_under_plain_python_has_no_torch_frames_below_the_program(tmp_path: Path) -> None:
    """Without `gradguard run` (which trims the rest), the raise is one gradguard frame below
    the program's backward line: not the wrappers of both backward functions and torch's."""
    script = "import gradguard\ngradguard.watch()\n" + GG003_SCRIPT
    result = run(tmp_path, script, watch=False)
    assert result.returncode == 1
    explained = result.stderr.split("The above exception was the direct cause")[1]
    names = frames(explained)
    assert names[:2] == [str(tmp_path / "train.py")] * 2
    assert len(names) == 3 and names[2].endswith(os.path.join("_watchdog", "_backward.py"))
    assert "GG003 backward-without-grad: backward() failed because" in explained
