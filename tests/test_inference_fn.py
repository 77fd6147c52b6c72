"""``@inference_fn``: every callable kind, both forms, threads, asyncio, checks and typing."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import gradguard
from gradguard import inference_fn

ROOT = Path(__file__).resolve().parent.parent


def make_model() -> nn.Sequential:
    """A model in training mode whose BatchNorm is frozen in eval (its own flag must survive)."""
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    model[1].eval()
    return model


def flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


TRAIN_FLAGS = [True, True, False, True, True]
EVAL_FLAGS = [False] * 5


def state(model: nn.Module) -> tuple[bool, list[bool]]:
    return (torch.is_grad_enabled(), flags(model))


INSIDE = (False, EVAL_FLAGS)
OUTSIDE = (True, TRAIN_FLAGS)


def here() -> int:
    """The caller's line number, to compute the line of a call that must warn."""
    return sys._getframe(1).f_lineno


# ------------------------------------------------------------------------------------------------
# Callable kinds and decorator forms
# ------------------------------------------------------------------------------------------------


def test_bare_form_holds_argument_models_in_eval_with_gradients_off() -> None:
    """@inference_fn on a function puts its module arguments in eval with no_grad for the call."""
    model = make_model()
    seen = []

    @inference_fn
    def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        seen.append(state(model))
        return model(x)

    out = predict(model, torch.randn(3, 4))
    assert seen == [INSIDE]
    assert not out.requires_grad
    assert state(model) == OUTSIDE


def test_called_form_with_inference_mode() -> None:
    """@inference_fn(mode="inference") runs the body under torch.inference_mode."""
    model = make_model()

    @inference_fn(mode="inference")
    def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        assert torch.is_inference_mode_enabled()
        assert flags(model) == EVAL_FLAGS
        return model(x)

    assert predict(model, torch.randn(3, 4)).is_inference()
    assert not torch.is_inference_mode_enabled()
    assert state(model) == OUTSIDE


def test_called_form_without_arguments_defaults_to_no_grad() -> None:
    """@inference_fn() behaves like the bare form."""
    model = make_model()

    @inference_fn()
    def predict(model: nn.Module) -> tuple[bool, list[bool]]:
        return state(model)

    assert predict(model) == INSIDE
    assert state(model) == OUTSIDE


def test_grad_mode_holds_eval_and_keeps_gradients() -> None:
    """mode="grad" holds the models in eval but leaves gradients on (saliency maps)."""
    model = make_model()

    @inference_fn(mode="grad")
    def saliency(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        assert flags(model) == EVAL_FLAGS
        x.requires_grad_(True)
        model(x).sum().backward()
        assert x.grad is not None
        return x.grad

    assert saliency(model, torch.randn(3, 4)).shape == (3, 4)
    assert state(model) == OUTSIDE


def test_grad_mode_keeps_the_watchdog_quiet_about_wanted_graphs() -> None:
    """Under watch(), a graph built on purpose in mode="grad" is not reported, as in evaluating."""
    model = make_model()

    @inference_fn(mode="grad")
    def score(model: nn.Module, x: torch.Tensor) -> float:
        return model(x).sum().item()

    handle = gradguard.watch()
    try:
        score(model, torch.randn(3, 4))
        gc.collect()
    finally:
        handle.close()
    assert gradguard.findings() == []
    assert state(model) == OUTSIDE


def test_models_argument_holds_exactly_the_named_models() -> None:
    """With models=, only those models are held; other module arguments keep their flags."""
    encoder, other = make_model(), make_model()

    @inference_fn(models=[encoder])
    def run(other: nn.Module) -> tuple[list[bool], list[bool]]:
        return flags(encoder), flags(other)

    assert run(other) == (EVAL_FLAGS, TRAIN_FLAGS)
    assert flags(encoder) == TRAIN_FLAGS


def test_empty_models_list_only_sets_the_grad_mode() -> None:
    """models=[] holds no module: only the grad mode changes."""
    model = make_model()

    @inference_fn(models=[])
    def run(model: nn.Module) -> tuple[bool, list[bool]]:
        return state(model)

    assert run(model) == (False, TRAIN_FLAGS)


def test_method_of_module_subclass_holds_self() -> None:
    """A decorated method of an nn.Module subclass holds self (and its children) in eval."""

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = make_model()

        @inference_fn
        def predict(self, x: torch.Tensor) -> torch.Tensor:
            assert not self.training
            assert flags(self.body) == EVAL_FLAGS
            assert not torch.is_grad_enabled()
            return self.body(x).argmax(dim=1)

    classifier = Classifier()
    assert classifier.predict(torch.randn(3, 4)).shape == (3,)
    assert classifier.training
    assert flags(classifier.body) == TRAIN_FLAGS
    assert Classifier.predict(classifier, torch.randn(2, 4)).shape == (2,)
    assert flags(classifier.body) == TRAIN_FLAGS


def test_method_of_plain_class_holds_module_arguments() -> None:
    """On a plain class's method, the module arguments are held, called on the instance or class."""

    class Service:
        @inference_fn
        def run(self, model: nn.Module) -> tuple[bool, list[bool]]:
            return state(model)

    model = make_model()
    service = Service()
    assert service.run(model) == INSIDE
    assert Service.run(service, model) == INSIDE
    assert state(model) == OUTSIDE


def test_staticmethod_and_classmethod_in_both_orders() -> None:
    """staticmethods and classmethods work with @inference_fn above or below @staticmethod."""
    model = make_model()

    class Service:
        @staticmethod
        @inference_fn
        def static_inner(model: nn.Module) -> tuple[bool, list[bool]]:
            return state(model)

        @inference_fn
        @staticmethod
        def static_outer(model: nn.Module) -> tuple[bool, list[bool]]:
            return state(model)

        @classmethod
        @inference_fn
        def class_inner(cls, model: nn.Module) -> tuple[str, bool, list[bool]]:
            return (cls.__name__, *state(model))

        @inference_fn
        @classmethod
        def class_outer(cls, model: nn.Module) -> tuple[str, bool, list[bool]]:
            return (cls.__name__, *state(model))

    service = Service()
    for call in (Service.static_inner, Service.static_outer, service.static_outer):
        assert call(model) == INSIDE
    for call in (Service.class_inner, Service.class_outer, service.class_outer):
        assert call(model) == ("Service", *INSIDE)
    assert state(model) == OUTSIDE


def test_callable_objects_and_partials_keep_their_binding() -> None:
    """A decorated callable object or partial stored on a class is not bound to the instance."""
    model = make_model()

    class Scorer:
        def __call__(self, model: nn.Module) -> tuple[bool, list[bool]]:
            return state(model)

    def scaled(scale: int, model: nn.Module) -> tuple[Any, ...]:
        return (scale, *state(model))

    class Service:
        scorer = inference_fn(Scorer())
        halved = inference_fn(functools.partial(scaled, 2))

    assert Service().scorer(model) == INSIDE
    assert Service().halved(model) == (2, *INSIDE)
    assert inference_fn(Scorer())(model) == INSIDE
    assert state(model) == OUTSIDE


def test_modules_in_keywords_var_args_and_defaults_are_held() -> None:
    """Modules passed by keyword, through *args, or as a parameter's default are all held."""
    by_keyword, in_var_args, default = make_model(), make_model(), make_model()

    @inference_fn
    def run(*models: nn.Module, extra: nn.Module, fallback: nn.Module = default) -> list[bool]:
        return flags(models[0]) + flags(extra) + flags(fallback)

    assert run(in_var_args, extra=by_keyword) == EVAL_FLAGS * 3
    explicit = make_model()
    assert run(in_var_args, extra=by_keyword, fallback=explicit) == EVAL_FLAGS * 3
    for model in (by_keyword, in_var_args, default, explicit):
        assert flags(model) == TRAIN_FLAGS

    @inference_fn
    def positional(x: int, model: nn.Module = default) -> list[bool]:
        return flags(model)

    other = make_model()
    seen_default = positional(1)
    seen_other = positional(1, other)
    assert seen_default == EVAL_FLAGS
    assert seen_other == EVAL_FLAGS
    assert flags(default) == TRAIN_FLAGS


def test_default_module_not_held_when_an_argument_replaces_it() -> None:
    """A parameter's default module is left alone when the call passes its own argument."""
    default = make_model()

    class Service:
        @inference_fn
        def run(self, model: nn.Module = default) -> list[bool]:
            return flags(default)

    assert Service().run(make_model()) == TRAIN_FLAGS
    assert Service().run() == EVAL_FLAGS


def test_exception_restores_flags_and_grad_mode() -> None:
    """An exception in the body propagates and leaves every flag and the grad mode restored."""
    model = make_model()

    @inference_fn
    def failing(model: nn.Module) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        failing(model)
    assert state(model) == OUTSIDE


def test_recursive_calls_each_get_a_fresh_scope() -> None:
    """Recursion nests fresh scopes: the outer call is still in eval after an inner one returns."""
    model = make_model()
    seen = []

    @inference_fn
    def depth(model: nn.Module, n: int) -> int:
        if n:
            depth(model, n - 1)
        seen.append(state(model))
        return n

    assert depth(model, 4) == 4
    assert seen == [INSIDE] * 5
    assert state(model) == OUTSIDE


def test_model_in_eval_stays_in_eval() -> None:
    """A model already in eval stays in eval after the call (no train() on the way out)."""
    model = make_model().eval()

    @inference_fn
    def predict(model: nn.Module) -> list[bool]:
        return flags(model)

    assert predict(model) == EVAL_FLAGS
    assert flags(model) == EVAL_FLAGS


def test_structure_changes_between_calls_are_held() -> None:
    """Modules inserted into an empty ModuleList or deleted from a Sequential are seen next call."""

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList()
            self.body = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Linear(2, 2))

    holder = Holder()

    @inference_fn
    def run(holder: Holder) -> list[bool]:
        return flags(holder)

    assert run(holder) == [False] * 6
    holder.blocks.insert(0, nn.Dropout())  # edits ModuleList._modules directly
    assert run(holder) == [False] * 7
    del holder.body[1]  # deletes from Sequential._modules directly
    assert run(holder) == [False] * 6
    assert flags(holder) == [True] * 6


# ------------------------------------------------------------------------------------------------
# Generators
# ------------------------------------------------------------------------------------------------


def test_generator_holds_the_scope_only_while_its_body_runs() -> None:
    """Each step runs in the scope; between yields the consumer sees its own grad mode and flags."""
    model = make_model()
    inside = []

    @inference_fn
    def batches(model: nn.Module, n: int) -> Iterator[torch.Tensor]:
        for _ in range(n):
            inside.append(state(model))
            reply = yield model(torch.randn(2, 4))
            if reply is not None:
                inside.append(state(model))
        return "done"

    between = []
    for out in batches(model, 3):
        assert not out.requires_grad
        between.append(state(model))
    assert inside == [INSIDE] * 3
    assert between == [OUTSIDE] * 3

    gen = batches(model, 2)
    next(gen)
    gen.send("reply")
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"
    assert state(model) == OUTSIDE


def test_generator_close_and_throw_run_inside_the_scope() -> None:
    """throw() is handled inside the scope; close() runs the body's finally inside the scope."""
    model = make_model()
    seen = []

    @inference_fn
    def stream(model: nn.Module) -> Iterator[int]:
        try:
            while True:
                try:
                    yield 1
                except ValueError:
                    seen.append(("throw", *state(model)))
        finally:
            seen.append(("close", *state(model)))

    gen = stream(model)
    assert next(gen) == 1
    assert gen.throw(ValueError("x")) == 1
    assert state(model) == OUTSIDE
    gen.close()
    assert seen == [("throw", *INSIDE), ("close", *INSIDE)]
    assert state(model) == OUTSIDE

    failing = stream(model)
    next(failing)
    with pytest.raises(KeyError):
        failing.throw(KeyError("not handled"))
    assert state(model) == OUTSIDE


def test_abandoned_generator_never_leaves_the_model_in_eval() -> None:
    """Breaking out early or dropping a started generator leaves nothing held at any point."""
    model = make_model()

    @inference_fn
    def stream(model: nn.Module) -> Iterator[int]:
        yield from range(100)

    for item in stream(model):
        if item == 3:
            break
    assert state(model) == OUTSIDE
    gen = stream(model)
    next(gen)
    assert state(model) == OUTSIDE
    del gen
    gc.collect()
    assert state(model) == OUTSIDE


def test_generator_holds_a_submodule_added_between_steps() -> None:
    """Each step looks the model up again: a head attached between two yields is held too."""
    model = make_model()
    seen = []

    @inference_fn
    def steps(model: nn.Module) -> Iterator[None]:
        seen.append(flags(model))
        yield
        seen.append(flags(model))
        yield

    gen = steps(model)
    next(gen)
    model.add_module("head", nn.Linear(2, 2))
    next(gen)
    gen.close()
    assert seen == [EVAL_FLAGS, [*EVAL_FLAGS, False]]
    assert flags(model) == [*TRAIN_FLAGS, True]


# ------------------------------------------------------------------------------------------------
# async def and async generators
# ------------------------------------------------------------------------------------------------


def test_plain_coroutine_sees_gradients_on_while_a_decorated_one_is_suspended() -> None:
    """While a decorated coroutine waits at an await, others on the loop see grad mode and flags."""
    model = make_model()
    inside = []

    async def main() -> tuple[bool, list[bool]]:
        started, release = asyncio.Event(), asyncio.Event()

        @inference_fn
        async def handler(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
            inside.append(state(model))
            started.set()
            await release.wait()
            inside.append(state(model))
            return model(x)

        async def plain() -> tuple[bool, list[bool]]:
            await started.wait()
            seen = state(model)
            release.set()
            return seen

        out, seen = await asyncio.gather(handler(model, torch.randn(2, 4)), plain())
        assert not out.requires_grad
        return seen

    assert asyncio.run(main()) == OUTSIDE
    assert inside == [INSIDE, INSIDE]
    assert state(model) == OUTSIDE


def test_async_method_and_async_generator_method_of_a_module_hold_self() -> None:
    """async def and async generator methods of an nn.Module subclass hold self per step."""

    class Server(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = make_model()

        @inference_fn
        async def handle(self, x: torch.Tensor) -> tuple[bool, list[bool], bool]:
            await asyncio.sleep(0)
            return (torch.is_grad_enabled(), flags(self.body), self.body(x).requires_grad)

        @inference_fn(mode="inference")
        async def stream(self, n: int) -> AsyncIterator[tuple[bool, bool]]:
            for _ in range(n):
                await asyncio.sleep(0)
                yield (torch.is_inference_mode_enabled(), self.training)

    server = Server()

    async def main() -> tuple[Any, list[Any]]:
        handled = await server.handle(torch.randn(2, 4))
        streamed = [item async for item in server.stream(2)]
        return handled, streamed

    handled, streamed = asyncio.run(main())
    assert handled == (False, EVAL_FLAGS, False)
    assert streamed == [(True, False), (True, False)]
    assert server.training
    assert flags(server.body) == TRAIN_FLAGS


def test_many_interleaved_tasks_never_leak_the_scope() -> None:
    """50 decorated tasks and 50 plain tasks interleave; each side only ever sees its own state."""
    model = make_model()
    decorated_seen: list[tuple[bool, list[bool]]] = []
    plain_seen: list[tuple[bool, list[bool]]] = []

    @inference_fn(mode="inference")
    async def handler(model: nn.Module, i: int) -> float:
        total = 0.0
        for _ in range(3):
            decorated_seen.append((torch.is_inference_mode_enabled(), flags(model)))
            total += float(model(torch.full((1, 4), float(i))).sum())
            await asyncio.sleep(0)
        return total

    async def plain() -> None:
        for _ in range(3):
            plain_seen.append(state(model))
            await asyncio.sleep(0)

    async def main() -> list[float]:
        tasks = [handler(model, i) for i in range(50)]
        results = await asyncio.gather(*tasks, *(plain() for _ in range(50)))
        return results[:50]

    results = asyncio.run(main())
    assert len(results) == 50
    assert decorated_seen == [(True, EVAL_FLAGS)] * 150
    assert plain_seen == [OUTSIDE] * 150
    assert state(model) == OUTSIDE


def test_async_generator_scopes_each_item_and_aclose() -> None:
    """Every asend/athrow/aclose of a decorated async generator runs in the scope, none between."""
    model = make_model()
    inside: list[tuple[Any, ...]] = []

    @inference_fn
    async def stream(model: nn.Module) -> AsyncIterator[torch.Tensor]:
        try:
            while True:
                await asyncio.sleep(0)
                inside.append(("step", *state(model)))
                try:
                    yield model(torch.randn(1, 4))
                except ValueError:
                    inside.append(("athrow", *state(model)))
        finally:
            inside.append(("aclose", *state(model)))

    async def main() -> list[tuple[bool, list[bool]]]:
        between = []
        gen = stream(model)
        async for out in gen:
            assert not out.requires_grad
            between.append(state(model))
            if len(between) == 2:
                break
        await gen.athrow(ValueError("x"))
        between.append(state(model))
        await gen.aclose()
        return between

    assert asyncio.run(main()) == [OUTSIDE] * 3
    assert inside == [
        ("step", *INSIDE),
        ("step", *INSIDE),
        ("athrow", *INSIDE),
        ("step", *INSIDE),
        ("aclose", *INSIDE),
    ]
    assert state(model) == OUTSIDE


# ------------------------------------------------------------------------------------------------
# Threads
# ------------------------------------------------------------------------------------------------


def test_eight_threads_times_two_thousand_calls_on_one_model() -> None:
    """8 threads x 2,000 calls on one shared model: always eval inside, exact flags after."""
    model = make_model()
    threads_count, calls = 8, 2_000
    barrier = threading.Barrier(threads_count)
    wrong: list[str] = []
    done: list[int] = []

    @inference_fn
    def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or any(m.training for m in model.modules()):
            wrong.append("state inside")
        return model(x)

    def worker() -> None:
        barrier.wait()
        x = torch.randn(1, 4)
        for _ in range(calls):
            if predict(model, x).requires_grad:
                wrong.append("graph in result")
        if not torch.is_grad_enabled():
            wrong.append("grad mode after")
        done.append(calls)

    workers = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert wrong == []
    assert sum(done) == threads_count * calls
    assert state(model) == OUTSIDE


# ------------------------------------------------------------------------------------------------
# Checks: GG001 on results, GG001 inside, GG006
# ------------------------------------------------------------------------------------------------

WEIGHT = nn.Parameter(torch.ones(3))


@inference_fn
def leaks_tensor() -> torch.Tensor:
    with torch.enable_grad():
        return WEIGHT * 2


@inference_fn
def leaks_tuple() -> tuple[int, torch.Tensor]:
    with torch.enable_grad():
        return (1, WEIGHT * 2)


@inference_fn
def leaks_list() -> list[torch.Tensor]:
    with torch.enable_grad():
        return [torch.zeros(1), WEIGHT * 2]


@inference_fn
def leaks_dict() -> dict[str, torch.Tensor]:
    with torch.enable_grad():
        return {"score": WEIGHT * 2}


@pytest.mark.parametrize("leaky", [leaks_tensor, leaks_tuple, leaks_list, leaks_dict])
def test_returning_a_graph_tensor_warns_gg001_at_the_call_line(leaky: Any) -> None:
    """A tensor with a grad_fn in the result (directly or one level deep) warns once at the call."""
    line = here() + 2
    with pytest.warns(gradguard.GraphInInferenceWarning) as record:
        leaky()
    assert len(record) == 1
    assert record[0].filename == __file__
    assert record[0].lineno == line
    assert "returned a tensor that is part of an autograd graph" in str(record[0].message)
    assert f"inference_fn({leaky.__qualname__})" in str(record[0].message)
    assert [f.code for f in gradguard.findings()] == ["GG001"]


def test_graph_results_are_not_reported_in_grad_mode_or_deeper_than_one_level() -> None:
    """mode="grad" returns graphs on purpose; containers are only searched one level deep."""

    @inference_fn(mode="grad")
    def wanted() -> torch.Tensor:
        return WEIGHT * 2

    @inference_fn
    def nested() -> list[list[torch.Tensor]]:
        with torch.enable_grad():
            return [[WEIGHT * 2]]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wanted().grad_fn is not None
        assert nested()[0][0].grad_fn is not None
    assert gradguard.findings() == []


def test_graph_recorded_inside_and_returned_is_reported_once() -> None:
    """Gradients re-enabled inside and the graph returned: GG001 once, for the result."""
    model = make_model()

    @inference_fn
    def careless(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return model(x)

    with pytest.warns(gradguard.GraphInInferenceWarning) as record:
        careless(model, torch.randn(2, 4))
    assert len(record) == 1
    assert "returned a tensor that is part of an autograd graph" in str(record[0].message)
    assert len(gradguard.findings()) == 1
    assert state(model) == OUTSIDE


def test_graph_recorded_by_an_evaluating_scope_inside_is_reported() -> None:
    """A graph built and dropped inside the call is seen by an evaluating() scope there."""
    model = make_model()

    @inference_fn
    def careless(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with gradguard.evaluating(model), torch.enable_grad():
            return model(x).detach()

    with pytest.warns(gradguard.GraphInInferenceWarning) as record:
        careless(model, torch.randn(2, 4))
    assert len(record) == 1
    assert "was recorded inside evaluating(" in str(record[0].message)
    assert len(gradguard.findings()) == 1
    assert state(model) == OUTSIDE


def test_generator_yielding_a_graph_tensor_warns() -> None:
    """A generator that yields a tensor with a grad_fn warns GG001 at the consumer's line."""

    @inference_fn
    def stream() -> Iterator[torch.Tensor]:
        with torch.enable_grad():
            graph = WEIGHT * 2
        yield graph

    gen = stream()
    line = here() + 2
    with pytest.warns(gradguard.GraphInInferenceWarning) as record:
        next(gen)
    assert len(record) == 1
    assert (record[0].filename, record[0].lineno) == (__file__, line)
    gen.close()


def test_strict_mode_raises_for_a_graph_result() -> None:
    """When strict, a graph in the result raises GradGuardError and the flags are restored."""
    model = make_model()

    @inference_fn
    def leaky(model: nn.Module) -> torch.Tensor:
        with torch.enable_grad():
            return WEIGHT * 2

    gradguard.configure(strict=True)
    with pytest.raises(gradguard.GradGuardError, match="GG001"):
        leaky(model)
    assert state(model) == OUTSIDE


def test_train_inside_is_put_right_and_reported_gg006() -> None:
    """model.train() inside the body is undone while the call runs and reported at its end."""
    model = make_model()
    seen = []

    @inference_fn
    def switches(model: nn.Module) -> None:
        model.train()
        seen.append(model.training)

    line = here() + 2
    with pytest.warns(gradguard.ScopeStateChangedWarning, match="inference_fn") as record:
        switches(model)
    assert len(record) == 1
    assert (record[0].filename, record[0].lineno) == (__file__, line)
    assert seen == [True]
    assert state(model) == OUTSIDE


def test_model_already_in_eval_switched_to_train_inside_goes_back_to_eval() -> None:
    """A served model (all in eval) switched to train() inside is reported and left in eval."""
    model = make_model().eval()

    @inference_fn
    def switches(model: nn.Module) -> None:
        model.train()

    with pytest.warns(gradguard.ScopeStateChangedWarning, match="5 module"):
        switches(model)
    assert flags(model) == EVAL_FLAGS


def test_overlapping_scope_inside_a_call_on_a_model_in_eval() -> None:
    """evaluating() on a submodule inside a call leaves the whole model in eval until it ends."""
    model = make_model().eval()
    seen = []

    @inference_fn
    def run(model: nn.Module) -> None:
        with gradguard.evaluating(model[1]):
            seen.append(flags(model))
        seen.append(flags(model))

    run(model)
    assert seen == [EVAL_FLAGS, EVAL_FLAGS]
    assert flags(model) == EVAL_FLAGS
    model.train()
    run(model)
    assert flags(model) == [True] * 5


def test_grad_mode_switched_on_inside_is_reported_gg006() -> None:
    """torch.set_grad_enabled(True) left on inside the body is reported and undone at exit."""

    @inference_fn(models=[])
    def switches() -> None:
        torch.set_grad_enabled(True)

    with torch.no_grad():
        with pytest.warns(gradguard.ScopeStateChangedWarning, match="re-enabled"):
            switches()
        assert not torch.is_grad_enabled()


# ------------------------------------------------------------------------------------------------
# Metadata, typing, bad input
# ------------------------------------------------------------------------------------------------


def test_metadata_and_signature_are_kept_for_every_kind() -> None:
    """__name__, __qualname__, __doc__, __module__, __wrapped__ and the signature are kept."""

    def function(model: nn.Module, x: torch.Tensor, *, k: int = 1) -> torch.Tensor:
        """Predict."""
        return x

    def generator(model: nn.Module) -> Iterator[int]:
        """Stream."""
        yield 1

    async def coroutine(model: nn.Module, x: int) -> int:
        """Serve."""
        return x

    async def async_generator(model: nn.Module) -> AsyncIterator[int]:
        """Stream asynchronously."""
        yield 1

    for original in (function, generator, coroutine, async_generator):
        for decorated in (inference_fn(original), inference_fn(mode="inference")(original)):
            assert decorated.__name__ == original.__name__
            assert decorated.__qualname__ == original.__qualname__
            assert decorated.__doc__ == original.__doc__
            assert decorated.__module__ == original.__module__
            assert decorated.__wrapped__ is original
            assert inspect.signature(decorated) == inspect.signature(original)
    assert inspect.isgeneratorfunction(inference_fn(generator))
    assert inspect.iscoroutinefunction(inference_fn(coroutine))
    assert inspect.isasyncgenfunction(inference_fn(async_generator))


def test_bound_method_signature_drops_self() -> None:
    """A decorated method's bound signature is the method's, without self."""

    class Service:
        @inference_fn
        def run(self, model: nn.Module, x: int = 0) -> int:
            """Run."""
            return x

    assert str(inspect.signature(Service().run)) == "(model: 'nn.Module', x: 'int' = 0) -> 'int'"
    assert Service.run.__qualname__.endswith("Service.run")
    assert Service().run.__doc__ == "Run."


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda m: inference_fn(mode="fast"), ValueError, r"mode='fast'.*'no_grad'.*'inference'"),
        (lambda m: inference_fn(mode=None), ValueError, r"mode=None; valid modes"),
        (lambda m: inference_fn(models=[m, "encoder"]), TypeError, r"argument 1 is builtins.str"),
        (lambda m: inference_fn(models=m), TypeError, r"list or tuple .* got Sequential"),
        (lambda m: inference_fn(models=iter([m])), TypeError, r"list or tuple"),
        (lambda m: inference_fn(m), TypeError, r"got the module Sequential.*models=\[model\]"),
        (lambda m: inference_fn(nn.Module), TypeError, r"cannot decorate a class.*its methods"),
        (lambda m: inference_fn(42), TypeError, r"not int \(42\)"),
        (lambda m: inference_fn()(42), TypeError, r"not int \(42\)"),
    ],
)
def test_bad_input_raises_at_decoration_time(make: Any, error: type, match: str) -> None:
    """Unknown modes, non-modules, classes and non-callables are refused when decorating."""
    model = make_model()
    with pytest.raises(error, match=match):
        make(model)
    assert state(model) == OUTSIDE


def test_decorating_a_class_names_the_fix() -> None:
    """Decorating a class raises TypeError telling the user to decorate its methods."""
    with pytest.raises(TypeError, match=r"decorate its methods instead"):

        @inference_fn
        class Model(nn.Module):
            pass


def test_inference_fn_is_exported() -> None:
    """inference_fn is part of the public API."""
    assert "inference_fn" in gradguard.__all__
    assert gradguard.inference_fn is inference_fn


MYPY_SNIPPET = """\
import torch
from torch import nn

from gradguard import inference_fn


@inference_fn
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x + 1


@inference_fn(mode="inference", models=[])
async def score(model: nn.Module, scale: float) -> float:
    return scale


class Classifier(nn.Module):
    @inference_fn
    def classify(self, x: torch.Tensor) -> int:
        return 0


model = nn.Linear(2, 2)
good: torch.Tensor = predict(model, torch.zeros(1, 2))
good_coroutine = score(model, 2.0)
good_method: int = Classifier().classify(torch.zeros(1, 2))
bad = predict(model, "not a tensor")
bad_keyword = score(model, scale="x")
bad_method = Classifier().classify(3)
"""


def test_mypy_strict_sees_the_wrapped_signature(tmp_path: Path) -> None:
    """mypy --strict flags wrong argument types at decorated functions, coroutines and methods."""
    snippet = tmp_path / "typed_use.py"
    snippet.write_text(MYPY_SNIPPET)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "tests"),
            str(snippet),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    lines = MYPY_SNIPPET.splitlines()
    bad = lines.index('bad = predict(model, "not a tensor")') + 1
    bad_keyword = lines.index('bad_keyword = score(model, scale="x")') + 1
    bad_method = lines.index("bad_method = Classifier().classify(3)") + 1
    assert len(errors) == 3, result.stdout + result.stderr
    assert f'typed_use.py:{bad}: error: Argument 2 to "predict" has incompatible type' in errors[0]
    assert f"typed_use.py:{bad_keyword}: error:" in errors[1]
    assert '"scale" to "score" has incompatible type "str"' in errors[1]
    assert f'typed_use.py:{bad_method}: error: Argument 1 to "classify"' in errors[2]
    assert all("[arg-type]" in error for error in errors)
