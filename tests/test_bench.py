"""Tests of ``gradguard bench``: the command run as a real subprocess, and its table logic."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradguard import cli
from gradguard._bench import (
    FAMILIES,
    INFERENCE_MARGIN,
    Job,
    LatencyGain,
    latency_gain,
    recommend,
    summary_rows,
)
from gradguard._measure import MODES, Measurement, ModeResult

FACTORY_MODULE = """
import torch
from torch import nn


def build():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 4))


def broken():
    return nn.Linear(3, 4)


def not_a_model():
    return "a string"


def needs_arguments(width):
    return nn.Linear(width, width)
"""


def _write_models(folder: Path) -> None:
    (folder / "tinymodels.py").write_text(FACTORY_MODULE)
    (folder / "badsyntax.py").write_text("def build(:\n    pass\n")
    (folder / "raisesatimport.py").write_text("raise RuntimeError('no GPU driver')\n")


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m gradguard bench ARGS`` with tmp_path importable, as a user would run it."""
    _write_models(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "gradguard", "bench", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )


def test_own_model_quick_json_run_writes_the_schema_and_known_saved_bytes(tmp_path: Path) -> None:
    """--model/--input-shape/--batch-size/--quick/--json: exit 0, the issue's JSON schema, the
    saved bytes the model's construction implies, a table with its header, progress on stderr."""
    out = tmp_path / "bench.json"
    done = run_bench(
        tmp_path,
        "--model",
        "tinymodels:build",
        "--input-shape",
        "8",
        "--batch-size",
        "4",
        "--quick",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert set(data) == {"device", "torch", "results"}
    assert data["torch"] == torch.__version__
    assert data["device"].startswith("cpu (")
    [entry] = data["results"]
    assert set(entry) == {"family", "batch_size", "modes"}
    assert entry["family"] == "tinymodels:build"
    assert entry["batch_size"] == 4
    assert list(entry["modes"]) == list(MODES)
    # The ReLU's output, 4 x 16 float32, is the only storage saved beyond parameters and input.
    assert entry["modes"]["grad"]["saved_bytes"] == 4 * 16 * 4
    for mode in ("no_grad", "inference", "evaluating"):
        assert entry["modes"][mode]["saved_bytes"] == 0
        assert entry["modes"][mode]["outputs_match"] is True
    assert entry["modes"]["grad"]["memory_reduction"] == 0.0

    lines = done.stdout.splitlines()
    assert lines[0].startswith("gradguard bench on cpu (")
    assert "cores)" in lines[0]
    assert f"torch {torch.__version__}" in lines[1]
    assert lines[2].startswith("load average ")
    assert "| Model family | Batch size | No-grad memory reduction |" in done.stdout
    assert "| tinymodels:build | 4 |" in done.stdout
    progress = done.stderr.splitlines()
    assert progress[0] == (
        "gradguard bench: [1/1] tinymodels:build, batch 4: building tinymodels:build()"
    )
    assert any("measuring 4 modes, 1 warm-up + 5 timed runs each" in line for line in progress)
    assert progress[-1] == f"gradguard bench: wrote {out}"


def test_built_in_families_run_and_match_their_baselines(tmp_path: Path) -> None:
    """The three built-in families build, run in every mode and agree with the baseline
    (batch and repeats made tiny here to keep the test fast)."""
    out = tmp_path / "families.json"
    done = run_bench(
        tmp_path, "--quick", "--batch-size", "2", "--repeats", "1", "--warmup", "0",
        "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["family"] for r in results] == [family.name for family in FAMILIES]
    for result in results:
        assert result["batch_size"] == 2
        assert result["modes"]["grad"]["saved_bytes"] > 0
        assert result["modes"]["no_grad"]["saved_bytes"] == 0
        assert all(mode["outputs_match"] for mode in result["modes"].values()), result
    assert "--quick: smaller inputs than the full run" in done.stdout
    # One timed run per mode gives no spread: no latency figure, the advice rests on memory.
    assert "Latency inconclusive for CNN family, Transformer family, RNN family" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[:2] for row in rows[1:]] == [
        [f"| {family.name}", "2"] for family in FAMILIES
    ]


def run_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``gradguard.cli.main(["bench", ...])`` in this process: the same code path, no start-up."""
    _write_models(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KINETO_LOG_LEVEL", "6")
    try:
        status = cli.main(["bench", *args])
    except SystemExit as exit_:  # argparse refuses bad values by exiting
        status = int(exit_.code or 0)
    finally:
        for name in ("tinymodels", "badsyntax", "raisesatimport"):
            sys.modules.pop(name, None)  # each test imports its own tmp_path copy
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_model_failing_on_its_inputs_exits_2_from_the_console(tmp_path: Path) -> None:
    """A model whose forward fails on --input-shape: exit 2, one line naming model and shapes."""
    done = run_bench(tmp_path, "--model", "tinymodels:broken", "--input-shape", "8",
                     "--batch-size", "2")  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert "could not run Linear on the example inputs (Tensor[2, 8] float32 on cpu)" in errors[0]
    assert "mat1 and mat2 shapes cannot be multiplied" in errors[0]
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "tinymodels:build"], "--model needs --input-shape"),
        (["--model", "tinymodels", "--input-shape", "8"], "takes package.module:factory"),
        (["--model", "nosuchmodule:build", "--input-shape", "8"], "cannot import 'nosuchmodule'"),
        (["--model", "tinymodels:nothing", "--input-shape", "8"], "has no attribute 'nothing'"),
        (["--model", "tinymodels:not_a_model", "--input-shape", "8"], "not an nn.Module"),
        (
            ["--model", "tinymodels:needs_arguments", "--input-shape", "8"],
            "tinymodels:needs_arguments() failed: TypeError",
        ),
        (["--input-shape", "8"], "--input-shape applies to --model"),
        (
            ["--model", "badsyntax:build", "--input-shape", "8"],
            "cannot import 'badsyntax': SyntaxError at ",
        ),
        (
            ["--model", "raisesatimport:build", "--input-shape", "8"],
            "importing 'raisesatimport' raised RuntimeError: no GPU driver",
        ),
        (
            ["--model", "tinymodels:build", "--input-shape", "8", "--json", "nofolder/out.json"],
            "the folder",
        ),
    ],
)
def test_bad_model_arguments_exit_2_with_one_clear_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    """A bad --model or a missing or misplaced shape: status 2, one error line, nothing printed."""
    status, out, err = run_in_process(tmp_path, monkeypatch, capsys, *args)
    assert status == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert message in errors[0]
    assert out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "badsyntax:build", "--input-shape", "8"], "SyntaxError at "),
        (["--model", "raisesatimport:build", "--input-shape", "8"], "raised RuntimeError"),
        (["--quick", "--json", "."], "--json '.' is a directory"),
    ],
    ids=["syntax-error", "raises-at-import", "json-is-a-folder"],
)
def test_bad_model_or_json_exits_2_from_the_console_before_measuring(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """From a real `python -m gradguard bench`: one error line, status 2, nothing measured."""
    done = run_bench(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-shape", "3,a,2"], "--input-shape takes the shape of one sample"),
        (["--batch-size", "0"], "expected a positive integer, got '0'"),
        (["--warmup", "-1"], "expected an integer >= 0, got '-1'"),
        (["--device", "tpu"], "invalid choice: 'tpu' (choose from cpu, cuda)"),
    ],
)
def test_bad_option_values_are_refused_by_the_parser(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    """Malformed option values exit 2 with argparse's message naming the valid values."""
    status, _, err = run_in_process(tmp_path, monkeypatch, capsys, *args)
    assert status == 2
    assert message.replace("'", "") in err.replace("'", "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_without_a_device_is_refused(tmp_path: Path) -> None:
    """--device cuda on a machine without CUDA exits 2 and says to use --device cpu."""
    done = run_bench(tmp_path, "--device", "cuda")
    assert done.returncode == 2
    assert "sees no CUDA device; use --device cpu" in done.stderr


# The same machine drift in every mode, round by round: the paired ratios are steady.
STEADY = (0.98, 1.03, 1.0, 0.97, 1.02, 1.0, 0.99, 1.01, 1.0)


def mode(median: float, grad: float, *, match: bool = True) -> ModeResult:
    samples = tuple(median * drift for drift in STEADY)
    return ModeResult(samples, median, median, 100, 0, match, 0.0, 1 - median / grad)


def noisy(samples: tuple[float, ...], grad: tuple[float, ...], memory: float) -> ModeResult:
    """A mode timed on a loaded machine: its rounds' ratios to the baseline scatter widely."""
    ratios = sorted(value / base for value, base in zip(samples, grad))
    median = statistics.median(samples)
    gain = 1 - statistics.median(ratios)
    return ModeResult(samples, median, max(samples), 100, 0, True, memory, gain)


def measured(grad: float, no_grad: float, inference: float, *, match: bool = True) -> Measurement:
    modes = {
        "grad": mode(grad, grad),
        "no_grad": mode(no_grad, grad),
        "inference": mode(inference, grad, match=match),
        "evaluating": mode(no_grad, grad),
    }
    return Measurement(device="cpu", torch=torch.__version__, modes=modes)


def test_recommends_inference_mode_only_when_clearly_faster() -> None:
    """inference_mode is recommended when its latency improvement beats no_grad's by at least 5
    points of the baseline, no_grad otherwise."""
    assert recommend(measured(10.0, 8.0, 7.4)).startswith('evaluating(model, mode="inference")')
    assert recommend(measured(10.0, 8.0, 7.6)) == "evaluating(model): eval() + no_grad"


def test_inference_mode_must_beat_the_better_of_no_grad_and_evaluating() -> None:
    """A slow no_grad sample alone does not make inference mode the advice: evaluating runs the
    same computation, and inference mode must beat the better of the two by 5 points."""
    result = measured(10.0, 8.0, 7.0)
    result.modes["evaluating"] = mode(7.2, 10.0)
    assert recommend(result) == "evaluating(model): eval() + no_grad"


def test_recommendation_flags_outputs_that_differ() -> None:
    """A mode whose outputs differ is named, and never recommended."""
    advice = recommend(measured(10.0, 8.0, 5.0, match=False))
    assert advice.startswith("evaluating(model): eval() + no_grad")
    assert "outputs differ under inference" in advice


def test_summary_is_the_seed_table_with_measured_figures() -> None:
    """The summary has the seed's columns; figures are no_grad's, relative to grad."""
    result = measured(10.0, 8.0, 7.9)
    no_grad = ModeResult(tuple(8.0 * drift for drift in STEADY), 8.0, 8.0, 40, 0, True, 0.6, 0.2)
    result.modes["no_grad"] = no_grad
    job = Job("CNN family", 128, object, (3, 32, 32), "a CNN")
    rows = summary_rows([(job, result)])
    assert rows[0] == (
        "| Model family | Batch size | No-grad memory reduction | No-grad latency improvement "
        "| Recommended practice |"
    )
    assert rows[2] == (
        "| CNN family | 128 | 60% | 20% (20% to 20%) | evaluating(model): eval() + no_grad |"
    )


def loaded_machine_run() -> Measurement:
    """5 rounds on a busy machine: no_grad's median gain is -96%, its rounds spread -300% to 50%."""
    grad = (10.0, 10.0, 10.0, 10.0, 10.0)
    no_grad = noisy((5.0, 19.6, 40.0, 8.0, 25.0), grad, memory=0.71)
    inference = noisy((4.0, 30.0, 12.0, 2.0, 3.5), grad, memory=0.71)
    modes = {
        "grad": ModeResult(grad, 10.0, 10.0, 100, 50, True, 0.0, 0.0),
        "no_grad": no_grad,
        "inference": inference,
        "evaluating": no_grad,
    }
    return Measurement(device="cpu", torch=torch.__version__, modes=modes)


def test_latency_spread_wider_than_the_effect_is_inconclusive_not_a_finding() -> None:
    """A -96% median whose rounds spread from -300% to 50% is reported as inconclusive with that
    spread, and the advice rests on the memory saved instead."""
    result = loaded_machine_run()
    gain = latency_gain(result, "no_grad")
    assert round(gain.median, 2) == -0.96
    assert not gain.conclusive
    job = Job("CNN family", 128, object, (3, 32, 32), "a CNN")
    row = summary_rows([(job, result)])[2]
    assert "-96%" not in row
    assert "| inconclusive: runs spread -150% to 20% |" in row
    assert row.endswith(
        "| evaluating(model): eval() + no_grad (saves 71% of the peak memory; "
        "latency inconclusive) |"
    )


def test_noisy_inference_mode_is_not_recommended_on_its_median() -> None:
    """inference_mode's median looks far better than no_grad's, but its rounds scatter
    wider than that: the advice stays evaluating(model)."""
    result = loaded_machine_run()
    assert (
        result.modes["inference"].latency_improvement - result.modes["no_grad"].latency_improvement
        >= INFERENCE_MARGIN
    )
    assert not latency_gain(result, "inference").conclusive
    assert recommend(result).startswith("evaluating(model): eval() + no_grad (")


def test_a_spread_on_one_side_of_zero_is_a_conclusive_slowdown() -> None:
    """Rounds that all lose (-93% to -14%) say "slower", with their spread, not "inconclusive"."""
    gain = LatencyGain(median=-0.5, low=-0.93, high=-0.14, rounds=30)
    assert gain.conclusive
    assert gain.describe() == "-50% (-93% to -14%)"
    assert not LatencyGain(median=0.1, low=-0.05, high=0.3, rounds=30).conclusive


def test_steady_rounds_give_a_conclusive_gain_with_its_spread() -> None:
    """Rounds whose ratios agree give the median gain and its quartiles, and no caveat."""
    result = measured(10.0, 8.0, 7.9)
    gain = latency_gain(result, "no_grad")
    assert gain.conclusive
    assert (round(gain.low, 6), round(gain.median, 6), round(gain.high, 6)) == (0.2, 0.2, 0.2)
    assert gain.describe() == "20% (20% to 20%)"
    assert recommend(result) == "evaluating(model): eval() + no_grad"


def test_too_few_rounds_are_inconclusive() -> None:
    """One or two timed runs give no spread to judge by: inconclusive, whatever the median."""
    grad = ModeResult((10.0,), 10.0, 10.0, 100, 50, True, 0.0, 0.0)
    fast = ModeResult((5.0,), 5.0, 5.0, 100, 0, True, 0.5, 0.5)
    result = Measurement("cpu", torch.__version__, {"grad": grad, "no_grad": fast})
    assert not latency_gain(result, "no_grad").conclusive
    assert latency_gain(result, "no_grad").describe() == "inconclusive: runs spread 50% to 50%"


def test_noisy_inference_alone_is_named_in_the_advice() -> None:
    """no_grad's gain is steady, inference_mode's rounds scatter: the advice keeps no_grad and
    says that it is inference_mode's latency that was inconclusive, not the whole latency."""
    result = measured(10.0, 8.0, 7.9)
    grad = result.modes["grad"].latencies_ms
    result.modes["inference"] = noisy(
        tuple(base * r for base, r in zip(grad, (0.2, 1.9, 0.3, 1.5, 0.4, 1.2, 0.5, 0.6, 1.4))),
        grad,
        memory=0.0,
    )
    assert latency_gain(result, "no_grad").conclusive
    assert recommend(result) == (
        "evaluating(model): eval() + no_grad (inference_mode's latency inconclusive)"
    )
