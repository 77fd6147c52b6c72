"""Tests of evaluating and frozen: state inside, after, after exceptions, nested, threaded."""

from __future__ import annotations

import gc
import threading
import warnings
import weakref

import pytest
import schedulefree
import torch
from torch import nn

import gradguard
from gradguard import _state, evaluating, frozen
from tests.helpers import Net, fine_tuning_net, flags, requires


class Boom(Exception):
    """An error raised on purpose inside a scope."""


# ---------------------------------------------------------------- evaluating: basic behaviour


def test_evaluating_switches_every_module_to_eval_and_disables_grad() -> None:
    """Inside the scope every submodule is in eval and gradients are off."""
    net = fine_tuning_net()
    with evaluating(net):
        assert flags(net) == [False] * len(flags(net))
        assert not torch.is_grad_enabled()
        out = net(torch.randn(4, 8))
    assert not out.requires_grad


def test_restores_frozen_batchnorm_after_exit() -> None:
    """A BatchNorm frozen in eval stays in eval after the scope; the rest returns to training."""
    net = fine_tuning_net()
    before = flags(net)
    with evaluating(net):
        pass
    assert flags(net) == before
    assert net.features[1].training is False
    assert net.head[0].training is True


def test_restores_frozen_batchnorm_after_exception() -> None:
    """An exception inside the scope still restores every flag and the grad mode."""
    net = fine_tuning_net()
    before = flags(net)
    with pytest.raises(Boom), evaluating(net):
        raise Boom
    assert flags(net) == before
    assert torch.is_grad_enabled()


def test_model_already_in_eval_stays_in_eval() -> None:
    """A model that was in eval before the scope is not switched to train afterwards."""
    net = Net().eval()
    with evaluating(net):
        pass
    assert flags(net) == [False] * len(flags(net))


@pytest.mark.parametrize(
    ("mode", "grad_inside", "inference_inside"),
    [("no_grad", False, False), ("inference", False, True), ("grad", True, False)],
)
def test_modes_set_grad_and_inference_mode(
    mode: str, grad_inside: bool, inference_inside: bool
) -> None:
    """Each mode enters its grad context and the mode from before comes back."""
    net = Net()
    with evaluating(net, mode=mode):  # type: ignore[arg-type]
        assert torch.is_grad_enabled() is grad_inside
        assert torch.is_inference_mode_enabled() is inference_inside
        out = net(torch.randn(2, 8))
        assert out.requires_grad is grad_inside
    assert torch.is_grad_enabled()
    assert not torch.is_inference_mode_enabled()


def test_grad_mode_restored_when_disabled_before_scope() -> None:
    """A scope opened with gradients already off leaves them off."""
    net = Net()
    with torch.no_grad():
        with evaluating(net, mode="grad"):
            assert not torch.is_grad_enabled()
        with evaluating(net):
            pass
        assert not torch.is_grad_enabled()


def test_several_modules_in_one_scope() -> None:
    """All given modules are held in eval and each restored."""
    a, b = fine_tuning_net(), Net()
    before_a, before_b = flags(a), flags(b)
    with evaluating(a, b):
        assert not any(flags(a)) and not any(flags(b))
    assert flags(a) == before_a and flags(b) == before_b


def test_shared_submodule_is_restored_once() -> None:
    """A submodule shared by two models keeps its own flag."""
    shared = nn.BatchNorm1d(4)
    shared.eval()
    a = nn.Sequential(nn.Linear(4, 4), shared)
    b = nn.Sequential(shared, nn.Dropout())
    with evaluating(a, b):
        assert not shared.training
    assert shared.training is False
    assert a[0].training and b[1].training


class KeepsDropoutOn(nn.Module):
    """A model whose train() override keeps dropout active even in eval (Monte-Carlo dropout)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.dropout = nn.Dropout()
        self.calls: list[bool] = []

    def train(self, mode: bool = True) -> KeepsDropoutOn:
        self.calls.append(mode)
        super().train(mode)
        self.dropout.train(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x))


def test_train_override_is_honoured() -> None:
    """A module overriding train() gets its override called, as model.eval() would."""
    model = KeepsDropoutOn()
    wrapper = nn.Sequential(model, nn.BatchNorm1d(4))
    with evaluating(wrapper):
        assert model.calls == [False]
        assert model.dropout.training is True
        assert model.training is False and wrapper[1].training is False
    assert model.calls == [False, True]
    assert flags(wrapper) == [True] * 5


def test_train_override_that_keeps_a_child_on_does_not_warn() -> None:
    """A flag an override left on at entry is not taken for a change made inside the scope."""
    model = KeepsDropoutOn()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with evaluating(model):
            model(torch.randn(2, 4))
    assert gradguard.findings() == []


def test_compiled_model_real_module_flags_are_switched() -> None:
    """A torch.compile result: the original module's flags are switched and restored."""
    net = fine_tuning_net()
    compiled = torch.compile(net, backend="eager")
    before = flags(net)
    with evaluating(compiled):
        assert not any(flags(net))
        assert compiled.training is False
        compiled(torch.randn(4, 8))
    assert flags(net) == before
    assert compiled.training is True


def test_distributed_data_parallel_module_flags_are_switched() -> None:
    """A DDP-wrapped model (real gloo process group): the inner module's flags are restored."""
    import torch.distributed as dist

    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        net = fine_tuning_net()
        ddp = nn.parallel.DistributedDataParallel(net)
        before = flags(net)
        with evaluating(ddp):
            assert not any(flags(net)) and not ddp.training
            ddp(torch.randn(4, 8))
        assert flags(net) == before and ddp.training
    finally:
        dist.destroy_process_group()


def test_schedule_free_optimizer_switched_to_eval_and_back() -> None:
    """An optimizer with .eval()/.train() is in eval inside the scope and in train after."""
    net = Net()
    optimizer = schedulefree.AdamWScheduleFree(net.parameters(), lr=1e-3)
    optimizer.train()
    loss = net(torch.randn(4, 8)).sum()
    loss.backward()
    optimizer.step()
    with evaluating(net, optimizers=[optimizer]):
        assert optimizer.param_groups[0]["train_mode"] is False
    assert optimizer.param_groups[0]["train_mode"] is True


def test_schedule_free_optimizer_already_in_eval_stays_in_eval() -> None:
    """An optimizer in eval before the scope is not switched to train afterwards."""
    net = Net()
    optimizer = schedulefree.SGDScheduleFree(net.parameters(), lr=1e-3)
    optimizer.eval()
    with evaluating(net, optimizers=[optimizer]):
        assert optimizer.param_groups[0]["train_mode"] is False
    assert optimizer.param_groups[0]["train_mode"] is False


def test_plain_optimizer_is_accepted_and_untouched() -> None:
    """A torch.optim optimizer without eval()/train() is accepted and left alone."""
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with evaluating(net, optimizers=(optimizer,)):
        pass
    assert flags(net) == [True] * len(flags(net))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "text"),
    [
        ((), {}, TypeError, "at least one torch.nn.Module"),
        (("model",), {}, TypeError, "argument 0 is builtins.str"),
        ((None,), {}, TypeError, "argument 0 is builtins.NoneType"),
        ((nn.Linear(2, 2),), {"mode": "eval"}, ValueError, "mode='eval'; valid modes are"),
        ((nn.Linear(2, 2),), {"optimizers": [object()]}, TypeError, "optimizers=..."),
    ],
)
def test_bad_input_raises_before_any_state_changes(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], text: str
) -> None:
    """Bad arguments give a clear error naming what was given, and nothing is switched."""
    witness = Net()
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        evaluating(*args, **kwargs)  # type: ignore[arg-type]
    assert flags(witness) == [True] * len(flags(witness))
    assert torch.is_grad_enabled()
    assert _state.held_counts() == (0, 0)


def test_unknown_mode_message_lists_valid_modes() -> None:
    """The error for an unknown mode names every valid one."""
    with pytest.raises(ValueError, match="mode='fast'") as info:
        evaluating(Net(), mode="fast")  # type: ignore[arg-type]
    for valid in ("'no_grad'", "'inference'", "'grad'"):
        assert valid in str(info.value)


# ---------------------------------------------------------------- nesting and re-entry


def test_nested_scopes_on_the_same_model() -> None:
    """An inner scope on the same model keeps it in eval until the outer one closes."""
    net = fine_tuning_net()
    before = flags(net)
    with evaluating(net):
        with evaluating(net, mode="inference"):
            assert not any(flags(net))
            assert torch.is_inference_mode_enabled()
        assert not any(flags(net))
        assert not torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    assert flags(net) == before


def test_overlapping_scopes_closed_out_of_order() -> None:
    """A model and its submodule held by two scopes closed in non-LIFO order restore exactly."""
    net = fine_tuning_net()
    before = flags(net)
    outer = evaluating(net, mode="grad")
    inner = evaluating(net.features, mode="grad")
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the model comes back, its features stay held
    assert not any(flags(net.features))
    assert net.training and net.head[0].training
    inner.__exit__(None, None, None)
    assert flags(net) == before


def test_submodule_scope_then_whole_model_scope() -> None:
    """A scope on a submodule opened first keeps the frozen flags as originals for the outer."""
    net = fine_tuning_net()
    before = flags(net)
    first = evaluating(net.features, mode="grad")
    second = evaluating(net, mode="grad")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not any(flags(net))
    second.__exit__(None, None, None)
    assert flags(net) == before


def test_same_scope_object_entered_twice() -> None:
    """One evaluating object entered again while entered keeps a separate state per entry."""
    net = fine_tuning_net()
    before = flags(net)
    scope = evaluating(net)
    with scope:
        with scope:
            assert not any(flags(net))
        assert not any(flags(net)) and not torch.is_grad_enabled()
    assert flags(net) == before and torch.is_grad_enabled()


def test_decorator_on_recursive_function() -> None:
    """Used as a decorator on a recursive function, every level is in eval, all restored."""
    net = fine_tuning_net()
    before = flags(net)
    seen: list[tuple[bool, bool]] = []

    @evaluating(net)
    def depth(n: int) -> int:
        """Recurse n times."""
        seen.append((any(flags(net)), torch.is_grad_enabled()))
        return 0 if n == 0 else 1 + depth(n - 1)

    assert depth(5) == 5
    assert seen == [(False, False)] * 6
    assert flags(net) == before
    assert depth.__name__ == "depth" and depth.__doc__ == "Recurse n times."


def test_decorator_restores_after_exception() -> None:
    """A decorated function that raises still restores flags and grad mode."""
    net = fine_tuning_net()
    before = flags(net)

    @evaluating(net)
    def fail() -> None:
        raise Boom

    with pytest.raises(Boom):
        fail()
    assert flags(net) == before and torch.is_grad_enabled()


def test_decorated_generator_holds_scope_only_while_running() -> None:
    """Between the yields of a decorated generator the caller's state is back in force."""
    net = fine_tuning_net()
    before = flags(net)

    @evaluating(net)
    def batches() -> object:
        for _ in range(3):
            yield (any(flags(net)), torch.is_grad_enabled())

    gen = batches()
    assert next(gen) == (False, False)
    assert flags(net) == before and torch.is_grad_enabled()
    assert list(gen) == [(False, False)] * 2
    assert flags(net) == before


def test_decorating_a_class_is_refused_with_a_hint() -> None:
    """Decorating a class raises TypeError that says to decorate its methods."""
    with pytest.raises(TypeError, match="decorate its methods"):
        evaluating(Net())(Net)


# ---------------------------------------------------------------- threads


def test_threads_on_one_shared_model() -> None:
    """8 threads x 2,000 scopes on one model: never training inside, original flags after."""
    net = fine_tuning_net()
    before = flags(net)
    errors: list[str] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(2000):
            with evaluating(net):
                if any(m.training for m in net.modules()):
                    errors.append("saw training mode inside a scope")
                if torch.is_grad_enabled():
                    errors.append("saw gradients enabled inside a scope")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert flags(net) == before
    assert _state.held_counts() == (0, 0)


def test_grad_mode_is_per_thread() -> None:
    """A scope in one thread does not disable gradients in another."""
    net = Net()
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with evaluating(net):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(10)
    try:
        assert torch.is_grad_enabled()
        assert not net.training  # module flags are shared by all threads
    finally:
        release.set()
        thread.join()
    assert net.training


# ---------------------------------------------------------------- leaks


def test_no_reference_cycles_and_no_leftover_hooks() -> None:
    """After a scope the model dies by refcount alone, and no hook is left anywhere."""
    from torch.nn.modules import module as module_module

    gc.collect()
    gc.disable()
    try:
        net = fine_tuning_net()
        ref = weakref.ref(net)
        forward_hooks = dict(module_module._global_forward_hooks)
        with evaluating(net, mode="inference"), frozen(net, eval=True):
            net(torch.randn(2, 8))
        assert dict(module_module._global_forward_hooks) == forward_hooks
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
        del net
        assert ref() is None
    finally:
        gc.enable()


def test_saved_tensor_hooks_removed_after_scope() -> None:
    """The GG001 hook is popped at exit: a graph built after the scope is not reported."""
    net = Net()
    with evaluating(net):
        pass
    out = net(torch.randn(2, 8))  # gradients on, outside any scope: legitimate training forward
    out.sum().backward()
    assert gradguard.findings() == []


# ---------------------------------------------------------------- frozen


def test_frozen_sets_requires_grad_false_and_restores_each_flag() -> None:
    """Every parameter stops requiring grad; each gets its own flag back."""
    net = Net()
    net.head[1].bias.requires_grad_(False)
    before = requires(net)
    with frozen(net):
        assert requires(net) == [False] * len(before)
        assert torch.is_grad_enabled()
        assert flags(net) == [True] * len(flags(net))
    assert requires(net) == before


def test_frozen_with_eval_holds_batchnorm_and_dropout() -> None:
    """frozen(eval=True) also holds the modules in eval and restores their flags."""
    net = fine_tuning_net()
    before_flags, before_grad = flags(net), requires(net)
    with pytest.raises(Boom), frozen(net.features, eval=True):
        assert not any(flags(net.features)) and net.head[0].training
        raise Boom
    assert flags(net) == before_flags and requires(net) == before_grad


def test_frozen_backbone_gets_no_gradient_in_a_training_step() -> None:
    """Fine-tuning: the frozen backbone gets no grad, the head trains, flags come back."""
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with frozen(net.features, eval=True):
        loss = net(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in net.features.parameters())
    assert all(p.grad is not None for p in net.head.parameters())
    assert all(p.requires_grad for p in net.parameters())


def test_frozen_threads_restore_requires_grad() -> None:
    """Nested and threaded frozen scopes on one model restore requires_grad at the end."""
    net = Net()
    errors: list[str] = []

    def worker() -> None:
        for _ in range(300):
            with frozen(net):
                if any(p.requires_grad for p in net.parameters()):
                    errors.append("a parameter required grad inside frozen()")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and all(requires(net))


def test_frozen_bad_input() -> None:
    """frozen() without a module, or with a non-module, is a TypeError."""
    with pytest.raises(TypeError, match="at least one"):
        frozen()
    with pytest.raises(TypeError, match=r"argument 1 is builtins\.int"):
        frozen(Net(), 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"eval=\.\.\."):
        frozen(Net(), eval="yes")  # type: ignore[arg-type]


def test_model_that_refers_to_itself_is_collected_after_a_scope() -> None:
    """A model holding a reference cycle to itself is freed by a full collection after a scope."""
    net = fine_tuning_net()
    net.__dict__["owner_chain"] = [net]  # a cycle, as a Lightning module has through its trainer
    with evaluating(net):
        net(torch.randn(2, 8))
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


def test_list_of_models_gets_a_hint_to_unpack() -> None:
    """evaluating([model]) says to pass the modules as separate arguments."""
    with pytest.raises(TypeError, match=r"separate arguments.*evaluating\(\*models\)"):
        evaluating([Net(), Net()])  # type: ignore[arg-type]


def test_bare_decorator_gets_a_hint() -> None:
    """@evaluating without models on a function says what to write instead."""
    with pytest.raises(TypeError, match=r"@evaluating\(model\).*inference_fn"):

        @evaluating  # type: ignore[arg-type]
        def predict() -> None:
            pass
