"""``measure()``: what ``no_grad``, ``inference_mode`` and ``evaluating`` save on a forward pass.

Every mode runs the same forward with the model in eval mode, so the comparison isolates the grad
mode: ``"grad"`` (eval mode with gradients on, the "relying on eval() alone" mistake) is the
baseline, and ``"no_grad"``, ``"inference"`` and ``"evaluating"`` are compared with it.

How each figure is obtained:

- latency: wall-clock time of one forward call, including dropping its result (and so, in grad
  mode, freeing the graph it recorded), as an evaluation loop pays it. Modes are interleaved run by
  run, in an order that rotates every round, so machine drift and cache effects hit all alike. On
  CUDA the device is synchronized before and after every timed call. ``latency_improvement`` is
  ``1 -`` the median over rounds of (this mode's time / the baseline's time in the same round):
  each ratio compares runs made moments apart, so load that comes and goes on a shared machine
  cancels out of it better than out of a ratio of two medians.
- peak memory: the allocator's peak above the baseline taken just before the forward, with the
  output still alive. CUDA: the caching allocator's ``max_memory_allocated`` after
  ``reset_peak_memory_stats``. CPU: the running sum of the profiler's allocation and free events
  (``torch.profiler`` with ``profile_memory=True``), not the process RSS.
- saved for backward: the bytes of the distinct storages that autograd packs for backward
  (counted by a ``saved_tensors_hooks`` pair). Storages that exist before the forward and outlive
  it, the model's parameters and buffers and the example inputs, are left out: grad mode does not
  cost them. What remains is the memory a graph keeps alive until it is freed.
- outputs match: every tensor of the (possibly nested) output is ``torch.allclose`` to the
  baseline's, with tolerances per dtype (float32: ``rtol=1e-5, atol=1e-5``; ``5e-3`` on CUDA
  with TF32 allowed), since a mode may run different kernels; ``torch.equal`` for integer and
  boolean tensors.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradguard import _state
from gradguard._scopes import allow, evaluating

__all__ = ["MODES", "Measurement", "ModeResult", "describe_device", "measure"]

MODES: tuple[str, ...] = ("grad", "no_grad", "inference", "evaluating")
BASELINE = "grad"

_MODE_HELP = (
    "'grad' (eval mode, gradients on: the baseline), 'no_grad' (torch.no_grad), "
    "'inference' (torch.inference_mode), 'evaluating' (gradguard.evaluating(model))"
)


@dataclass(frozen=True)
class ModeResult:
    """The figures of one mode. Reductions are fractions relative to ``"grad"`` (0.25 = 25%)."""

    latencies_ms: tuple[float, ...]
    median_ms: float
    p90_ms: float
    peak_bytes: int
    saved_bytes: int
    outputs_match: bool
    memory_reduction: float
    latency_improvement: float

    def to_dict(self) -> dict[str, Any]:
        """The mode's entry of :meth:`Measurement.to_dict`."""
        return {
            "latency_ms": {"median": self.median_ms, "p90": self.p90_ms},
            "peak_bytes": self.peak_bytes,
            "saved_bytes": self.saved_bytes,
            "outputs_match": self.outputs_match,
            "memory_reduction": self.memory_reduction,
            "latency_improvement": self.latency_improvement,
        }


@dataclass(frozen=True)
class Measurement:
    """What :func:`measure` found: one :class:`ModeResult` per mode, ``"grad"`` first."""

    device: str
    torch: str
    modes: dict[str, ModeResult]
    model: str = ""
    repeats: int = 0
    warmup: int = 0

    def to_dict(self) -> dict[str, Any]:
        """``{"device", "torch", "modes": {mode: {"latency_ms": {"median", "p90"}, "peak_bytes",
        "saved_bytes", "outputs_match", "memory_reduction", "latency_improvement"}}}``."""
        return {
            "device": self.device,
            "torch": self.torch,
            "modes": {name: result.to_dict() for name, result in self.modes.items()},
        }

    def table(self) -> str:
        """A text table of every mode, with a header naming the model, device and torch version."""
        header = (
            f"{self.model or 'model'} on {self.device}, torch {self.torch}; "
            f"median of {self.repeats} runs after {self.warmup} warm-up, modes interleaved"
        )
        columns = (
            "mode",
            "median ms",
            "p90 ms",
            "peak memory",
            "saved for backward",
            "memory reduction",
            "latency improvement",
            "outputs match",
        )
        rows = [columns]
        for name, result in self.modes.items():
            baseline = name == BASELINE
            rows.append(
                (
                    name,
                    f"{result.median_ms:.2f}",
                    f"{result.p90_ms:.2f}",
                    format_bytes(result.peak_bytes),
                    format_bytes(result.saved_bytes),
                    "(baseline)" if baseline else format_percent(result.memory_reduction),
                    "(baseline)" if baseline else format_percent(result.latency_improvement),
                    "yes" if result.outputs_match else "NO",
                )
            )
        return "\n".join([header, *render_rows(rows)])


def render_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned first column, right-aligned others, two spaces between columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:])
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def format_bytes(count: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_percent(fraction: float) -> str:
    """``0.341`` -> ``"34%"``; negative means worse than the baseline."""
    return f"{round(fraction * 100)}%"


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` where there is one, else ``platform.processor()``."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def core_count() -> int:
    """Cores this process may run on (its affinity), else ``os.cpu_count()``."""
    sched_getaffinity: Callable[[int], set[int]] | None = getattr(os, "sched_getaffinity", None)
    if sched_getaffinity is not None:
        return len(sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_device(device: torch.device) -> str:
    """``"cpu (Intel(R) Xeon(R) ..., 2 cores)"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({cpu_name()}, {core_count()} cores)"


# --------------------------------------------------------------------------------------------
# Inputs, outputs and storages
# --------------------------------------------------------------------------------------------


def _tensors(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def describe_inputs(inputs: Sequence[object]) -> str:
    """``"Tensor[64, 256] float32, int"``: what the forward was given, for error messages."""

    def one(value: object) -> str:
        if isinstance(value, torch.Tensor):
            dtype = str(value.dtype).replace("torch.", "")
            return f"Tensor{list(value.shape)} {dtype} on {value.device}"
        if isinstance(value, (list, tuple)):
            inner = ", ".join(one(item) for item in value)
            return f"{type(value).__name__}({inner})"
        if isinstance(value, Mapping):
            inner = ", ".join(f"{key!r}: {one(item)}" for key, item in value.items())
            return f"{{{inner}}}"
        return type(value).__name__

    return ", ".join(one(value) for value in inputs) or "no inputs"


def _storage_key(tensor: torch.Tensor) -> tuple[object, int, int]:
    """``(device, address, bytes)`` of a tensor's storage; ``id`` for tensors without one."""
    try:
        storage = tensor.untyped_storage()
        return (storage.device, storage.data_ptr(), storage.nbytes())
    except (RuntimeError, NotImplementedError):
        # Tensor subclasses without a plain storage: count the tensor's own bytes, once.
        return ("tensor", id(tensor), tensor.numel() * tensor.element_size())


def _detached(value: object) -> object:
    """The output with every tensor detached, so a recorded graph is freed with the original."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        namedtuple_type: Callable[..., object] = type(value)
        return namedtuple_type(*(_detached(item) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(item) for item in value)
    if isinstance(value, Mapping):
        return {key: _detached(item) for key, item in value.items()}
    return value


# (rtol, atol) per dtype. The modes may take different kernels (the fused Transformer encoder path
# runs only without gradients), which differ in the last bits: near-zero elements need an atol.
_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


# float32 when CUDA may round it to TF32 (cuDNN convolutions do by default): the modes may pick
# different algorithms, each rounding differently; PyTorch's own TF32 tests allow 5e-3.
_TF32_TOLERANCE = (5e-3, 5e-3)


def _tf32_allowed(device: torch.device) -> bool:
    return device.type == "cuda" and bool(
        torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
    )


def outputs_match(value: object, baseline: object, *, tf32: bool = False) -> bool:
    """Whether two (nested) outputs agree: ``torch.allclose`` for floating tensors.

    Tolerances: float32 ``rtol=1e-5, atol=1e-5`` (``5e-3, 5e-3`` with ``tf32``, for CUDA
    with TF32 allowed); float16 ``1e-3, 1e-5``; bfloat16 ``1.6e-2, 1e-5``; float64
    ``1e-7, 1e-7``. Integer and boolean tensors must be equal.
    """
    if isinstance(value, torch.Tensor) or isinstance(baseline, torch.Tensor):
        if not (isinstance(value, torch.Tensor) and isinstance(baseline, torch.Tensor)):
            return False
        if value.shape != baseline.shape or value.dtype != baseline.dtype:
            return False
        if value.is_floating_point() or value.is_complex():
            default = _TF32_TOLERANCE if tf32 else (1e-5, 1e-5)
            rtol, atol = _TOLERANCES.get(value.dtype, default)
            return bool(torch.allclose(value, baseline, rtol=rtol, atol=atol, equal_nan=True))
        return bool(torch.equal(value, baseline))
    if isinstance(value, Mapping) and isinstance(baseline, Mapping):
        return value.keys() == baseline.keys() and all(
            outputs_match(value[key], baseline[key], tf32=tf32) for key in value
        )
    if isinstance(value, (list, tuple)) and isinstance(baseline, (list, tuple)):
        return len(value) == len(baseline) and all(
            outputs_match(a, b, tf32=tf32) for a, b in zip(value, baseline)
        )
    try:
        return bool(value == baseline)
    except Exception:  # an object whose == cannot be reduced to a bool: cannot claim a match
        return False


class _SavedCounter:
    """Counts the distinct storages autograd packs for backward, leaving out ``excluded``."""

    def __init__(self, excluded: set[tuple[object, int]]) -> None:
        self.excluded = excluded
        self.seen: set[tuple[object, int]] = set()
        self.total = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        device, address, nbytes = _storage_key(tensor)
        key = (device, address)
        if key not in self.excluded and key not in self.seen:
            self.seen.add(key)
            self.total += nbytes
        return tensor

    @staticmethod
    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor


# --------------------------------------------------------------------------------------------
# Modes and the three passes
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _in_mode(mode: str, model: nn.Module) -> Iterator[None]:
    # The model is already held in eval; each mode sets only the grad mode, and every mode but
    # "inference" leaves inference mode explicitly, so a caller inside inference_mode still gets
    # a real baseline.
    if mode == "inference":
        with torch.inference_mode():
            yield
        return
    with torch.inference_mode(False):
        if mode == "grad":
            with torch.enable_grad():
                yield
        elif mode == "no_grad":
            with torch.no_grad():
                yield
        else:
            with evaluating(model):
                yield


def _cpu_peak(run: Callable[[], object]) -> int:
    """Peak bytes above the start, from the profiler's CPU allocation and free events."""
    from torch.profiler import ProfilerActivity, profile

    # Kineto logs every profiler start and stop to stderr unless told otherwise; it reads this
    # when it first starts, and a value the user set is kept.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = run()
    del out
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def _cuda_peak(run: Callable[[], object], device: torch.device) -> int:
    """Peak bytes above the start, from the CUDA caching allocator's statistics."""
    torch.cuda.synchronize(device)
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = run()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - start
    del out
    return max(peak, 0)


def _percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _relative_gain(value: float, baseline: float) -> float:
    return 0.0 if baseline <= 0 else 1.0 - value / baseline


def _paired_gain(samples: Sequence[float], baseline: Sequence[float]) -> float:
    """``1 -`` the median, over rounds, of a mode's time over the baseline's in the same round."""
    if samples is baseline:
        return 0.0
    ratios = [value / base for value, base in zip(samples, baseline) if base > 0]
    return 1.0 - statistics.median(ratios) if ratios else 0.0


def _check_arguments(model: object, modes: object, repeats: object, warmup: object) -> list[str]:
    if not isinstance(model, nn.Module):
        raise TypeError(
            "measure() takes a torch.nn.Module as its first argument; got "
            f"{type(model).__module__}.{type(model).__qualname__}"
        )
    if isinstance(modes, str) or not isinstance(modes, Iterable):
        raise TypeError(
            f"measure(modes=...) takes a tuple of mode names, e.g. ('grad', 'no_grad'); got "
            f"{modes!r}. Valid modes: {_MODE_HELP}"
        )
    chosen = list(modes)
    for mode in chosen:
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"measure() got an unknown mode {mode!r}; valid modes: {_MODE_HELP}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"measure(modes=...) names a mode twice: {tuple(chosen)!r}")
    if not chosen:
        raise ValueError(f"measure(modes=...) is empty; valid modes: {_MODE_HELP}")
    for name, value, least in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"measure({name}=...) takes an int >= {least}; got {value!r}")
    # The baseline is always measured: every other mode is reported relative to it.
    return [BASELINE] + [mode for mode in chosen if mode != BASELINE]


def _device_of(model: nn.Module, inputs: Sequence[object]) -> torch.device:
    for tensor in _tensors(list(inputs)):
        return tensor.device
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def measure(
    model: nn.Module,
    *example_inputs: Any,
    modes: Sequence[str] = MODES,
    repeats: int = 10,
    warmup: int = 2,
) -> Measurement:
    """Measure latency, peak memory and saved-for-backward bytes of a forward pass in each mode.

    The model is held in eval mode for every mode; the modes differ only in the grad mode:
    ``"grad"`` (gradients on: the baseline, and the "eval() alone" mistake), ``"no_grad"``
    (``torch.no_grad``), ``"inference"`` (``torch.inference_mode``) and ``"evaluating"``
    (``gradguard.evaluating(model)``). ``"grad"`` is always measured, first, because every other
    mode is reported relative to it. Each mode's forward runs once to count the bytes saved for
    backward and check its outputs against the baseline's, once to take the allocator's peak,
    then ``warmup + repeats`` timed times, modes interleaved run by run. See the module docstring
    for how each figure is obtained.

    Findings: GG001 (``graph-in-inference``) is silenced in this thread while measuring; a
    forward that turns gradients back on shows up as ``saved_bytes`` above zero instead.

    What changes and what is restored: every submodule's own ``training`` flag, every
    parameter's ``requires_grad`` and the grad mode are put back exactly afterwards, also when a
    forward fails. On CUDA the device's peak-memory statistics are reset. The inputs are not
    copied: a forward that modifies its inputs in place changes them for every later run.

    Thread locality: the grad mode is thread local; ``module.training`` is shared by all threads,
    so another thread using the model while it is measured sees it in eval mode.

    Args:
        model: the module to run, on the device of the inputs.
        *example_inputs: the positional arguments of one forward call.
        modes: which modes to measure, from ``"grad"``, ``"no_grad"``, ``"inference"``,
            ``"evaluating"``.
        repeats: timed runs per mode (the median and p90 are taken over them).
        warmup: untimed runs per mode before the timed ones.

    Returns:
        A :class:`Measurement` with ``.table()`` and ``.to_dict()``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or ``modes`` is a string.
        ValueError: an unknown or repeated mode, a bad ``repeats``/``warmup``, or a device other
            than CPU and CUDA; raised before anything changes.
        RuntimeError: the forward failed on the example inputs; the message names the model
            class, the inputs' shapes and the mode, and the original error is chained. The
            model's state is restored first.

    Example:
        >>> import torch, gradguard
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
        >>> result = gradguard.measure(model, torch.randn(32, 64), repeats=3, warmup=1)
        >>> result.to_dict()["modes"]["no_grad"]["saved_bytes"]
        0
    """
    chosen = _check_arguments(model, modes, repeats, warmup)
    device = _device_of(model, example_inputs)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"measure() measures memory on 'cpu' and 'cuda' devices; the inputs are on {device}"
        )
    description = describe_device(device)
    excluded: set[tuple[object, int]] = set()
    for tensor in (*model.parameters(), *model.buffers(), *_tensors(list(example_inputs))):
        storage_device, address, _ = _storage_key(tensor)
        excluded.add((storage_device, address))

    def forward() -> object:
        return model(*example_inputs)

    tree = _state.tree_of((model,))
    parameters = [(p, p.requires_grad) for p in _state.unique_parameters((model,))]
    grad_enabled = torch.is_grad_enabled()
    hold = _state.hold_eval(tree)
    try:
        # Graphs recorded where inference runs are what this measures (the baseline records them
        # on purpose): saved_bytes reports them, so GG001 would only repeat it as a warning.
        with allow("graph-in-inference"):
            saved, matches = _check_pass(model, chosen, forward, device, excluded, example_inputs)
            peaks = {}
            for mode in chosen:
                with _in_mode(mode, model):
                    peaks[mode] = (
                        _cuda_peak(forward, device) if device.type == "cuda" else _cpu_peak(forward)
                    )
            samples = _timed_pass(model, chosen, forward, device, repeats, warmup)
    finally:
        try:
            _state.release_eval(hold)
        finally:
            for parameter, flag in parameters:
                if parameter.requires_grad != flag:
                    parameter.requires_grad_(flag)
            torch.set_grad_enabled(grad_enabled)

    medians = {mode: statistics.median(samples[mode]) for mode in chosen}
    results = {
        mode: ModeResult(
            latencies_ms=tuple(samples[mode]),
            median_ms=medians[mode],
            p90_ms=_percentile(samples[mode], 0.9),
            peak_bytes=peaks[mode],
            saved_bytes=saved[mode],
            outputs_match=matches[mode],
            memory_reduction=_relative_gain(peaks[mode], peaks[BASELINE]),
            latency_improvement=_paired_gain(samples[mode], samples[BASELINE]),
        )
        for mode in chosen
    }
    return Measurement(
        device=description,
        torch=torch.__version__,
        modes=results,
        model=type(model).__name__,
        repeats=repeats,
        warmup=warmup,
    )


def _check_pass(
    model: nn.Module,
    chosen: list[str],
    forward: Callable[[], object],
    device: torch.device,
    excluded: set[tuple[object, int]],
    inputs: Sequence[object],
) -> tuple[dict[str, int], dict[str, bool]]:
    """One forward per mode: bytes saved for backward, and outputs compared with the baseline."""
    saved: dict[str, int] = {}
    matches: dict[str, bool] = {}
    baseline: object = None
    tf32 = _tf32_allowed(device)
    for mode in chosen:
        counter = _SavedCounter(excluded)
        try:
            with (
                _in_mode(mode, model),
                torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack),
            ):
                out = forward()
        except Exception as error:
            raise RuntimeError(
                f"measure() could not run {type(model).__qualname__} on the example inputs "
                f"({describe_inputs(inputs)}) in mode {mode!r}: {type(error).__name__}: {error}. "
                "The model's state was restored; check that the inputs are what its forward "
                "expects, on the model's device."
            ) from error
        saved[mode] = counter.total
        # Detached at once, so the baseline's graph is freed before the next mode runs.
        result = _detached(out)
        del out
        if mode == BASELINE:
            baseline = result
            matches[mode] = True
        else:
            matches[mode] = outputs_match(result, baseline, tf32=tf32)
    return saved, matches


def _timed_pass(
    model: nn.Module,
    chosen: list[str],
    forward: Callable[[], object],
    device: torch.device,
    repeats: int,
    warmup: int,
) -> dict[str, list[float]]:
    """``warmup + repeats`` rounds; each round runs every mode once, in a rotating order."""
    cuda = device.type == "cuda"
    samples: dict[str, list[float]] = {mode: [] for mode in chosen}
    collecting = gc.isenabled()
    gc.collect()
    # A collection landing inside one mode's run would be charged to that mode alone.
    gc.disable()
    try:
        for round_index in range(warmup + repeats):
            shift = round_index % len(chosen)
            for mode in chosen[shift:] + chosen[:shift]:
                if cuda:
                    torch.cuda.synchronize(device)
                start = time.perf_counter_ns()
                with _in_mode(mode, model):
                    out = forward()
                del out
                if cuda:
                    torch.cuda.synchronize(device)
                elapsed = time.perf_counter_ns() - start
                if round_index >= warmup:
                    samples[mode].append(elapsed / 1e6)
    finally:
        if collecting:
            gc.enable()
    return samples
