"""Scopes under hostile conditions: failing switches, other threads, edited trees, torch.func."""

from __future__ import annotations

import gc
import threading
import warnings
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils._named_member_accessor import NamedMemberAccessor

import gradguard
from gradguard import _findings, _state, evaluating, frozen, inference_fn
from gradguard.testing import assert_no_holds
from tests.helpers import Net, fine_tuning_net, flags, requires


class RefusesTrain(nn.Module):
    """A module whose train() override raises when asked for ``mode`` (a buggy user override)."""

    def __init__(self, refuse: bool) -> None:
        super().__init__()
        self.refuse = refuse
        self.lin = nn.Linear(2, 2)

    def train(self, mode: bool = True) -> RefusesTrain:
        if mode is self.refuse:
            raise RuntimeError(f"RefusesTrain refuses train({mode})")
        return super().train(mode)


class StubbornParameter(nn.Parameter):
    """A parameter subclass whose requires_grad cannot be switched off (as some wrappers do)."""

    @property  # type: ignore[override]
    def requires_grad(self) -> bool:
        return True

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if not value:
            raise RuntimeError("this parameter must keep requires_grad=True")


# ---------------------------------------------------------------- 1: frozen() is atomic


def test_frozen_on_a_lazy_module_freezes_and_restores_every_parameter() -> None:
    """An uninitialised LazyLinear is frozen like any parameter, materialised, and restored."""
    model = nn.Sequential(nn.Linear(2, 3), nn.LazyLinear(4))
    with frozen(model):
        assert not any(requires(model))
        out = model(torch.randn(5, 2))
        assert not out.requires_grad
    assert requires(model) == [True] * 4
    assert _state.held_counts() == (0, 0)
    with frozen(model[0]):  # a later, correct scope on the same parameters
        pass
    assert requires(model) == [True] * 4


def test_frozen_on_a_model_built_under_inference_mode_restores_requires_grad() -> None:
    """Parameters made under inference_mode get requires_grad=True back (torch allows it there)."""
    with torch.inference_mode():
        model = nn.Linear(2, 2)
    assert model.weight.is_inference()
    with frozen(model):
        assert requires(model) == [False, False]
    assert requires(model) == [True, True]
    assert_no_holds()


def test_frozen_take_is_all_or_nothing_when_a_parameter_refuses() -> None:
    """When one parameter cannot be frozen, those already frozen get their flags back."""
    first = nn.Linear(2, 2)
    stubborn = nn.Linear(2, 2)
    stubborn.weight = StubbornParameter(torch.randn(2, 2))
    with pytest.raises(RuntimeError, match="must keep requires_grad"), frozen(first, stubborn):
        pytest.fail("the body must not run")
    assert requires(first) == [True, True]
    assert stubborn.bias.requires_grad
    assert_no_holds()
    with frozen(first):  # the counts did not leak
        assert requires(first) == [False, False]
    assert requires(first) == [True, True]


# ---------------------------------------------------------------- 2: restore all, then raise


def test_override_raising_on_restore_does_not_strand_the_other_modules() -> None:
    """Every module that can be restored is; then the override's error propagates."""
    model = nn.Sequential(RefusesTrain(refuse=True), nn.BatchNorm1d(2), nn.Dropout())
    before = [model.training, model[1].training, model[2].training]
    with pytest.raises(RuntimeError, match="refuses train"), evaluating(model):
        assert not any(flags(model))
    assert [model.training, model[1].training, model[2].training] == before == [True] * 3
    assert_no_holds()


def test_override_raising_on_enter_leaves_every_flag_as_it_was() -> None:
    """A train(False) that raises: the scope is not entered and nothing stays switched."""
    model = nn.Sequential(nn.Dropout(), RefusesTrain(refuse=False), nn.BatchNorm1d(2))
    model.train()
    with pytest.raises(RuntimeError, match="refuses train"), evaluating(model):
        pytest.fail("the body must not run")
    assert flags(model) == [True] * len(flags(model))
    assert torch.is_grad_enabled()
    assert_no_holds()


# ---------------------------------------------------------------- 8: no user code under the lock


class TrainStartsAThread(nn.Module):
    """A train() override that runs a scope on another model in a thread and joins it."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.teacher = [teacher]  # not a submodule: an unrelated model
        self.ran = 0

    def train(self, mode: bool = True) -> TrainStartsAThread:
        def helper() -> None:
            with evaluating(self.other_model):
                self.ran += 1

        worker = threading.Thread(target=helper)
        worker.start()
        worker.join()
        return super().train(mode)

    @property
    def other_model(self) -> nn.Module:
        return self.teacher[0]


def test_train_override_that_joins_a_thread_using_a_scope_does_not_deadlock() -> None:
    """evaluating() calls the override outside the engine's lock, so its thread can finish."""
    teacher = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model = TrainStartsAThread(teacher)
    done = threading.Event()

    def run() -> None:
        with evaluating(model):
            pass
        done.set()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    assert done.wait(20), "evaluating() deadlocked on the train() override's thread"
    runner.join(5)
    assert model.ran == 2  # once on enter, once on restore
    assert model.training and teacher.training
    assert_no_holds()


# ---------------------------------------------------------------- 3: exit from another thread


def test_evaluating_exited_on_another_thread_restores_the_model() -> None:
    """Entered in a pool thread and exited in another (a sync yield dependency): all restored."""
    net = fine_tuning_net()
    before = flags(net)

    def dependency() -> Iterator[nn.Module]:
        with evaluating(net):
            yield net

    gen = dependency()
    with ThreadPoolExecutor(max_workers=1) as enter_pool:
        enter_pool.submit(next, gen).result()
    assert not any(flags(net))
    with ThreadPoolExecutor(max_workers=1) as exit_pool:
        exit_pool.submit(gen.close).result()
    assert flags(net) == before
    assert torch.is_grad_enabled()  # this thread's grad mode was never touched
    assert_no_holds()


def test_scope_object_exited_on_another_thread_takes_the_latest_entry() -> None:
    """One scope object: entered on this thread, exited on a worker thread, no KeyError."""
    net = Net()
    scope = frozen(net, eval=True)
    scope.__enter__()
    errors: list[BaseException] = []

    def close() -> None:
        try:
            scope.__exit__(None, None, None)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    worker = threading.Thread(target=close)
    worker.start()
    worker.join()
    assert errors == []
    assert requires(net) == [True] * len(requires(net))
    assert flags(net) == [True] * len(flags(net))
    assert_no_holds()


def test_allow_exited_on_another_thread_unsilences_the_entering_thread() -> None:
    """allow() exited elsewhere ends the silence of the thread that entered it."""
    scope = gradguard.allow("GG002")
    scope.__enter__()
    assert _findings.is_allowed("train-mode-without-grad")
    worker = threading.Thread(target=scope.__exit__, args=(None, None, None))
    worker.start()
    worker.join()
    assert not _findings.is_allowed("train-mode-without-grad")


# ---------------------------------------------------------------- 4: torch.func inside scopes


def _loss(model: nn.Module) -> Any:
    def loss(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, params, (x,)).pow(2).sum()

    return loss


# torch's own first use of hessian (forward-mode AD) scripts a helper and warns about that.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("transform", ["grad", "vjp", "jacrev", "hessian"])
def test_torch_func_transforms_work_inside_evaluating(transform: str) -> None:
    """torch.func transforms run inside evaluating() as under torch.no_grad(), with no warning."""
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1)).train()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(4, 3)
    loss = _loss(model)
    with torch.no_grad():
        expected = _run_transform(transform, loss, params, x)
    with evaluating(model):
        got = _run_transform(transform, loss, params, x)
    assert torch.allclose(got, expected)
    assert gradguard.findings() == []
    assert model.training


def _run_transform(name: str, loss: Any, params: dict[str, torch.Tensor], x: Any) -> Any:
    weight = "0.weight"
    if name == "grad":
        return torch.func.grad(loss)(params, x)[weight]
    if name == "vjp":
        _out, back = torch.func.vjp(lambda p: loss(p, x), params)
        return back(torch.tensor(1.0))[0][weight]
    if name == "jacrev":
        return torch.func.jacrev(loss)(params, x)[weight]
    return torch.func.hessian(lambda w: loss({**params, weight: w}, x))(params[weight])


def test_torch_func_grad_works_inside_inference_fn() -> None:
    """A saliency map with torch.func.grad inside @inference_fn: same result, no warning."""
    model = nn.Sequential(nn.Linear(3, 1))

    def saliency(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.func.grad(lambda inp: model(inp).sum())(x)

    x = torch.randn(2, 3)
    expected = saliency(model, x)
    assert torch.allclose(inference_fn(saliency)(model, x), expected)
    assert gradguard.findings() == []


def test_graph_recorded_by_a_held_model_inside_evaluating_still_warns() -> None:
    """GG001 still sees a held model's forward run with gradients turned back on."""
    net = Net()
    warns = pytest.warns(gradguard.GraphInInferenceWarning, match="Net ran forward")
    with warns, evaluating(net), torch.enable_grad():
        net(torch.randn(2, 8))
    assert [f.code for f in gradguard.findings()] == ["GG001"]
    assert not net._forward_hooks


# ---------------------------------------------------------------- 7: stale module trees


def test_submodule_swapped_in_the_modules_dict_is_held() -> None:
    """A child replaced by a direct _modules write after a scope is in eval inside the next."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Identity())
    with evaluating(model):
        pass
    model._modules["1"] = nn.Dropout()
    with evaluating(model):
        assert model[1].training is False
    assert model[1].training is True


def test_named_member_accessor_swap_is_held() -> None:
    """NamedMemberAccessor.swap_submodule (used by torch.func) is seen by the next scope."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Identity())
    with evaluating(model):
        pass
    NamedMemberAccessor(model).swap_submodule("1", nn.Dropout())
    with evaluating(model):
        assert not any(flags(model))
    assert all(flags(model))


def test_dynamic_quantization_in_place_is_held() -> None:
    """torch.ao.quantization swaps Linear layers in place: the new layers are held in eval."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with evaluating(model):
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, inplace=True)
    assert any("quantiz" in str(w.message) for w in caught)  # torch's own deprecation notices
    model.train()
    assert type(model[0]).__module__.startswith("torch.ao.nn.quantized")
    with evaluating(model):
        assert not any(flags(model))
    assert all(flags(model))


def test_tree_cache_survives_a_full_collection() -> None:
    """A full garbage collection does not drop the cached tree of a live model."""
    net = Net()
    with evaluating(net):
        pass
    tree = _state.tree_of((net,))
    gc.collect()
    assert _state.tree_of((net,)) is tree
    with evaluating(net):
        assert not any(flags(net))
    assert all(flags(net))


def test_self_referencing_model_is_freed_with_its_tree_cached() -> None:
    """A model that refers to itself is collected although its tree stays cached."""
    net = Net()
    net.__dict__["trainer"] = {"model": net}
    with evaluating(net):
        pass
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


def test_instance_train_override_is_called_like_model_eval_calls_it() -> None:
    """`model.train = ...` on an instance, after a first scope, is called by the next scope."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    with evaluating(model):
        pass
    calls: list[bool] = []
    original = model.train

    def train(mode: bool = True) -> nn.Module:
        calls.append(mode)
        return original(mode)

    model.train = train  # type: ignore[method-assign]
    with evaluating(model):
        assert calls == [False]
        assert not any(flags(model))
    assert calls == [False, True]
    assert all(flags(model))


# ---------------------------------------------------------------- 12: optimizers=


def test_optimizers_accepts_a_single_optimizer() -> None:
    """optimizers=opt is one optimizer, not an iterable to unpack."""
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with evaluating(net, optimizers=opt):
        assert not any(flags(net))
    assert all(flags(net))


@pytest.mark.parametrize(
    ("value", "named"), [(None, "NoneType"), ("sgd", "str"), (3, "int"), ([None], "item 0")]
)
def test_optimizers_rejects_other_values_with_a_clear_error(value: object, named: str) -> None:
    """Anything but optimizers gets a TypeError naming it and what is valid."""
    net = Net()
    with pytest.raises(TypeError, match="takes an optimizer or a list or tuple") as raised:
        evaluating(net, optimizers=value)  # type: ignore[arg-type]
    assert named in str(raised.value)
    assert all(flags(net))


# ---------------------------------------------------------------- 5, 6: state across suspensions

_top_hooks = torch._C._autograd._top_saved_tensors_default_hooks


def _hook_names() -> str | None:
    top = _top_hooks(False)
    return None if top is None else top[0].__qualname__


def test_suspended_generator_leaves_the_callers_hook_stack_alone() -> None:
    """A generator yielding in save_on_cpu: the caller's stack is its own, the body's is kept."""
    model = nn.Linear(3, 3)
    seen: list[str | None] = []

    @inference_fn
    def stream(model: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
        with torch.autograd.graph.save_on_cpu():
            yield model(x)
            seen.append(_hook_names())
            yield model(x)
        seen.append(_hook_names())

    trainable = nn.Linear(3, 1)
    gradguard.configure(strict=True)
    steps = stream(model, torch.randn(2, 3))
    next(steps)
    assert _top_hooks(False) is None  # the caller's stack, as the caller had it
    trainable(torch.randn(2, 3)).sum().backward()  # the caller's own training step: no GG001
    next(steps)
    assert seen == ["save_on_cpu.__init__.<locals>.pack_to_cpu"]
    with pytest.raises(StopIteration):
        next(steps)
    assert seen[1] is None
    assert _top_hooks(False) is None


def test_closed_generator_pops_its_own_hooks_not_the_callers() -> None:
    """Closing a suspended generator exits its save_on_cpu on its own hooks."""

    @inference_fn(models=[])
    def stream() -> Iterator[int]:
        with torch.autograd.graph.save_on_cpu():
            yield 1

    steps = stream()
    next(steps)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        caller_top = _top_hooks(False)
        steps.close()
        assert _top_hooks(False) == caller_top
    assert _top_hooks(False) is None


def test_grad_mode_generator_keeps_its_own_no_grad_across_yields() -> None:
    """mode="grad": the body's own with torch.no_grad() survives its yields, and no GG006."""
    model = nn.Linear(3, 3)

    @inference_fn(mode="grad")
    def stream(model: nn.Module) -> Iterator[bool]:
        with torch.no_grad():
            yield torch.is_grad_enabled()
            yield torch.is_grad_enabled()
        yield torch.is_grad_enabled()

    assert list(stream(model)) == [False, False, True]
    assert torch.is_grad_enabled()
    assert gradguard.findings() == []


def test_grad_mode_generator_between_yields_gives_the_caller_its_grad_mode() -> None:
    """While the body is suspended inside its no_grad, the caller has gradients on."""

    @inference_fn(mode="grad", models=[])
    def stream() -> Iterator[None]:
        with torch.no_grad():
            yield

    steps = stream()
    next(steps)
    assert torch.is_grad_enabled()
    steps.close()
    assert torch.is_grad_enabled()
    assert gradguard.findings() == []


def test_grad_mode_coroutine_keeps_its_own_no_grad_across_awaits() -> None:
    """An async body awaiting inside its own no_grad keeps it; other tasks keep theirs."""
    import asyncio

    model = nn.Linear(3, 3)

    @inference_fn(mode="grad")
    async def body(model: nn.Module) -> tuple[bool, bool]:
        with torch.no_grad():
            await asyncio.sleep(0)
            inside = torch.is_grad_enabled()
        return inside, torch.is_grad_enabled()

    async def other() -> bool:
        await asyncio.sleep(0)
        return torch.is_grad_enabled()

    async def main() -> tuple[Any, bool]:
        return await asyncio.gather(body(model), other())  # type: ignore[return-value]

    (inside, after), other_grad = asyncio.run(main())
    assert (inside, after, other_grad) == (False, True, True)
    assert gradguard.findings() == []


def test_leaked_grad_mode_in_a_generator_is_still_reported_at_its_end() -> None:
    """A body that switches gradients on and never back is still reported (GG006) at its end."""

    @inference_fn(models=[])
    def stream() -> Iterator[int]:
        torch.set_grad_enabled(True)
        yield 1

    with pytest.warns(gradguard.ScopeStateChangedWarning, match="gradients were re-enabled"):
        assert list(stream()) == [1]
    assert torch.is_grad_enabled()


# ---------------------------------------------------------------- 10: torch.compile(fullgraph=True)


@pytest.mark.parametrize("mode", ["no_grad", "inference", "grad"])
def test_evaluating_compiles_with_fullgraph(mode: str) -> None:
    """evaluating() inside a fullgraph-compiled function: eval mode, the grad mode, restored."""
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.9), nn.BatchNorm1d(3))
    model[2].eval()
    before = flags(model)

    def run(x: torch.Tensor) -> torch.Tensor:
        with evaluating(model, mode=mode):  # type: ignore[arg-type]
            return model(x)

    x = torch.ones(4, 3)
    out = torch.compile(run, fullgraph=True, backend="eager")(x)
    with evaluating(model, mode="grad"):
        expected = model(x)
    assert torch.allclose(out, expected)  # dropout was off
    assert out.requires_grad is (mode == "grad")
    assert flags(model) == before
    assert torch.is_grad_enabled()


def test_inference_fn_compiles_with_fullgraph() -> None:
    """An @inference_fn called from a fullgraph-compiled function traces and restores."""
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.9))

    @inference_fn
    def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    x = torch.ones(4, 3)
    out = torch.compile(lambda x: predict(model, x), fullgraph=True, backend="eager")(x)
    assert torch.allclose(out, predict(model, x))
    assert not out.requires_grad
    assert all(flags(model))


def test_frozen_inside_compiled_code_fails_with_a_clear_error() -> None:
    """frozen() cannot be traced: the error says so and names the fix."""
    torch._dynamo.reset()
    model = nn.Linear(3, 3)

    def run(x: torch.Tensor) -> torch.Tensor:
        with frozen(model):
            return model(x)

    with pytest.raises(Exception, match="around the compiled call"):
        torch.compile(run, fullgraph=True, backend="eager")(torch.ones(2, 3))
    assert requires(model) == [True, True]


# ---------------------------------------------------------------- 11: scopes across awaits


def test_evaluating_across_awaits_in_two_tasks_leaves_gradients_on_and_warns() -> None:
    """Two tasks interleaving `with evaluating()` across awaits: grad mode ends right, GG006."""
    import asyncio

    model = Net()
    inside: list[bool] = []

    async def serve(first: asyncio.Event, second: asyncio.Event) -> None:
        with evaluating(model):
            first.set()
            await second.wait()
            inside.append(torch.is_grad_enabled())

    async def main() -> bool:
        a_in, b_in = asyncio.Event(), asyncio.Event()
        task_a = asyncio.create_task(serve(a_in, b_in), name="request-a")
        await a_in.wait()
        task_b = asyncio.create_task(serve(b_in, asyncio.Event()), name="request-b")
        await task_a
        task_b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task_b
        return torch.is_grad_enabled()

    with pytest.warns(gradguard.ScopeStateChangedWarning, match="task 'request-a'") as record:
        grad_after = asyncio.run(main())
    assert grad_after is True
    assert inside == [False]
    assert "@gradguard.inference_fn" in str(record[0].message)
    assert all(flags(model))


# ---------------------------------------------------------------- 9: no silent no-ops


def _exported(train: bool) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.9), nn.BatchNorm1d(3))
    model.train(train)
    return torch.export.export(model, (torch.ones(4, 3),)).module()


def test_exported_program_in_training_mode_is_refused_before_anything_changes() -> None:
    """ep.module() of a training-mode export cannot be put in eval: a clear TypeError."""
    module = _exported(train=True)
    before = flags(module)
    refused = pytest.raises(TypeError, match=r"exported in training mode.*model\.eval\(\)")
    with refused, evaluating(module):
        pytest.fail("the body must not run")
    assert flags(module) == before
    assert torch.is_grad_enabled()


def test_exported_program_in_eval_mode_works_inside_evaluating() -> None:
    """An export made in eval mode runs inside evaluating() with gradients off."""
    module = _exported(train=False)
    with evaluating(module):
        out = module(torch.ones(4, 3))
    assert not out.requires_grad
    assert all(flags(module))


def test_inference_fn_over_a_wraps_wrapper_of_an_async_def_holds_the_scope() -> None:
    """A sync functools.wraps wrapper returning a coroutine: the scope holds while it runs."""
    import asyncio
    import functools

    model = Net()

    async def predict(model: nn.Module) -> tuple[bool, bool]:
        await asyncio.sleep(0)
        return model.training, torch.is_grad_enabled()

    @functools.wraps(predict)
    def wrapper(model: nn.Module) -> Any:
        return predict(model)

    guarded = inference_fn(wrapper)
    assert asyncio.run(guarded(model)) == (False, False)
    assert all(flags(model))

    scoped = evaluating(model)(wrapper)
    assert asyncio.run(scoped(model)) == (False, False)
    assert all(flags(model))


def test_work_handed_to_a_thread_needs_its_own_scope() -> None:
    """asyncio.to_thread runs outside the coroutine's scope; a decorated function has its own."""
    import asyncio

    model = Net()

    def observe(model: nn.Module) -> tuple[bool, bool]:
        return model.training, torch.is_grad_enabled()

    @inference_fn
    async def wrong(model: nn.Module) -> tuple[bool, bool]:
        return await asyncio.to_thread(observe, model)

    @inference_fn
    def predict(model: nn.Module) -> tuple[bool, bool]:
        return observe(model)

    async def right(model: nn.Module) -> tuple[bool, bool]:
        return await asyncio.to_thread(predict, model)

    # The coroutine's scope holds only while it runs (the flags may or may not still be held
    # when the thread runs), and the grad mode is the thread's own: gradients are on there.
    assert asyncio.run(wrong(model))[1] is True
    assert asyncio.run(right(model)) == (False, False)
    assert all(flags(model))


@pytest.mark.parametrize("mode", ["no_grad", "inference"])
def test_interleaved_scopes_hand_over_what_they_restore(mode: str) -> None:
    """Two scopes closed out of order in one thread: grad and inference mode end as before."""
    first, second = Net(), Net()
    outer = evaluating(first, mode=mode)  # type: ignore[arg-type]
    inner = evaluating(second, mode=mode)  # type: ignore[arg-type]
    outer.__enter__()
    inner.__enter__()
    with pytest.warns(gradguard.ScopeStateChangedWarning, match="still open in this thread"):
        outer.__exit__(None, None, None)
    assert not torch.is_grad_enabled()  # the later scope is still open
    assert torch.is_inference_mode_enabled() is (mode == "inference")
    inner.__exit__(None, None, None)
    assert torch.is_grad_enabled()
    assert not torch.is_inference_mode_enabled()
    assert all(flags(first)) and all(flags(second))


def test_inference_scope_exited_on_another_thread_leaves_that_threads_mode_alone() -> None:
    """An inference-mode scope entered in a worker and exited here: this thread is untouched."""
    net = Net()
    scope = evaluating(net, mode="inference")
    worker = threading.Thread(target=scope.__enter__)
    worker.start()
    worker.join()
    with torch.no_grad():
        scope.__exit__(None, None, None)
        gc.collect()
        assert not torch.is_grad_enabled()  # not the worker's grad mode from before its scope
        assert not torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled()
    assert all(flags(net))
