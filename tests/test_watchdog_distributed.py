"""The watchdog in a real 2-process gloo DistributedDataParallel loop.

Correct code gives no finding; wrong code gives the findings, each naming its rank.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gradguard

WORKER = Path(__file__).parent / "ddp_worker.py"


def marked_line(comment: str) -> int:
    for lineno, text in enumerate(WORKER.read_text().splitlines(), start=1):
        if comment in text:
            return lineno
    raise AssertionError(comment)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Run the two ranks once; each rank's findings per phase."""
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    done = subprocess.run(
        [sys.executable, str(WORKER), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_correct_ddp_loop_has_no_finding(ranks: list[dict[str, Any]]) -> None:
    """train()/eval()+no_grad/train() with DDP on both ranks: nothing found."""
    assert [r["correct"] for r in ranks] == [[], []]


def test_wrong_ddp_loop_findings_name_their_rank(ranks: list[dict[str, Any]]) -> None:
    """Validation without eval() (GG002) and a step in eval mode (GG004), on each rank by name."""
    validate_line = marked_line("# mistake: no eval()")
    step_line = marked_line("# mistake: steps a model left in eval")
    for rank, result in enumerate(ranks):
        found = sorted((f["code"], f["line"]) for f in result["wrong"])
        assert found == [("GG002", validate_line), ("GG004", step_line)]
        for finding in result["wrong"]:
            assert finding["file"] == str(WORKER)
            assert finding["message"].startswith(f"[rank {rank}] ")
        gg002 = next(f for f in result["wrong"] if f["code"] == "GG002")
        assert re.search(r"\] DistributedDataParallel\(Net\) is in training mode", gg002["message"])
    assert gradguard.findings() == []


def test_step_after_the_model_inside_ddp_was_switched_to_eval(ranks: list[dict[str, Any]]) -> None:
    """model.module.eval() leaves DDP's own flag in training: the step is GG004 on each rank."""
    step_line = marked_line("# mistake: steps a model left in eval")
    for rank, result in enumerate(ranks):
        assert [(f["code"], f["line"]) for f in result["inner"]] == [("GG004", step_line)]
        message = result["inner"][0]["message"]
        assert message.startswith(f"[rank {rank}] ")
        assert "DistributedDataParallel(Net), whose wrapped Net is in eval mode" in message
