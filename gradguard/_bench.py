"""``gradguard bench``: the usual table of no_grad gains, measured on this machine.

Three built-in model families (nothing is downloaded): a ResNet-style CNN at batch 128, a
Transformer encoder at batch 64 and an LSTM at batch 256, or the user's own model with
``--model package.module:factory --input-shape ... --batch-size ...``. Each family is measured
with :func:`gradguard.measure` in every mode; the summary prints the usual table's columns, each
figure being ``no_grad`` against eval mode with gradients on.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradguard._measure import (
    Measurement,
    core_count,
    describe_device,
    format_percent,
    measure,
)

# Inference mode must improve latency by this much more than no_grad (in points of the baseline)
# before the table recommends it: smaller differences are within the noise of a shared machine.
INFERENCE_MARGIN = 0.05
# Fewer paired rounds than this give no spread worth the name: the latency is inconclusive.
MIN_ROUNDS = 3
# Timed runs per mode: a full run takes 15-40 s on two cores, --quick well under a minute.
REPEATS = 30
QUICK_REPEATS = 5


# --------------------------------------------------------------------------------------------
# Built-in families
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.relu(out + self.shortcut(x))
        return result


class ResNetCNN(nn.Module):
    """A small ResNet: a stem, three stages of two basic blocks, pooling and a classifier."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        previous = widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            blocks += [BasicBlock(previous, width, stride), BasicBlock(width, width, 1)]
            previous = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(previous, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.stages(self.stem(x))).flatten(1)
        result: torch.Tensor = self.fc(self.dropout(features))
        return result


class TransformerClassifier(nn.Module):
    """A pre-embedded sequence through a ``TransformerEncoder``, mean-pooled and classified."""

    def __init__(
        self, width: int = 256, heads: int = 4, layers: int = 2, classes: int = 10
    ) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.1, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(self.encoder(x).mean(dim=1))
        return result


class LSTMClassifier(nn.Module):
    """A two-layer LSTM over a sequence; the last step's state is classified."""

    def __init__(self, features: int = 64, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        result: torch.Tensor = self.head(out[:, -1])
        return result


@dataclass(frozen=True)
class Family:
    """A model family of the table: how to build it and the shape of one sample."""

    name: str
    batch_size: int
    build: Callable[[], nn.Module]
    sample_shape: tuple[int, ...]
    quick_shape: tuple[int, ...]
    describe: str


FAMILIES: tuple[Family, ...] = (
    Family(
        "CNN family",
        128,
        ResNetCNN,
        (3, 32, 32),
        (3, 16, 16),
        "ResNet-style CNN, 3 stages x 2 basic blocks (16/32/64 channels)",
    ),
    Family(
        "Transformer family",
        64,
        TransformerClassifier,
        (64, 256),
        (16, 256),
        "TransformerEncoder, 2 layers, width 256, 4 heads (sequence x width)",
    ),
    Family(
        "RNN family",
        256,
        LSTMClassifier,
        (32, 64),
        (8, 64),
        "LSTM, 2 layers, hidden 128 (sequence x features)",
    ),
)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _shape(text: str) -> tuple[int, ...]:
    parts = [part for part in text.replace("x", ",").split(",") if part.strip()]
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        shape = ()
    if not shape or any(size < 1 for size in shape):
        raise argparse.ArgumentTypeError(
            f"--input-shape takes the shape of one sample as positive integers, e.g. 3,224,224; "
            f"got {text!r}"
        )
    return shape


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``gradguard bench``."""
    parser.add_argument(
        "--model",
        metavar="MODULE:FACTORY",
        help="measure your own model instead of the built-in families: a callable returning an "
        "nn.Module, e.g. mypackage.models:build (needs --input-shape)",
    )
    parser.add_argument(
        "--input-shape",
        type=_shape,
        metavar="SHAPE",
        help="shape of one input sample for --model, e.g. 3,224,224 (the batch is added in front)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        metavar="N",
        help="batch size (default: 32 for --model; the families' own 128/64/256 otherwise)",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run: {QUICK_REPEATS} timed runs per mode and smaller inputs for the "
        "built-in families",
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        metavar="N",
        help=f"timed runs per mode (default: {REPEATS}; {QUICK_REPEATS} with --quick)",
    )
    parser.add_argument(
        "--warmup",
        type=_non_negative,
        metavar="N",
        help="warm-up runs per mode (default: 3; 1 with --quick)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw peak memory and median latency per mode into FILE (.png or .svg; needs "
        'matplotlib: pip install "gradguard[plot]")',
    )


class BenchError(Exception):
    """A bad command line or model factory: reported as one line, exit status 2."""


def _load_factory(spec: str) -> Callable[[], object]:
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise BenchError(f"--model takes package.module:factory, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise BenchError(f"--model {spec}: cannot import {module_name!r}: {error}") from error
    except SyntaxError as error:
        where = f"{error.filename}:{error.lineno}" if error.filename else module_name
        raise BenchError(
            f"--model {spec}: cannot import {module_name!r}: SyntaxError at {where}: {error.msg}"
        ) from error
    except Exception as error:  # the module itself raised while being imported
        raise BenchError(
            f"--model {spec}: importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from error
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise BenchError(f"--model {spec}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, name)
    if not callable(target):
        raise BenchError(f"--model {spec}: {attribute!r} is not callable")
    factory: Callable[[], object] = target
    return factory


@dataclass(frozen=True)
class Job:
    """One row of the table: a model to build and the batch to feed it."""

    name: str
    batch_size: int
    build: Callable[[], object]
    sample_shape: tuple[int, ...]
    describe: str


def _jobs(namespace: argparse.Namespace) -> list[Job]:
    if namespace.model is None:
        if namespace.input_shape is not None:
            raise BenchError("--input-shape applies to --model; the built-in families fix theirs")
        return [
            Job(
                family.name,
                namespace.batch_size or family.batch_size,
                family.build,
                family.quick_shape if namespace.quick else family.sample_shape,
                family.describe,
            )
            for family in FAMILIES
        ]
    if namespace.input_shape is None:
        raise BenchError("--model needs --input-shape, the shape of one sample, e.g. 3,224,224")
    factory = _load_factory(namespace.model)
    return [
        Job(
            namespace.model,
            namespace.batch_size or 32,
            factory,
            namespace.input_shape,
            f"{namespace.model}()",
        )
    ]


@dataclass(frozen=True)
class LatencyGain:
    """A mode's latency gain over a baseline, from the rounds in which both ran moments apart.

    Attributes:
        median: ``1 -`` the median of the per-round time ratios (``latency_improvement``).
        low: the first quartile of the per-round gains.
        high: the third quartile of the per-round gains.
        rounds: how many paired rounds there were.
    """

    median: float
    low: float
    high: float
    rounds: int

    @property
    def conclusive(self) -> bool:
        """Whether the effect stands out of the noise: the middle half of the rounds' gains lies
        on one side of zero, so their spread around the gain does not reach "no effect" (and
        there are at least :data:`MIN_ROUNDS` rounds). A consistent slowdown is conclusive too."""
        if self.rounds < MIN_ROUNDS:
            return False
        return self.low > 0 or self.high < 0 or (self.low == self.high == self.median)

    def describe(self) -> str:
        """``"22% (19% to 25%)"``, or ``"inconclusive (-150% to 40%)"`` when not conclusive."""
        spread = f"{format_percent(self.low)} to {format_percent(self.high)}"
        if not self.conclusive:
            return f"inconclusive: runs spread {spread}"
        return f"{format_percent(self.median)} ({spread})"


def latency_gain(result: Measurement, mode: str, baseline: str = "grad") -> LatencyGain:
    """The paired latency gain of ``mode`` over ``baseline`` in ``result``, with its spread."""
    samples = result.modes[mode].latencies_ms
    base = result.modes[baseline].latencies_ms
    gains = sorted(1.0 - value / ref for value, ref in zip(samples, base) if ref > 0)
    if not gains:
        return LatencyGain(0.0, 0.0, 0.0, 0)
    if len(gains) < 2:
        return LatencyGain(gains[0], gains[0], gains[0], 1)
    low, _, high = statistics.quantiles(gains, n=4, method="inclusive")
    return LatencyGain(result.modes[mode].latency_improvement, low, high, len(gains))


def recommend(result: Measurement) -> str:
    """The practice the measurements support, for the table's last column.

    ``inference_mode`` is advised only on a latency gain that stands out of the noise; when the
    latency comparison is inconclusive, the advice rests on the memory figures, which are exact.
    """
    modes = result.modes
    advice = "evaluating(model): eval() + no_grad"
    # "no_grad" and "evaluating" run the same computation: inference mode has to beat the better
    # of the two, so noise in one of them does not decide the advice.
    no_grad = [modes[n].latency_improvement for n in ("no_grad", "evaluating") if n in modes]
    inference_unsure = False
    if "inference" in modes and no_grad:
        advantage = modes["inference"].latency_improvement - max(no_grad)
        if latency_gain(result, "inference").conclusive:
            if modes["inference"].outputs_match and advantage >= INFERENCE_MARGIN:
                advice = 'evaluating(model, mode="inference"): eval() + inference_mode'
        else:
            inference_unsure = True
    if "no_grad" in modes and not latency_gain(result, "no_grad").conclusive:
        saved = modes["no_grad"].memory_reduction
        memory = (
            f"saves {format_percent(saved)} of the peak memory"
            if round(saved * 100) > 0
            else "saves no memory here"
        )
        advice += f" ({memory}; latency inconclusive)"
    elif inference_unsure:
        advice += " (inference_mode's latency inconclusive)"
    differing = [name for name, mode in modes.items() if not mode.outputs_match]
    if differing:
        advice += f"; outputs differ under {', '.join(differing)}: check before switching"
    return advice


def summary_rows(results: Sequence[tuple[Job, Measurement]]) -> list[str]:
    """The table of no_grad gains, measured, as Markdown rows."""
    head = (
        "Model family",
        "Batch size",
        "No-grad memory reduction",
        "No-grad latency improvement",
        "Recommended practice",
    )
    rows = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    for job, result in results:
        no_grad = result.modes.get("no_grad")
        cells = (
            job.name,
            str(job.batch_size),
            format_percent(no_grad.memory_reduction) if no_grad else "-",
            latency_gain(result, "no_grad").describe() if no_grad else "-",
            recommend(result),
        )
        rows.append(f"| {' | '.join(cells)} |")
    return rows


def _load_average() -> float | None:
    """The one-minute load average where the system has one: busy machines time noisily."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _progress(message: str) -> None:
    print(f"gradguard bench: {message}", file=sys.stderr, flush=True)


def main(namespace: argparse.Namespace) -> int:
    """Run ``gradguard bench``; 0 on success, 2 on a bad command line or model."""
    try:
        return _main(namespace)
    except BenchError as error:
        print(f"gradguard bench: error: {error}", file=sys.stderr)
        return 2


def _check_writable(path: str) -> None:
    """Refuse an unwritable --json FILE now, before minutes of measuring."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise BenchError(f"--json {path!r} is a directory; give a file name")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise BenchError(f"--json {path!r}: the folder {directory!r} does not exist")
    if not os.access(directory, os.W_OK) or (
        os.path.exists(target) and not os.access(target, os.W_OK)
    ):
        raise BenchError(f"--json {path!r} is not writable")


def _main(namespace: argparse.Namespace) -> int:
    if namespace.json:
        _check_writable(namespace.json)
    if namespace.device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: this torch build sees no CUDA device; use --device cpu")
    if namespace.plot:
        from gradguard import _plot

        try:
            _plot.check_plot_target(namespace.plot)
        except _plot.PlotError as error:
            raise BenchError(str(error)) from error
    jobs = _jobs(namespace)
    device = torch.device(namespace.device)
    repeats = namespace.repeats or (QUICK_REPEATS if namespace.quick else REPEATS)
    warmup = namespace.warmup if namespace.warmup is not None else (1 if namespace.quick else 3)

    results: list[tuple[Job, Measurement]] = []
    load_before = _load_average()
    started = time.perf_counter()
    for index, job in enumerate(jobs, 1):
        step = f"[{index}/{len(jobs)}] {job.name}, batch {job.batch_size}"
        _progress(f"{step}: building {job.describe}")
        torch.manual_seed(0)
        try:
            model = job.build()
        except Exception as error:
            raise BenchError(
                f"{job.describe} failed: {type(error).__name__}: {error}; --model takes a "
                "callable that needs no arguments and returns an nn.Module"
            ) from error
        if not isinstance(model, nn.Module):
            raise BenchError(f"{job.name} returned {type(model).__name__}, not an nn.Module")
        model = model.to(device)
        inputs = torch.randn(job.batch_size, *job.sample_shape, device=device)
        _progress(f"{step}: measuring 4 modes, {warmup} warm-up + {repeats} timed runs each")
        job_started = time.perf_counter()
        try:
            result = measure(model, inputs, repeats=repeats, warmup=warmup)
        except RuntimeError as error:
            raise BenchError(str(error)) from error
        _progress(f"{step}: done in {time.perf_counter() - job_started:.1f} s")
        results.append((job, result))
        del model, inputs

    _progress(f"finished in {time.perf_counter() - started:.1f} s")
    describe = describe_device(device)
    print(f"gradguard bench on {describe}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; median of "
        f"{repeats} timed runs after {warmup} warm-up, modes interleaved; each figure is "
        "against eval mode with gradients on"
    )
    load_after = _load_average()
    if load_before is not None and load_after is not None:
        cores = core_count()
        busy = max(load_before, load_after) > cores - 0.5
        print(
            f"load average {load_before:.1f} before, {load_after:.1f} after, on {cores} cores"
            + (
                ": other work shared the machine, so latencies are noisy (memory and saved "
                "bytes are not affected)"
                if busy
                else ""
            )
        )
    if namespace.quick and namespace.model is None:
        shapes = ", ".join(
            f"{job.name} {'x'.join(map(str, job.sample_shape))}" for job, _ in results
        )
        print(f"--quick: smaller inputs than the full run ({shapes}), {repeats} runs: indicative")
    print()
    print("\n".join(summary_rows(results)))
    unsure = [job.name for job, result in results if not latency_gain(result, "no_grad").conclusive]
    if unsure:
        print()
        print(
            f"Latency inconclusive for {', '.join(unsure)}: the paired runs spread wider than the "
            "effect, so no latency figure is given there and the advice rests on memory (exact). "
            "Rerun with more --repeats on a quiet machine for a latency figure."
        )
    for job, result in results:
        print()
        print(f"{job.name}: {job.describe}, input {[job.batch_size, *job.sample_shape]}")
        detail = result.table().splitlines()[1:]
        print("\n".join(detail))

    if namespace.json:
        payload = {
            "device": describe,
            "torch": torch.__version__,
            "results": [
                {
                    "family": job.name,
                    "batch_size": job.batch_size,
                    "modes": result.to_dict()["modes"],
                }
                for job, result in results
            ],
        }
        with open(namespace.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
        _progress(f"wrote {namespace.json}")
    if namespace.plot:
        from gradguard import _plot

        title = (
            f"gradguard bench on {describe}\n"
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {repeats} timed runs "
            f"per mode after {warmup} warm-up"
        )
        if load_before is not None and load_after is not None:
            title += f"; load average {load_before:.1f} before, {load_after:.1f} after"
        rows = [(job.name, job.batch_size, result) for job, result in results]
        _plot.plot_results(rows, namespace.plot, title)
        _progress(f"wrote {namespace.plot}")
    return 0


__all__ = [
    "FAMILIES",
    "LatencyGain",
    "configure_parser",
    "latency_gain",
    "main",
    "recommend",
    "summary_rows",
]
