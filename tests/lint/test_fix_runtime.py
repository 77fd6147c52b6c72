"""The safe fixes keep what the code computes: before and after run on a real model, watched.

Each before-version is fixed by ``--fix``, then both versions run on copies of one small model
under the watchdog: same outputs, same flags afterwards (except, for GG110, the frozen submodule
that the hand-written ``model.train()`` woke and that now stays in eval), and no finding for
the fixed version.
"""

from __future__ import annotations

import asyncio
import copy
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import gradguard
from tests.helpers import Net, fine_tuning_net, flags, requires
from tests.lint.fix_helpers import fix_text


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    gradguard.unwatch()
    gradguard.clear_findings()
    yield
    gradguard.unwatch()
    gradguard.clear_findings()
    torch.set_grad_enabled(True)


def load(source: str, name: str) -> dict[str, Any]:
    """The module namespace that running ``source`` gives."""
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


def watched(call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """Run ``call`` under the watchdog; its result and the codes of the findings it made."""
    gradguard.clear_findings()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with gradguard.watch(strict=False):
            result = call()
    return result, [finding.code for finding in gradguard.findings()]


def fixed(tmp_path: Path, before: str, code: str) -> str:
    after, report = fix_text(tmp_path, before)
    assert after != before
    assert {fix.codes for fix in report.applied} == {(code,)}
    assert code not in {f.code for f in report.remaining}
    return after


GG110_BEFORE = textwrap.dedent(
    """\
    import torch


    def evaluate(model, x):
        model.eval()
        with torch.no_grad():
            out = model(x)
            grad_inside = torch.is_grad_enabled()
        model.train()
        return out, grad_inside
    """
)


def test_gg110_fix_same_outputs_and_frozen_batchnorm_stays_in_eval(tmp_path: Path) -> None:
    """evaluating(R) computes the same, and the frozen BatchNorm is not woken any more."""
    after = fixed(tmp_path, GG110_BEFORE, "GG110")
    torch.manual_seed(0)
    model = fine_tuning_net()
    x = torch.randn(4, 8)
    frozen_before = flags(model)
    old, new = copy.deepcopy(model), copy.deepcopy(model)
    before_ns = load(GG110_BEFORE, "before")
    (out_old, grad_old), _ = watched(lambda: before_ns["evaluate"](old, x))
    (out_new, grad_new), found_new = watched(lambda: load(after, "after")["evaluate"](new, x))
    assert torch.equal(out_old, out_new)
    assert grad_old is grad_new is False
    assert not out_new.requires_grad
    assert found_new == []
    # The bug being fixed: model.train() woke the frozen BatchNorm; evaluating restores it.
    assert flags(old) == [True] * len(frozen_before)
    assert flags(new) == frozen_before
    assert flags(new) != flags(old)
    assert requires(new) == requires(old)
    assert torch.is_grad_enabled()


def test_gg110_fix_inference_mode_keeps_inference_tensors(tmp_path: Path) -> None:
    """``inference_mode`` becomes ``mode="inference"``: the output is still an inference tensor."""
    before = GG110_BEFORE.replace("torch.no_grad()", "torch.inference_mode()")
    after = fixed(tmp_path, before, "GG110")
    assert 'mode="inference"' in after
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(4, 8)
    old, new = copy.deepcopy(model), copy.deepcopy(model)
    (out_old, _), _ = watched(lambda: load(before, "before")["evaluate"](old, x))
    (out_new, _), found_new = watched(lambda: load(after, "after")["evaluate"](new, x))
    assert torch.equal(out_old, out_new)
    assert out_old.is_inference() and out_new.is_inference()
    assert flags(new) == flags(old) == [True] * len(flags(model))
    assert found_new == []


GG108_BEFORE = textwrap.dedent(
    """\
    import torch


    @torch.no_grad()
    async def predict(model, x):
        out = model(x)
        return out, torch.is_grad_enabled()
    """
)


def test_gg108_fix_body_really_runs_without_gradients(tmp_path: Path) -> None:
    """The fixed coroutine gives the same values, computed without a graph, no model switched."""
    after = fixed(tmp_path, GG108_BEFORE, "GG108")
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(4, 8)
    old, new = copy.deepcopy(model), copy.deepcopy(model)
    before_ns, after_ns = load(GG108_BEFORE, "before"), load(after, "after")
    (out_old, grad_old), _ = watched(lambda: asyncio.run(before_ns["predict"](old, x)))
    (out_new, grad_new), found_new = watched(lambda: asyncio.run(after_ns["predict"](new, x)))
    assert torch.equal(out_old, out_new)
    # The mistake: torch's decorator did nothing for the coroutine's body.
    assert grad_old is True and out_old.requires_grad
    assert grad_new is False and not out_new.requires_grad
    assert flags(new) == flags(old) == flags(model)  # models=[]: nothing switched
    assert found_new == []
    assert torch.is_grad_enabled()


def test_gg108_fix_leaves_a_training_model_in_training(tmp_path: Path) -> None:
    """``models=[]``: a model in training mode is not put in eval behind the user's back."""
    after = fixed(tmp_path, GG108_BEFORE, "GG108")
    model = fine_tuning_net()
    seen: list[list[bool]] = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(flags(self.net))
            return self.net(x)

    spy = Spy()
    before_flags = flags(model)
    asyncio.run(load(after, "after")["predict"](spy, torch.randn(4, 8)))
    assert seen == [before_flags]
    assert flags(model) == before_flags


GG106_BEFORE = textwrap.dedent(
    """\
    import torch


    def train(model, batches, optimizer):
        model.train()
        criterion = torch.nn.CrossEntropyLoss()
        total = 0.0
        for x, y in batches:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss
        return f"{total / len(batches):.5f}", float(total)
    """
)


def test_gg106_fix_same_training_and_a_plain_number(tmp_path: Path) -> None:
    """``total += loss.item()``: the same weights and the same printed mean, no graph kept."""
    after = fixed(tmp_path, GG106_BEFORE, "GG106")
    assert "total += loss.item()" in after
    torch.manual_seed(0)
    model = Net()
    batches = [(torch.randn(8, 8), torch.randint(0, 3, (8,))) for _ in range(4)]
    runs = []
    for source, name in ((GG106_BEFORE, "before"), (after, "after")):
        torch.manual_seed(1)  # the same dropout masks in both runs
        copy_ = copy.deepcopy(model)
        optimizer = torch.optim.SGD(copy_.parameters(), lr=0.1)
        train = load(source, name)["train"]
        result, found = watched(lambda m=copy_, o=optimizer, t=train: t(m, batches, o))
        runs.append((copy_, result, found))
    (old, (text_old, total_old), _), (new, (text_new, total_new), found_new) = runs
    for p_old, p_new in zip(old.parameters(), new.parameters()):
        assert torch.equal(p_old, p_new)
    assert text_old == text_new
    # Python floats add in double precision, the tensor in single: equal to float32 rounding.
    assert total_new == pytest.approx(total_old, rel=1e-6)
    assert flags(new) == flags(old)
    assert found_new == []


def test_gg108_fix_on_an_async_generator(tmp_path: Path) -> None:
    """An async generator's body runs without gradients at every step once fixed."""
    before = textwrap.dedent(
        """\
        import torch


        @torch.no_grad()
        async def stream(model, batches):
            for x in batches:
                yield model(x), torch.is_grad_enabled()
        """
    )
    after = fixed(tmp_path, before, "GG108")
    torch.manual_seed(0)
    model = Net().eval()
    batches = [torch.randn(4, 8) for _ in range(3)]

    async def collect(source: str, name: str) -> list[tuple[torch.Tensor, bool]]:
        return [item async for item in load(source, name)["stream"](model, batches)]

    old, _ = watched(lambda: asyncio.run(collect(before, "before")))
    new, found_new = watched(lambda: asyncio.run(collect(after, "after")))
    for (out_old, grad_old), (out_new, grad_new) in zip(old, new):
        assert torch.equal(out_old, out_new)
        assert grad_old is True and grad_new is False
        assert not out_new.requires_grad
    assert found_new == []
    assert torch.is_grad_enabled()


GG106_DETACH_BEFORE = textwrap.dedent(
    """\
    import torch


    def train(model, batches, optimizer):
        model.train()
        criterion = torch.nn.CrossEntropyLoss()
        total = 0
        losses = []
        for x, y in batches:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss
            losses.append(loss)
        return total.item(), torch.stack(losses).tolist()
    """
)


def test_gg106_detach_fix_same_values_bit_for_bit(tmp_path: Path) -> None:
    """``.detach()`` where the accumulator is used as a tensor: the very same numbers."""
    after = fixed(tmp_path, GG106_DETACH_BEFORE, "GG106")
    assert "total += loss.detach()" in after and "losses.append(loss.detach())" in after
    torch.manual_seed(0)
    model = Net()
    batches = [(torch.randn(8, 8), torch.randint(0, 3, (8,))) for _ in range(4)]
    results = []
    for source, name in ((GG106_DETACH_BEFORE, "before"), (after, "after")):
        torch.manual_seed(1)
        copy_ = copy.deepcopy(model)
        optimizer = torch.optim.SGD(copy_.parameters(), lr=0.1)
        train = load(source, name)["train"]
        result, found = watched(lambda m=copy_, o=optimizer, t=train: t(m, batches, o))
        results.append((copy_, result, found))
    (old, result_old, _), (new, result_new, found_new) = results
    assert result_new == result_old  # float32 sums in both: equal, not just close
    for p_old, p_new in zip(old.parameters(), new.parameters()):
        assert torch.equal(p_old, p_new)
    assert found_new == []
