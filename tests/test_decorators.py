"""The decorator machinery shared by every scope: generators, coroutines and async generators.

``evaluating``, ``frozen`` and ``allow`` all decorate through ``_decorators.scoped``; these tests
check that a scope holds only while the decorated body runs and never while it is suspended.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _findings


def make_model() -> nn.Sequential:
    """A model in training mode whose BatchNorm is frozen in eval (its own flag must survive)."""
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    model[1].eval()
    return model


def flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


TRAIN_FLAGS = [True, True, False, True, True]


def test_evaluating_on_async_def_holds_only_while_the_body_runs() -> None:
    """A plain coroutine sees gradients on and the model's own flags while a decorated one waits."""
    model = make_model()
    inside: list[tuple[bool, list[bool]]] = []

    async def main() -> list[bool]:
        started, release = asyncio.Event(), asyncio.Event()

        @gradguard.evaluating(model)
        async def handler() -> torch.Tensor:
            inside.append((torch.is_grad_enabled(), flags(model)))
            started.set()
            await release.wait()
            inside.append((torch.is_grad_enabled(), flags(model)))
            return model(torch.randn(3, 4))

        async def observer() -> list[bool]:
            await started.wait()
            seen = [torch.is_grad_enabled(), *flags(model)]
            release.set()
            return seen

        result, seen = await asyncio.gather(handler(), observer())
        assert not result.requires_grad
        return seen

    seen = asyncio.run(main())
    assert seen == [True, *TRAIN_FLAGS]
    assert inside == [(False, [False] * 5), (False, [False] * 5)]
    assert flags(model) == TRAIN_FLAGS


def test_evaluating_async_def_restores_after_exception() -> None:
    """An exception raised after an await leaves the caller's grad mode and the flags restored."""
    model = make_model()

    @gradguard.evaluating(model)
    async def failing() -> None:
        await asyncio.sleep(0)
        assert not model.training
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        asyncio.run(failing())
    assert flags(model) == TRAIN_FLAGS


def test_cancelled_decorated_coroutine_restores_state() -> None:
    """Cancelling a task suspended inside a decorated coroutine runs its cleanup in the scope."""
    model = make_model()
    cleanup: list[tuple[bool, bool]] = []

    @gradguard.evaluating(model)
    async def slow() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleanup.append((torch.is_grad_enabled(), model.training))

    async def main() -> None:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0)
        assert model.training
        assert torch.is_grad_enabled()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert cleanup == [(False, False)]
    assert flags(model) == TRAIN_FLAGS


def test_frozen_on_async_def_unfreezes_while_suspended() -> None:
    """frozen() on an async def freezes parameters only while its body runs."""
    model = make_model()
    seen: list[tuple[str, bool]] = []

    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        @gradguard.frozen(model)
        async def body() -> None:
            seen.append(("inside", model[0].weight.requires_grad))
            started.set()
            await release.wait()
            seen.append(("inside", model[0].weight.requires_grad))

        async def observer() -> None:
            await started.wait()
            seen.append(("suspended", model[0].weight.requires_grad))
            release.set()

        await asyncio.gather(body(), observer())

    asyncio.run(main())
    assert seen == [("inside", False), ("suspended", True), ("inside", False)]
    assert all(p.requires_grad for p in model.parameters())


def test_allow_on_async_def_silences_only_while_running() -> None:
    """allow() on an async def silences its checks only while its own body runs."""
    seen: list[tuple[str, bool]] = []

    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        @gradguard.allow("graph-in-inference")
        async def body() -> None:
            seen.append(("inside", _findings.is_allowed("graph-in-inference")))
            started.set()
            await release.wait()
            seen.append(("inside", _findings.is_allowed("graph-in-inference")))

        async def observer() -> None:
            await started.wait()
            seen.append(("suspended", _findings.is_allowed("graph-in-inference")))
            release.set()

        await asyncio.gather(body(), observer())

    asyncio.run(main())
    assert seen == [("inside", True), ("suspended", False), ("inside", True)]


def test_evaluating_on_async_generator_scopes_each_step() -> None:
    """Each asend runs in the scope; between items the consumer sees its own grad mode and flags."""
    model = make_model()
    inside: list[tuple[bool, bool]] = []
    between: list[tuple[bool, list[bool]]] = []

    @gradguard.evaluating(model)
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            inside.append((torch.is_grad_enabled(), model.training))
            reply = yield i
            if reply is not None:
                inside.append((torch.is_grad_enabled(), model.training))

    async def main() -> list[int]:
        items = []
        async for item in stream(3):
            between.append((torch.is_grad_enabled(), flags(model)))
            items.append(item)
        gen = stream(3)
        assert await gen.__anext__() == 0
        assert await gen.asend("reply") == 1
        await gen.aclose()
        return items

    assert asyncio.run(main()) == [0, 1, 2]
    assert inside == [(False, False)] * 6
    assert between == [(True, TRAIN_FLAGS)] * 3
    assert flags(model) == TRAIN_FLAGS


def test_async_generator_athrow_and_aclose_run_inside_the_scope() -> None:
    """athrow() reaches the body inside the scope; aclose() runs its finally inside the scope."""
    model = make_model()
    handled: list[tuple[str, bool, bool]] = []

    @gradguard.evaluating(model)
    async def stream() -> AsyncIterator[int]:
        try:
            while True:
                try:
                    yield 1
                except ValueError:
                    handled.append(("athrow", torch.is_grad_enabled(), model.training))
        finally:
            handled.append(("finally", torch.is_grad_enabled(), model.training))

    async def main() -> None:
        gen = stream()
        assert await gen.__anext__() == 1
        assert await gen.athrow(ValueError("x")) == 1
        assert model.training
        await gen.aclose()

    asyncio.run(main())
    assert handled == [("athrow", False, False), ("finally", False, False)]
    assert flags(model) == TRAIN_FLAGS


def test_async_generator_early_exit_leaves_model_restored() -> None:
    """Breaking out of an async for over a decorated async generator leaves nothing held."""
    model = make_model()

    @gradguard.evaluating(model)
    async def stream() -> AsyncIterator[int]:
        for i in range(100):
            yield i

    async def main() -> None:
        gen = stream()
        async for item in gen:
            if item == 2:
                break
        assert flags(model) == TRAIN_FLAGS
        await gen.aclose()

    asyncio.run(main())
    assert flags(model) == TRAIN_FLAGS


def test_nested_decorated_coroutines_unwind_in_order() -> None:
    """A decorated coroutine awaiting another releases both scopes whenever the inner one waits."""
    outer_model, inner_model = make_model(), make_model()
    seen: list[tuple[bool, bool, bool]] = []

    @gradguard.evaluating(inner_model, mode="grad")
    async def inner() -> None:
        seen.append((torch.is_grad_enabled(), outer_model.training, inner_model.training))
        await asyncio.sleep(0)
        seen.append((torch.is_grad_enabled(), outer_model.training, inner_model.training))

    @gradguard.evaluating(outer_model)
    async def outer() -> None:
        await inner()

    async def observer() -> None:
        # Runs while outer() is suspended inside inner()'s await.
        seen.append((torch.is_grad_enabled(), outer_model.training, inner_model.training))

    async def main() -> None:
        await asyncio.gather(outer(), observer())

    asyncio.run(main())
    assert seen == [(False, False, False), (True, True, True), (False, False, False)]


def test_decorated_async_callables_keep_their_kind_and_metadata() -> None:
    """inspect still sees a coroutine function and an async generator function, with their names."""
    model = make_model()

    async def handler(x: int) -> int:
        """Serve one request."""
        return x

    async def stream(n: int) -> AsyncIterator[int]:
        yield n

    decorated = gradguard.evaluating(model)(handler)
    decorated_stream = gradguard.frozen(model)(stream)
    assert inspect.iscoroutinefunction(decorated)
    assert inspect.isasyncgenfunction(decorated_stream)
    assert decorated.__name__ == "handler"
    assert decorated.__doc__ == "Serve one request."
    assert decorated.__wrapped__ is handler
    assert str(inspect.signature(decorated)) == "(x: 'int') -> 'int'"
    coroutine = decorated(3)
    assert coroutine.__qualname__ == handler.__qualname__
    assert asyncio.run(coroutine) == 3


def test_evaluating_generator_throw_and_close_restore() -> None:
    """A decorated generator handles throw() inside the scope and close() leaves nothing held."""
    model = make_model()
    seen: list[tuple[str, bool]] = []

    @gradguard.evaluating(model)
    def numbers() -> Iterator[int]:
        try:
            while True:
                try:
                    yield 1
                except ValueError:
                    seen.append(("throw", model.training))
        finally:
            seen.append(("close", model.training))

    gen = numbers()
    assert next(gen) == 1
    assert model.training
    assert gen.throw(ValueError("x")) == 1
    gen.close()
    assert seen == [("throw", False), ("close", False)]
    assert flags(model) == TRAIN_FLAGS
