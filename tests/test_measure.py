"""Tests of gradguard.measure: the instrument checked against figures known by construction."""

from __future__ import annotations

import gc
import statistics
import threading

import pytest
import torch
from torch import nn

import gradguard
from gradguard._measure import MODES, Measurement, outputs_match

LAYERS, BATCH, WIDTH = 4, 64, 256
ACTIVATION_BYTES = BATCH * WIDTH * 4  # one float32 activation of the chain


def linear_relu_chain() -> nn.Sequential:
    """LAYERS x (Linear, ReLU, Dropout): what the forward allocates and saves is known exactly.

    With an input that does not require grad, each ReLU saves its output, which the next Linear
    saves too (the same storage), and the Linears also save their weights (parameters). So grad
    mode keeps LAYERS activations alive for backward; at the peak, the last Linear's output and
    the last ReLU's output are alive beside the LAYERS - 1 saved before: LAYERS + 1 activations.
    Without gradients, at most two activations are alive at once.
    """
    layers: list[nn.Module] = []
    for _ in range(LAYERS):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Dropout(0.5)]
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def chain_result() -> Measurement:
    """One measurement of the chain, shared by the tests that only read it."""
    torch.manual_seed(0)
    return gradguard.measure(linear_relu_chain(), torch.randn(BATCH, WIDTH), repeats=3, warmup=1)


def within(value: float, expected: float, tolerance: float = 0.05) -> bool:
    return abs(value - expected) <= tolerance * expected


def test_saved_bytes_match_the_chain_by_construction(chain_result: Measurement) -> None:
    """Grad mode saves LAYERS activations (within 5%); parameters and the input are not counted."""
    saved = chain_result.modes["grad"].saved_bytes
    assert within(saved, LAYERS * ACTIVATION_BYTES), saved


@pytest.mark.parametrize("mode", ["no_grad", "inference", "evaluating"])
def test_no_bytes_are_saved_without_gradients(chain_result: Measurement, mode: str) -> None:
    """Every mode without gradients saves exactly zero bytes for backward."""
    assert chain_result.modes[mode].saved_bytes == 0


def test_peak_memory_with_gradients_matches_the_chain(chain_result: Measurement) -> None:
    """Grad mode peaks at LAYERS + 1 activations above the pre-forward baseline (within 5%)."""
    peak = chain_result.modes["grad"].peak_bytes
    assert within(peak, (LAYERS + 1) * ACTIVATION_BYTES), peak


@pytest.mark.parametrize("mode", ["no_grad", "inference", "evaluating"])
def test_peak_memory_without_gradients_matches_the_chain(
    chain_result: Measurement, mode: str
) -> None:
    """Without gradients the peak is two activations (within 5%)."""
    peak = chain_result.modes[mode].peak_bytes
    assert within(peak, 2 * ACTIVATION_BYTES), peak


def test_reductions_are_relative_to_grad(chain_result: Measurement) -> None:
    """memory_reduction and latency_improvement compare with "grad", which has 0.0 for both;
    latency compares each round's run with the baseline's run of the same round."""
    grad = chain_result.modes["grad"]
    assert grad.memory_reduction == 0.0
    assert grad.latency_improvement == 0.0
    for mode in ("no_grad", "inference", "evaluating"):
        result = chain_result.modes[mode]
        assert result.memory_reduction == pytest.approx(1 - result.peak_bytes / grad.peak_bytes)
        # Paired by round: each timed run against the baseline's run of the same round.
        ratios = [a / b for a, b in zip(result.latencies_ms, grad.latencies_ms)]
        assert result.latency_improvement == pytest.approx(1 - statistics.median(ratios))
    # (LAYERS + 1) activations against 2: the reduction the construction predicts.
    expected = 1 - 2 / (LAYERS + 1)
    assert chain_result.modes["no_grad"].memory_reduction == pytest.approx(expected, abs=0.03)


def test_latency_has_median_and_p90_over_the_timed_runs(chain_result: Measurement) -> None:
    """Each mode keeps `repeats` samples; the median and p90 are taken over them."""
    for result in chain_result.modes.values():
        samples = sorted(result.latencies_ms)
        assert len(samples) == 3
        assert all(sample > 0 for sample in samples)
        assert result.median_ms == samples[1]
        assert samples[1] <= result.p90_ms <= samples[2]


def test_to_dict_follows_the_documented_schema(chain_result: Measurement) -> None:
    """to_dict() has exactly the keys of the issue's schema, with plain JSON types."""
    data = chain_result.to_dict()
    assert set(data) == {"device", "torch", "modes"}
    assert data["torch"] == torch.__version__
    assert data["device"].startswith("cpu (")
    assert list(data["modes"]) == list(MODES)
    for entry in data["modes"].values():
        assert set(entry) == {
            "latency_ms",
            "peak_bytes",
            "saved_bytes",
            "outputs_match",
            "memory_reduction",
            "latency_improvement",
        }
        assert set(entry["latency_ms"]) == {"median", "p90"}
        assert isinstance(entry["peak_bytes"], int)
        assert isinstance(entry["saved_bytes"], int)
        assert entry["outputs_match"] is True
        assert isinstance(entry["memory_reduction"], float)


def test_table_has_a_row_per_mode_and_a_header(chain_result: Measurement) -> None:
    """table() names the model, device and torch version, and lists every mode's figures."""
    lines = chain_result.table().splitlines()
    assert lines[0].startswith("Sequential on cpu (")
    assert torch.__version__ in lines[0]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert set(rows) == set(MODES)
    assert "256.0 KiB" in rows["grad"]  # LAYERS activations saved
    assert rows["no_grad"].split()[-1] == "yes"


def test_only_requested_modes_are_measured_and_grad_is_always_the_baseline() -> None:
    """modes=("inference",) measures "grad" (the baseline) and "inference", nothing else."""
    result = gradguard.measure(nn.Linear(8, 8), torch.randn(4, 8), modes=("inference",), repeats=1)
    assert list(result.modes) == ["grad", "inference"]


class GradModeRecorder(nn.Module):
    """Records, per forward call, which mode it ran in; its output depends on the grad mode."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled():
            self.calls.append("inference")
        elif torch.is_grad_enabled():
            self.calls.append("grad")
        else:
            self.calls.append("no_grad")
        out: torch.Tensor = self.linear(x)
        return out + float(torch.is_grad_enabled())


def test_modes_are_interleaved_run_by_run_in_a_rotating_order() -> None:
    """The timed runs alternate between modes, and each round starts with the next mode."""
    model = GradModeRecorder()
    gradguard.measure(model, torch.randn(2, 4), modes=("grad", "no_grad", "inference"), repeats=3)
    # 3 check runs, 3 memory runs, then (2 warm-up + 3 timed) rounds of 3 modes.
    timed = model.calls[6:]
    g, n, i = "grad", "no_grad", "inference"
    assert timed == [g, n, i, n, i, g, i, g, n, g, n, i, n, i, g]


def test_outputs_that_depend_on_the_grad_mode_do_not_match() -> None:
    """A forward whose result changes with the grad mode is reported as not matching."""
    result = gradguard.measure(GradModeRecorder(), torch.randn(2, 4), repeats=1, warmup=0)
    assert result.modes["grad"].outputs_match is True
    assert result.modes["no_grad"].outputs_match is False
    assert result.modes["inference"].outputs_match is False
    assert result.to_dict()["modes"]["evaluating"]["outputs_match"] is False
    assert "NO" in result.table()


class NestedOutput(nn.Module):
    """Returns a dict holding a tensor, a tuple of tensors and a plain value."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        y = self.linear(x)
        return {"logits": y, "parts": (y.relu(), y.argmax(dim=1)), "name": "nested"}


def test_nested_outputs_are_compared_element_by_element() -> None:
    """Dicts, tuples, integer tensors and plain values in the output are all compared."""
    result = gradguard.measure(NestedOutput(), torch.randn(3, 4), repeats=1, warmup=0)
    assert all(mode.outputs_match for mode in result.modes.values())


def test_outputs_match_compares_structure_values_and_dtypes() -> None:
    """outputs_match rejects a different value, shape, dtype, structure or plain value."""
    a = torch.tensor([1.0, 2.0])
    assert outputs_match((a, {"k": 1}), (a.clone(), {"k": 1}))
    assert outputs_match(a + 1e-7, a)
    assert not outputs_match(a + 1e-3, a)
    assert not outputs_match(a[:1], a)
    assert not outputs_match(a.double(), a)
    assert not outputs_match((a,), (a, a))
    assert not outputs_match({"k": a}, {"j": a})
    assert not outputs_match(a, [1.0, 2.0])
    assert not outputs_match(torch.tensor([1, 2]), torch.tensor([1, 3]))
    assert not outputs_match("x", "y")


def test_outputs_match_allows_tf32_rounding_only_when_asked() -> None:
    """With tf32=True (CUDA with TF32) float32 differences of 1e-3 match; float64 never."""
    a = torch.tensor([1.0, 0.0])
    assert not outputs_match(a + 1e-3, a)
    assert outputs_match(a + 1e-3, a, tf32=True)
    assert not outputs_match(a + 1e-2, a, tf32=True)
    assert not outputs_match(a.double() + 1e-3, a.double(), tf32=True)


def mixed_state_model() -> tuple[nn.Module, list[bool], list[bool]]:
    """A training model with a frozen BatchNorm kept in eval and one frozen Linear."""
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(), nn.Linear(8, 2))
    model.train()
    model[1].eval()
    model[0].requires_grad_(False)
    training = [m.training for m in model.modules()]
    requires = [p.requires_grad for p in model.parameters()]
    return model, training, requires


def assert_state(model: nn.Module, training: list[bool], requires: list[bool]) -> None:
    assert [m.training for m in model.modules()] == training
    assert [p.requires_grad for p in model.parameters()] == requires


class ReenablesGrad(nn.Module):
    """Turns gradients back on inside its forward: a graph is recorded even under no_grad."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            out: torch.Tensor = self.linear(x).relu()
        return out


def test_forward_that_reenables_grad_shows_saved_bytes_instead_of_warning() -> None:
    """A graph recorded under no_grad or evaluating is reported as saved bytes; no GG001 warning
    is raised while measuring (pytest turns any warning into an error)."""
    result = gradguard.measure(ReenablesGrad(), torch.randn(4, 4), repeats=1, warmup=1)
    relu_output = 4 * 8 * 4
    assert result.modes["grad"].saved_bytes == relu_output
    assert result.modes["no_grad"].saved_bytes == relu_output
    assert result.modes["evaluating"].saved_bytes == relu_output
    assert result.modes["inference"].saved_bytes == 0
    assert gradguard.findings() == []


def test_restores_every_flag_and_the_grad_mode_after_success() -> None:
    """Each submodule's own training flag, each requires_grad and the grad mode come back."""
    model, training, requires = mixed_state_model()
    result = gradguard.measure(model, torch.randn(4, 4), repeats=1, warmup=0)
    assert_state(model, training, requires)
    assert torch.is_grad_enabled()
    # The forward ran in eval mode: Dropout is off, so every mode agrees with the baseline.
    assert all(mode.outputs_match for mode in result.modes.values())


def test_restores_grad_mode_off_when_called_under_no_grad() -> None:
    """Called under torch.no_grad(), the baseline still records a graph and grad stays off."""
    model, training, requires = mixed_state_model()
    with torch.no_grad():
        result = gradguard.measure(model, torch.randn(4, 4), repeats=1, warmup=0)
        assert not torch.is_grad_enabled()
    assert result.modes["grad"].saved_bytes > 0
    assert_state(model, training, requires)


def test_baseline_records_a_graph_when_called_under_inference_mode() -> None:
    """Inside torch.inference_mode(), "grad" still runs with gradients on a normal tensor."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    inputs = torch.randn(4, 4)
    with torch.inference_mode():
        result = gradguard.measure(model, inputs, repeats=1, warmup=0)
        assert torch.is_inference_mode_enabled()
    assert result.modes["grad"].saved_bytes == 4 * 8 * 4  # the ReLU's output
    assert result.modes["inference"].saved_bytes == 0


def test_failing_forward_names_model_inputs_and_error_and_restores_state() -> None:
    """A forward that fails on the inputs raises RuntimeError naming the model class, the input
    shapes and the original error (chained); every flag is back before it propagates."""
    model, training, requires = mixed_state_model()
    with pytest.raises(RuntimeError, match=r"could not run Sequential") as caught:
        gradguard.measure(model, torch.randn(4, 5), repeats=1)
    message = str(caught.value)
    assert "Tensor[4, 5] float32 on cpu" in message
    assert "mode 'grad'" in message
    assert "mat1 and mat2 shapes cannot be multiplied" in message
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert_state(model, training, requires)
    assert torch.is_grad_enabled()


class FailsUnderInference(nn.Module):
    """Works with gradients on or off, but fails in inference mode, after switching state."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled():
            # A misbehaving forward: flips flags before it fails.
            self.linear.weight.requires_grad_(False)
            torch.set_grad_enabled(True)
            raise ValueError("no inference here")
        out: torch.Tensor = self.linear(x)
        return out


def test_forward_failing_in_one_mode_names_it_and_restores_what_it_changed() -> None:
    """A failure in one mode only names that mode; flags the forward changed are put back."""
    model = FailsUnderInference()
    model.train()
    with torch.no_grad():
        with pytest.raises(RuntimeError, match=r"in mode 'inference'") as caught:
            gradguard.measure(model, torch.randn(2, 4), repeats=1)
        assert not torch.is_grad_enabled()
    assert isinstance(caught.value.__cause__, ValueError)
    assert "ValueError: no inference here" in str(caught.value)
    assert model.training
    assert model.linear.training
    assert model.linear.weight.requires_grad


class FailsOnCall(nn.Module):
    """Raises on its n-th forward call: a failure in the middle of the timed runs."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        out: torch.Tensor = self.linear(x)
        return out


def test_interrupt_during_timed_runs_restores_state_and_garbage_collection() -> None:
    """An interrupt in the middle of the timed runs propagates as it is; every flag, the grad
    mode and automatic garbage collection are back."""
    model = FailsOnCall(fail_at=12)  # after 4 check runs and 4 memory runs
    model.train()
    model.linear.eval()
    with torch.no_grad():
        with pytest.raises(KeyboardInterrupt):
            gradguard.measure(model, torch.randn(2, 4), repeats=3, warmup=1)
        assert not torch.is_grad_enabled()
    assert model.calls == 12
    assert model.training
    assert not model.linear.training
    assert gc.isenabled()


def test_unknown_mode_lists_the_valid_ones_before_anything_runs() -> None:
    """An unknown mode raises ValueError listing every valid mode; the model never runs."""
    model = GradModeRecorder()
    with pytest.raises(ValueError, match=r"unknown mode 'no-grad'") as caught:
        gradguard.measure(model, torch.randn(2, 4), modes=("grad", "no-grad"))
    for mode in MODES:
        assert repr(mode) in str(caught.value)
    assert model.calls == []
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"modes": "no_grad"}, TypeError, r"tuple of mode names"),
        ({"modes": ()}, ValueError, r"is empty"),
        ({"modes": ("no_grad", "no_grad")}, ValueError, r"names a mode twice"),
        ({"repeats": 0}, ValueError, r"repeats=\.\.\.\) takes an int >= 1; got 0"),
        ({"warmup": -1}, ValueError, r"warmup=\.\.\.\) takes an int >= 0; got -1"),
        ({"repeats": True}, ValueError, r"got True"),
    ],
)
def test_bad_arguments_raise_clear_errors(
    kwargs: dict[str, object], error: type[Exception], pattern: str
) -> None:
    """Bad modes, repeats or warmup raise an error naming what was given and what is valid."""
    model = GradModeRecorder()
    with pytest.raises(error, match=pattern):
        gradguard.measure(model, torch.randn(2, 4), **kwargs)  # type: ignore[arg-type]
    assert model.calls == []


def test_non_module_is_refused() -> None:
    """A plain function is refused with a TypeError naming its type."""
    with pytest.raises(TypeError, match=r"takes a torch.nn.Module .* got builtins.function"):
        gradguard.measure(lambda x: x, torch.randn(2))  # type: ignore[arg-type]


def test_measuring_keeps_another_threads_grad_mode_alone() -> None:
    """The grad mode is per thread: a thread measuring does not touch this thread's mode."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            gradguard.measure(nn.Linear(4, 4), torch.randn(2, 4), repeats=1, warmup=0)
        except BaseException as error:  # pragma: no cover - reported by the assertion below
            errors.append(error)

    with torch.no_grad():
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert not torch.is_grad_enabled()
    assert errors == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_and_saved_bytes_match_the_chain() -> None:
    """On CUDA, the caching allocator's peak and the saved bytes match the construction."""
    torch.manual_seed(0)
    model = linear_relu_chain().cuda()
    result = gradguard.measure(model, torch.randn(BATCH, WIDTH, device="cuda"), repeats=2, warmup=1)
    assert result.device.startswith("cuda:")
    assert within(result.modes["grad"].saved_bytes, LAYERS * ACTIVATION_BYTES)
    assert within(result.modes["grad"].peak_bytes, (LAYERS + 1) * ACTIVATION_BYTES)
    assert within(result.modes["no_grad"].peak_bytes, 2 * ACTIVATION_BYTES)
    assert result.modes["no_grad"].saved_bytes == 0
