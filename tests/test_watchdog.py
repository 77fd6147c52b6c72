"""The watchdog: installation, model discovery, checks GG001-GG005, strictness, leaks, compile."""

from __future__ import annotations

import _thread
import collections
import functools
import gc
import operator
import os
import subprocess
import sys
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import ClassVar

import pytest
import torch
from torch import nn
from torch.optim import optimizer as optimizer_module

import gradguard
from gradguard import _findings, _state, _watchdog
from gradguard._watchdog import _built, _common, _graphs, _optimizer, _reach, _train_mode

HERE = os.path.abspath(__file__)


def here() -> int:
    """The caller's current line: call it on the line of the statement under test."""
    return sys._getframe(1).f_lineno


class Net(nn.Module):
    """A small classifier with BatchNorm and dropout, the layers that eval() matters for."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def batch() -> torch.Tensor:
    return torch.randn(4, 8)


def codes() -> list[tuple[str, int]]:
    return [(f.code, f.lineno) for f in gradguard.findings()]


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    """Each test starts unwatched with no findings, and leaves no watchdog or grad mode behind."""
    gradguard.unwatch()
    gradguard.clear_findings()
    gradguard.configure(strict=None)
    yield
    gradguard.unwatch()
    gradguard.clear_findings()
    gradguard.configure(strict=None)
    torch.set_grad_enabled(True)
    assert _state.held_counts() == (0, 0)


@pytest.fixture
def watched() -> Iterator[gradguard.WatchHandle]:
    handle = gradguard.watch()
    yield handle
    handle.close()


def _global_hook_counts() -> tuple[int, ...]:
    module = nn.modules.module
    return (
        len(module._global_forward_pre_hooks),
        len(module._global_forward_hooks),
        len(module._global_parameter_registration_hooks),
        len(module._global_module_registration_hooks),
        len(optimizer_module._global_optimizer_pre_hooks),
    )


def _patched_attributes() -> tuple[object, ...]:
    return (
        *(nn.Module.__dict__[n] for n in ("train", "eval", "to", "cuda", "cpu", "load_state_dict")),
        torch.Tensor.backward,
        torch.autograd.backward,
        *(torch.set_grad_enabled.__dict__[n] for n in ("__init__", "__exit__", "__call__")),
    )


# --------------------------------------------------------------------------------------------
# Installation
# --------------------------------------------------------------------------------------------


def test_plain_import_patches_nothing() -> None:
    """Importing gradguard in a fresh interpreter leaves every torch attribute and hook alone."""
    code = (
        "import torch, torch.optim.optimizer as oo\n"
        "from torch import nn\n"
        "before = (nn.Module.train, nn.Module.to, torch.Tensor.backward, torch.set_grad_enabled,"
        " torch.autograd.backward)\n"
        "import gradguard, gradguard._watchdog, gradguard._scopes, gradguard._inference\n"
        "after = (nn.Module.train, nn.Module.to, torch.Tensor.backward, torch.set_grad_enabled,"
        " torch.autograd.backward)\n"
        "assert before == after, 'import patched something'\n"
        "assert not oo._global_optimizer_pre_hooks\n"
        "assert not nn.modules.module._global_forward_pre_hooks\n"
        "assert not gradguard._watchdog.is_watching()\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRADGUARD_WATCH"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_watch_then_unwatch_leaves_a_fresh_process_as_it_was() -> None:
    """In a fresh interpreter, every global hook table is as it was after watch() and unwatch()."""
    code = (
        "import torch, torch.optim.optimizer as oo\n"
        "from torch import nn\n"
        "import gradguard\n"
        "mm = nn.modules.module\n"
        "tables = lambda: [dict(t) for t in (mm._global_forward_pre_hooks,"
        " mm._global_forward_hooks, mm._global_parameter_registration_hooks,"
        " mm._global_module_registration_hooks, mm._global_buffer_registration_hooks,"
        " oo._global_optimizer_pre_hooks, oo._global_optimizer_post_hooks)]\n"
        "before = tables()\n"
        "with gradguard.watch(deep=True):\n"
        "    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    model(torch.randn(1, 2)).sum().backward()\n"
        "    opt.step()\n"
        "assert tables() == before, (tables(), before)\n"
        "assert not model._forward_pre_hooks and not model._forward_hooks\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRADGUARD_WATCH"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize(("value", "deep"), [("1", False), ("Yes", False), ("deep", True)])
def test_environment_variable_installs_at_import(value: str, deep: bool) -> None:
    """GRADGUARD_WATCH=1/yes/deep installs the watchdog when gradguard is imported."""
    code = (
        "import gradguard, torch\n"
        "from gradguard import _watchdog\n"
        "print(_watchdog.is_watching(), _watchdog._common.status.deep)\n"
    )
    env = {**os.environ, "GRADGUARD_WATCH": value}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", str(deep)]


def test_environment_variable_rejects_unknown_value() -> None:
    """An invalid GRADGUARD_WATCH fails the import with a ValueError listing the valid values."""
    env = {**os.environ, "GRADGUARD_WATCH": "maybe"}
    done = subprocess.run(
        [sys.executable, "-c", "import gradguard"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: GRADGUARD_WATCH='maybe' is not a valid value")
    assert "1, true, yes, on" in last
    assert "'deep' to also see every model at its first call" in last
    assert "hook" not in last  # deep mode adds no global hook


def test_environment_variable_off_values_install_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRADGUARD_WATCH=0 / off / empty installs nothing."""
    for value in ("0", "off", ""):
        monkeypatch.setenv("GRADGUARD_WATCH", value)
        assert _watchdog.watch_from_environment() is None
        assert not _watchdog.is_watching()


def test_watch_and_unwatch_restore_every_patch_and_hook() -> None:
    """watch() patches and hooks; unwatch() puts back the very same objects and hook counts."""
    attributes = _patched_attributes()
    hooks = _global_hook_counts()
    model = Net()
    handle = gradguard.watch(deep=True)
    assert _watchdog.is_watching()
    assert _patched_attributes() != attributes
    model.eval()
    assert "__call__" in vars(Net)
    assert not model._forward_pre_hooks and not model._forward_hooks
    gradguard.unwatch()
    assert handle.closed
    assert not _watchdog.is_watching()
    assert "__call__" not in vars(Net)
    assert _patched_attributes() == attributes
    assert _global_hook_counts() == hooks
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert _watchdog.known_models() == []


def test_installing_twice_is_harmless_and_last_handle_uninstalls() -> None:
    """Two handles: closing one keeps watching, the last uninstalls, closing again is a no-op."""
    first = gradguard.watch()
    second = gradguard.watch()
    train = nn.Module.train
    first.close()
    assert _watchdog.is_watching()
    assert nn.Module.train is train
    second.close()
    second.close()
    assert not _watchdog.is_watching()


def test_handle_is_a_context_manager() -> None:
    """`with watch():` installs for the block only."""
    with gradguard.watch() as handle:
        assert isinstance(handle, gradguard.WatchHandle)
        assert _watchdog.is_watching()
    assert not _watchdog.is_watching()
    assert handle.closed


def test_watch_rejects_bad_arguments_before_installing() -> None:
    """Non-bool strict/deep raise TypeError naming the value, and nothing is installed."""
    with pytest.raises(TypeError, match=r"watch\(strict=\.\.\.\) takes True, False or None, not 1"):
        gradguard.watch(strict=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"watch\(deep=\.\.\.\) takes True or False, not 'yes'"):
        gradguard.watch(deep="yes")  # type: ignore[arg-type]
    assert not _watchdog.is_watching()


def test_thousand_watch_unwatch_cycles_leave_nothing() -> None:
    """1,000 cycles that each see models, step and find mistakes leave no hook, patch or model."""
    attributes = _patched_attributes()
    hooks = _global_hook_counts()
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = batch()
    refs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(1000):
            handle = gradguard.watch(deep=True)
            scratch = nn.Linear(2, 2)
            scratch.eval()
            refs.append(weakref.ref(scratch))
            model.train()
            with torch.no_grad():
                model(x)  # GG002
            model.eval()
            out = model(x)  # GG001, reported when freed or at close()
            optimizer.step()  # GG005
            handle.close()
            del scratch, out
    assert {f.code for f in gradguard.findings()} == {"GG001", "GG002", "GG005"}
    del optimizer
    gc.collect()
    assert _patched_attributes() == attributes
    assert _global_hook_counts() == hooks
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert all(ref() is None for ref in refs)
    assert _reach.models == {} and _reach.param_owner == {}
    assert len(_graphs.graphs) == 0 and _graphs.pending == []


def test_models_stay_garbage_collectable(watched: gradguard.WatchHandle) -> None:
    """A watched model is held weakly: deleting it frees it and it leaves known_models()."""
    model = Net().eval()
    assert _watchdog.known_models() == [model]
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert _watchdog.known_models() == []


# --------------------------------------------------------------------------------------------
# Model discovery
# --------------------------------------------------------------------------------------------


def test_discovers_models_through_module_methods(watched: gradguard.WatchHandle) -> None:
    """train(), eval(), to(), cpu() and load_state_dict() each make their root model known."""
    models = [Net() for _ in range(5)]
    models[0].train()
    models[1].eval()
    models[2].to(torch.float64)
    models[3].cpu()
    models[4].load_state_dict(Net().state_dict())
    assert _watchdog.known_models() == models
    assert all(not m._forward_pre_hooks for m in models[0].modules() if m is not models[0])


def test_discovers_models_through_optimizer_step(watched: gradguard.WatchHandle) -> None:
    """A model never switched is found at its optimizer's step, as its outermost module."""
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model(batch()).sum().backward()
    optimizer.step()
    assert _watchdog.known_models() == [model]


def test_discovers_models_through_scopes(watched: gradguard.WatchHandle) -> None:
    """A model entered in a gradguard scope is known, including one entered before watch()."""
    before = Net()
    with gradguard.evaluating(before):
        pass
    gradguard.unwatch()
    handle = gradguard.watch()
    after = Net()
    with gradguard.evaluating(after):
        pass
    assert before in _watchdog.known_models() and after in _watchdog.known_models()
    handle.close()


def test_deep_mode_discovers_untouched_models() -> None:
    """deep=True finds a model that was only called, and notes only the outermost module."""
    model = Net()
    with gradguard.watch(deep=True):
        with pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught, torch.no_grad():
            line = here() + 1
            model(batch())
        assert _watchdog.known_models() == [model]
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]


class GrowsWhileWalked(nn.Module):
    """Gains the child ``late()`` makes as its tree is walked (as another thread's change would
    land), and runs it once it has it."""

    def __init__(self, late: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.make_late = late
        self.grow = False

    def modules(self) -> Iterator[nn.Module]:
        yield from super().modules()
        if self.grow:
            self.grow = False
            self.late = self.make_late()  # registered as the walk ends, before it is stored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        return self.late(out) if "late" in self._modules else out


def test_deep_mode_a_child_added_during_the_walk_is_part_of_its_model() -> None:
    """The covered set keeps the generation it started from: a child added meanwhile is rechecked
    (and found inside its model), not noted as a model of its own."""
    model = GrowsWhileWalked(lambda: nn.Linear(8, 8)).eval()
    with gradguard.watch(deep=True), torch.no_grad():
        model.grow = True
        model(batch())  # its first call: the watchdog walks it, and it grows
        model(batch())  # its new child's first call
        assert _watchdog.known_models() == [model]


class MakesItsActivation(Net):
    """Builds a module inside its forward on every call (as nn.functional-minded code does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.ReLU()(super().forward(x))


def test_deep_mode_a_module_made_inside_a_forward_is_not_a_model() -> None:
    """Noting it (and forgetting it when it dies) made every forward walk every watched model."""
    model = MakesItsActivation().eval()
    with gradguard.watch(deep=True), torch.no_grad():
        model(batch())
        structure = _common.status.structure
        for _ in range(3):
            model(batch())
        assert _common.status.structure == structure
        assert _watchdog.known_models() == [model]


def test_deep_mode_checks_the_first_call_of_an_eval_model_nobody_touched() -> None:
    """deep=True: the very first call of a model seen by nothing else is checked (GG001)."""
    model = Net().eval()  # before watch(): the watchdog never saw it switched or built
    with gradguard.watch(deep=True):
        with pytest.warns(gradguard.GraphInInferenceWarning) as caught:
            line = here() + 1
            out = model(batch())
            del out
            with torch.no_grad():
                model(batch())  # the freed graph is reported at the next watched forward
        assert _watchdog.known_models() == [model]
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]


class CountingNet(Net):
    """A model whose own ``__call__`` does work around PyTorch's (a call counter)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        self.calls += 1
        return super().__call__(*args, **kwargs)  # type: ignore[no-any-return]


def test_deep_mode_runs_a_models_own_call_once_at_its_first_call() -> None:
    """deep=True checks the first call where it sees it: the model's own __call__ runs once."""
    model = CountingNet()
    hooked: list[str] = []
    model.register_forward_pre_hook(lambda _module, _args: hooked.append("pre"))
    with gradguard.watch(deep=True):
        with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.no_grad():
            model(batch())
        assert (model.calls, hooked) == (1, ["pre"])
        assert _watchdog.known_models() == [model]
        model(batch())
        assert (model.calls, hooked) == (2, ["pre", "pre"])
    assert [f.code for f in gradguard.findings()] == ["GG002"]


def test_deep_mode_adds_no_global_hook_and_gives_module_call_back() -> None:
    """deep=True is a layer on nn.Module.__call__ while a deep handle is open, no global hook."""
    original = nn.Module.__dict__["__call__"]
    shallow = gradguard.watch()
    with gradguard.watch(deep=True):
        assert nn.Module.__dict__["__call__"] is not original
        assert not nn.modules.module._global_forward_pre_hooks
        assert not nn.modules.module._global_forward_hooks
        Net()(batch())
    assert nn.Module.__dict__["__call__"] is original  # the shallow handle is still open
    assert _watchdog.is_watching()
    shallow.close()
    assert nn.Module.__dict__["__call__"] is original


def test_deep_mode_under_torch_fx_tracing() -> None:
    """torch.fx patches nn.Module.__call__ while it traces: deep mode's layer lets it."""
    model = Net().eval()
    expected = [n.target for n in torch.fx.symbolic_trace(model).graph.nodes]
    with gradguard.watch(deep=True):
        traced = torch.fx.symbolic_trace(model)
        assert [n.target for n in traced.graph.nodes] == expected
        inputs = batch()
        with torch.no_grad():
            torch.testing.assert_close(traced(inputs), model(inputs))
    assert nn.Module.__dict__["__call__"] is nn.Module._wrapped_call_impl


def test_default_level_adds_no_hooks_to_submodules_or_globally(
    watched: gradguard.WatchHandle,
) -> None:
    """Only the root's class gets gradguard's __call__; no hook at all is installed."""
    model = Net().eval()
    assert "__call__" in vars(Net)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert all("__call__" not in vars(type(m)) for m in list(model.modules())[1:])
    assert not nn.modules.module._global_forward_pre_hooks
    assert not nn.modules.module._global_forward_hooks


# --------------------------------------------------------------------------------------------
# GG002 train-mode-without-grad
# --------------------------------------------------------------------------------------------


def test_train_mode_forward_without_grad_is_found(watched: gradguard.WatchHandle) -> None:
    """A BatchNorm model left in training mode and run under no_grad: GG002 at the forward line."""
    model = Net()
    model.train()
    with pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught, torch.no_grad():
        for _ in range(2):
            line = here() + 1
            model(batch())
    assert len(caught) == 1
    assert (caught[0].filename, caught[0].lineno) == (HERE, line)
    message = str(caught[0].message)
    assert message.startswith("GG002 train-mode-without-grad: Net is in training mode")
    assert "inside a torch.no_grad() block" in message
    assert "Fix: to evaluate, call model.eval() first" in message
    assert [(f.code, f.lineno, f.count) for f in gradguard.findings()] == [("GG002", line, 2)]


def test_a_layer_added_during_the_walk_of_a_model_is_seen_at_its_next_forward(
    watched: gradguard.WatchHandle,
) -> None:
    """The cache of mode-dependent layers keeps the generation it started from, not a later one."""
    model = GrowsWhileWalked(lambda: nn.Dropout(0.5))
    model.train()
    model.grow = True
    with torch.no_grad():
        model(batch())  # its tree has no mode-dependent layer yet: nothing to report
        assert gradguard.findings() == []
        with pytest.warns(gradguard.TrainModeWithoutGradWarning):
            line = here() + 1
            model(batch())
    assert codes() == [("GG002", line)]


def test_train_mode_names_the_bare_set_grad_enabled(watched: gradguard.WatchHandle) -> None:
    """A bare torch.set_grad_enabled(False) never undone is named in the message."""
    model = Net()
    model.train()
    disabled = here() + 1
    torch.set_grad_enabled(False)
    try:
        with pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught:
            model(batch())
    finally:
        torch.set_grad_enabled(True)
    assert f"set_grad_enabled(False) at {HERE}:{disabled}" in str(caught[0].message)


def test_scoped_set_grad_enabled_is_forgotten_on_exit(watched: gradguard.WatchHandle) -> None:
    """A with-block set_grad_enabled(False) is not blamed once it has exited."""
    model = Net()
    model.train()
    with torch.set_grad_enabled(False):
        pass
    with pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught, torch.no_grad():
        model(batch())
    assert "set_grad_enabled(False) at" not in str(caught[0].message)


def test_a_bare_switch_recorded_in_an_earlier_watch_is_not_named_by_a_later_one() -> None:
    """A thread's bare switch off, recorded, then undone while unwatched: a later watch() does not
    blame that old line for a no_grad() block of its own."""
    model = Net()
    steps = [threading.Event() for _ in range(4)]
    caught: list[warnings.WarningMessage] = []

    def worker() -> None:
        torch.set_grad_enabled(False)  # recorded by the first watch()
        steps[0].set()
        steps[1].wait(10)
        torch.set_grad_enabled(True)  # unwatched: nobody sees it undone
        steps[2].set()
        steps[3].wait(10)
        model.train()
        with warnings.catch_warnings(record=True) as seen, torch.no_grad():
            warnings.simplefilter("always")
            model(batch())
        caught.extend(seen)

    thread = threading.Thread(target=worker)
    handle = gradguard.watch()
    thread.start()
    assert steps[0].wait(10)
    handle.close()
    steps[1].set()
    assert steps[2].wait(10)
    with gradguard.watch():
        steps[3].set()
        thread.join(10)
    [warning] = [w for w in caught if issubclass(w.category, gradguard.TrainModeWithoutGradWarning)]
    assert "set_grad_enabled(False) at" not in str(warning.message)
    assert "inside a torch.no_grad() block" in str(warning.message)


@pytest.mark.parametrize("mode", [False, True])
def test_grad_switch_called_straight_from_c_code_works(
    watched: gradguard.WatchHandle, monkeypatch: pytest.MonkeyPatch, mode: bool
) -> None:
    """set_grad_enabled() with no Python caller (an atexit callback, a thread's target) works."""
    torch.set_grad_enabled(False)  # a bare switch recorded: switching on looks at the caller too
    torch.set_grad_enabled(True)
    raised: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda hook: raised.append(hook.exc_value))
    done = threading.Event()
    calls = [functools.partial(torch.set_grad_enabled, mode), done.set]
    # Only C code (deque, map, methodcaller, partial) runs before set_grad_enabled.__init__ in
    # the new thread, so that frame is the first of its stack, as in an atexit callback.
    _thread.start_new_thread(collections.deque, (map(operator.methodcaller("__call__"), calls), 0))
    assert done.wait(10), raised
    assert raised == []


def test_train_mode_under_inference_mode_is_found(watched: gradguard.WatchHandle) -> None:
    """inference_mode disables gradients too; the message says so."""
    model = Net()
    model.train()
    with pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught, torch.inference_mode():
        model(batch())
    assert "inside a torch.inference_mode() block" in str(caught[0].message)


def test_train_mode_without_grad_silent_in_eval_or_with_grad(
    watched: gradguard.WatchHandle,
) -> None:
    """eval() + no_grad and train() + grad are both correct and silent."""
    model = Net()
    model.eval()
    with torch.no_grad():
        model(batch())
    model.train()
    model(batch()).sum().backward()
    assert gradguard.findings() == []


def test_train_mode_without_grad_silent_for_mode_independent_models(
    watched: gradguard.WatchHandle,
) -> None:
    """A model without BatchNorm, dropout or a forward reading self.training behaves the same."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    model.train()
    with torch.no_grad():
        model(batch())
    assert gradguard.findings() == []


def test_user_module_reading_training_counts_as_mode_dependent(
    watched: gradguard.WatchHandle,
) -> None:
    """A user module whose forward reads self.training is treated like dropout."""

    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.randn_like(x) if self.training else x

    model = Noisy()
    model.train()
    with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.no_grad():
        model(batch())


def test_update_bn_is_silent(watched: gradguard.WatchHandle) -> None:
    """torch.optim.swa_utils.update_bn runs a training-mode model under no_grad on purpose."""
    model = Net()
    model.train()
    loader = [batch() for _ in range(3)]
    torch.optim.swa_utils.update_bn(loader, model)
    assert gradguard.findings() == []


def test_train_mode_without_grad_silent_under_allow(watched: gradguard.WatchHandle) -> None:
    """Monte-Carlo dropout under allow('train-mode-without-grad') is silent."""
    model = Net()
    model.train()
    with gradguard.allow("train-mode-without-grad"), torch.no_grad():
        model(batch())
    assert gradguard.findings() == []


# --------------------------------------------------------------------------------------------
# GG001 graph-in-inference
# --------------------------------------------------------------------------------------------


def test_unused_graph_from_eval_forward_is_found(watched: gradguard.WatchHandle) -> None:
    """An eval forward with gradients on whose graph is freed unused: GG001 at that forward."""
    model = Net()
    model.eval()
    with pytest.warns(gradguard.GraphInInferenceWarning) as caught:
        for _ in range(3):
            line = here() + 1
            out = model(batch())
        del out
        # freed in a finalizer: reported at the next forward
        with torch.no_grad():
            model(batch())
        assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]
    message = str(caught[0].message)
    assert message.startswith("GG001 graph-in-inference: Net is in eval mode")
    assert "freed without being used" in message
    [finding] = gradguard.findings()
    assert (finding.code, finding.lineno, finding.count) == ("GG001", line, 3)


def test_accumulated_eval_loss_is_reported_at_unwatch(watched: gradguard.WatchHandle) -> None:
    """The `total_loss += loss` leak keeps graphs alive; unwatch() reports them as still alive."""
    model = Net()
    model.eval()
    total = torch.zeros(())
    for _ in range(3):
        line = here() + 1
        total = total + model(batch()).sum()
    with pytest.warns(gradguard.GraphInInferenceWarning) as caught:
        gradguard.unwatch()
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]
    assert "still alive and unused" in str(caught[0].message)
    del total


def test_used_graphs_are_silent(watched: gradguard.WatchHandle) -> None:
    """Saliency (backward), adversarial inputs (autograd.grad) and several forwards to one loss."""
    model = Net()
    model.eval()
    x = batch().requires_grad_()
    model(x)[0, 1].backward()
    adversarial = batch().requires_grad_()
    loss = nn.functional.cross_entropy(model(adversarial), torch.tensor([0, 1, 2, 0]))
    (grad,) = torch.autograd.grad(loss, adversarial)
    assert grad.shape == adversarial.shape
    (model(batch()).sum() + model(batch()).sum()).backward()
    del loss
    gc.collect()
    model(batch()).sum().backward()
    gradguard.unwatch()
    assert gradguard.findings() == []


def test_graph_in_inference_silent_in_grad_scope_allow_and_no_grad(
    watched: gradguard.WatchHandle,
) -> None:
    """evaluating(mode='grad'), allow('graph-in-inference') and no_grad build nothing to report."""
    model = Net()
    with gradguard.evaluating(model, mode="grad"):
        model(batch())
    model.eval()
    with gradguard.allow("graph-in-inference"):
        model(batch())
    with torch.no_grad():
        model(batch())
    gc.collect()
    gradguard.unwatch()
    assert gradguard.findings() == []


def test_nested_watched_models_report_one_finding(watched: gradguard.WatchHandle) -> None:
    """A watched submodule inside a watched model: one finding at the user's forward line."""
    model = Net()
    model.features.eval()
    model.eval()
    with pytest.warns(gradguard.GraphInInferenceWarning) as caught:
        line = here() + 1
        model(batch())
        gc.collect()
        gradguard.unwatch()
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]


# --------------------------------------------------------------------------------------------
# GG003 backward-without-grad
# --------------------------------------------------------------------------------------------


def test_backward_under_no_grad_raises_explained_error(watched: gradguard.WatchHandle) -> None:
    """A loss computed under no_grad: GradGuardError (a RuntimeError) chained to PyTorch's error."""
    model = Net()
    with torch.no_grad(), gradguard.allow("train-mode-without-grad"):
        loss = model(batch()).sum()
        with pytest.raises(gradguard.GradGuardError) as raised:
            line = here() + 1
            loss.backward()
    error = raised.value
    assert isinstance(error, RuntimeError)
    assert isinstance(error.__cause__, RuntimeError)
    assert "does not require grad" in str(error.__cause__)
    assert str(error).startswith("GG003 backward-without-grad: backward() failed because")
    assert "inside a torch.no_grad() block" in str(error)
    assert (error.finding.filename, error.finding.lineno) == (HERE, line)


def test_backward_after_bare_disable_names_the_site(watched: gradguard.WatchHandle) -> None:
    """torch.autograd.backward after a bare set_grad_enabled(False) names where it was disabled."""
    model = Net()
    disabled = here() + 1
    torch.set_grad_enabled(False)
    try:
        with gradguard.allow("train-mode-without-grad"):
            loss = model(batch()).sum()
        with pytest.raises(gradguard.GradGuardError, match=f"at {HERE}:{disabled}"):
            torch.autograd.backward(loss)
    finally:
        torch.set_grad_enabled(True)


def test_backward_on_inference_tensor_is_explained(watched: gradguard.WatchHandle) -> None:
    """A loss made under inference_mode is named as such even after leaving the block."""
    model = Net().eval()
    with torch.inference_mode():
        loss = model(batch()).sum()
    with pytest.raises(gradguard.GradGuardError, match=r"under torch\.inference_mode"):
        loss.backward()


def test_legal_backward_under_no_grad_is_silent(watched: gradguard.WatchHandle) -> None:
    """backward under no_grad on a loss that has a graph is legal and silent."""
    model = Net()
    loss = model(batch()).sum()
    with torch.no_grad():
        loss.backward()
    assert model.head[1].weight.grad is not None
    assert gradguard.findings() == []


def test_backward_without_grad_under_allow_keeps_pytorch_error(
    watched: gradguard.WatchHandle,
) -> None:
    """Under allow('backward-without-grad') PyTorch's own error comes through unchanged."""
    model = Net().eval()
    with torch.no_grad():
        loss = model(batch()).sum()
        with gradguard.allow("backward-without-grad"), pytest.raises(RuntimeError) as raised:
            loss.backward()
    assert not isinstance(raised.value, gradguard.GradGuardError)
    assert "does not require grad" in str(raised.value)


def test_unrelated_backward_error_is_not_rewritten(watched: gradguard.WatchHandle) -> None:
    """With gradients on, a tensor that never required grad keeps PyTorch's error."""
    with pytest.raises(RuntimeError) as raised:
        torch.ones(2).sum().backward()
    assert not isinstance(raised.value, gradguard.GradGuardError)


# --------------------------------------------------------------------------------------------
# GG004 eval-mode-training and GG005 step-without-gradients
# --------------------------------------------------------------------------------------------


def test_step_on_model_left_in_eval_is_found(watched: gradguard.WatchHandle) -> None:
    """Training resumes after validation without model.train(): GG004 at the step line."""
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.eval()
    model(batch()).sum().backward()
    with pytest.warns(gradguard.EvalModeTrainingWarning) as caught:
        line = here() + 1
        optimizer.step()
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]
    assert "SGD.step() is updating the parameters of Net, which is in eval mode" in str(
        caught[0].message
    )


def test_frozen_submodules_in_training_model_are_fine(watched: gradguard.WatchHandle) -> None:
    """BatchNorm frozen in eval inside a training model (fine-tuning) is not GG004."""
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    model.features[1].eval()
    model(batch()).sum().backward()
    optimizer.step()
    assert gradguard.findings() == []


def test_eval_backbone_with_unwatched_owner_is_not_judged(watched: gradguard.WatchHandle) -> None:
    """An eval submodule whose parent the watchdog never saw is not called a model left in eval."""
    with gradguard.allow("eval-mode-training"):
        pass
    backbone = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
    head = nn.Linear(8, 2)
    gradguard.unwatch()
    handle = gradguard.watch()  # both built before watching: owners unknown
    backbone.eval()
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.01)
    head(backbone(batch())).sum().backward()
    optimizer.step()
    handle.close()
    assert gradguard.findings() == []


def test_step_without_gradients_is_found(watched: gradguard.WatchHandle) -> None:
    """step() right after zero_grad(), with no backward: GG005 at the step line."""
    model = Net()
    optimizer = torch.optim.Adam(model.parameters())
    optimizer.zero_grad()
    with pytest.warns(gradguard.StepWithoutGradientsWarning) as caught:
        line = here() + 1
        optimizer.step()
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]
    assert str(caught[0].message).startswith(
        "GG005 step-without-gradients: Adam.step() ran while none of its parameters"
    )


def test_step_with_closure_is_fine(watched: gradguard.WatchHandle) -> None:
    """LBFGS computes its own gradients in the closure: no GG005."""
    model = nn.Linear(8, 1)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=2)
    x = batch()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert gradguard.findings() == []


def test_param_group_added_after_a_step_is_checked(watched: gradguard.WatchHandle) -> None:
    """add_param_group() after some steps: the new group's model, left in eval, is GG004."""
    model = Net()
    head = Net().eval()  # switched to eval before the first step: nothing else changes after
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model(batch()).sum().backward()
    optimizer.step()
    optimizer.add_param_group({"params": head.parameters()})
    (model(batch()).sum() + head(batch()).sum()).backward()
    with pytest.warns(gradguard.EvalModeTrainingWarning) as caught:
        line = here() + 1
        optimizer.step()
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]


def test_group_given_other_parameters_is_checked(watched: gradguard.WatchHandle) -> None:
    """A group's params replaced after a step (a new head): a step with no gradient is GG005."""
    model = Net()
    head = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model(batch()).sum().backward()
    optimizer.step()
    optimizer.param_groups[0]["params"] = list(head.parameters())
    with pytest.warns(gradguard.StepWithoutGradientsWarning) as caught:
        line = here() + 1
        optimizer.step()  # head has no gradient; model's (no longer stepped) still have theirs
    assert [(w.filename, w.lineno) for w in caught] == [(HERE, line)]


# --------------------------------------------------------------------------------------------
# Strictness, fail-open, threads, compile
# --------------------------------------------------------------------------------------------


def test_strict_watch_raises_at_the_point_of_detection() -> None:
    """watch(strict=True) raises GradGuardError before the forward runs."""
    model = Net()
    running_mean = model.features[1].running_mean.clone()
    with gradguard.watch(strict=True):
        model.train()
        with torch.no_grad(), pytest.raises(gradguard.GradGuardError) as raised:
            line = here() + 1
            model(batch())
    assert raised.value.finding.code == "GG002"
    assert raised.value.finding.lineno == line
    assert torch.equal(model.features[1].running_mean, running_mean)


def test_watch_strict_false_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRADGUARD_STRICT=1 with watch(strict=False): watchdog findings only warn."""
    monkeypatch.setenv("GRADGUARD_STRICT", "1")
    model = Net()
    with gradguard.watch(strict=False):
        model.train()
        with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.no_grad():
            model(batch())


def test_internal_error_fails_open(
    watched: gradguard.WatchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that breaks internally warns once (InternalCheckWarning) and the forward goes on."""

    def broken(module: nn.Module) -> bool:
        raise KeyError("boom")

    monkeypatch.setattr(_train_mode, "mode_dependent", broken)
    model = Net()
    model.train()
    with pytest.warns(gradguard.InternalCheckWarning, match="KeyError") as caught, torch.no_grad():
        for _ in range(3):
            out = model(batch())
    assert len(caught) == 1
    assert out.shape == (4, 3)


def test_internal_error_in_deep_modes_first_call_fails_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deep=True: an internal error while a model's first call is looked at warns; it runs."""

    def broken() -> list[object]:
        raise RuntimeError("dictionary changed size during iteration")

    monkeypatch.setattr(_reach, "_rebuild_covered", broken)
    model = Net().eval()
    with (
        gradguard.watch(deep=True),
        pytest.warns(gradguard.InternalCheckWarning, match="RuntimeError: dictionary"),
    ):
        out = model(batch())
    assert out.shape == (4, 3)


def test_internal_error_in_the_step_hook_fails_open(
    watched: gradguard.WatchHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An internal error while the step hook learns the optimizer warns; the step still runs."""
    from gradguard._watchdog import _reach

    def broken(param: torch.Tensor) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(_reach, "root_of_parameter", broken)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(batch()).sum().backward()
    before = model.head[1].weight.detach().clone()
    with pytest.warns(gradguard.InternalCheckWarning, match="optimizer step.*KeyError"):
        optimizer.step()
    assert not torch.equal(model.head[1].weight, before)


def test_allow_in_one_thread_does_not_silence_another(watched: gradguard.WatchHandle) -> None:
    """allow() is per thread: a forward in another thread is still checked."""
    model = Net()
    model.train()
    seen: list[str] = []

    def other() -> None:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            model(batch())
        seen.extend(type(w.message).__name__ for w in caught)

    with gradguard.allow("train-mode-without-grad"):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == ["TrainModeWithoutGradWarning"]


class _StepsAtCollection:
    """In a cycle with an optimizer; its finaliser steps it as the collector frees both."""

    kept: ClassVar[list[torch.optim.Optimizer]] = []

    def __init__(self, optimizer: torch.optim.Optimizer, keep: bool) -> None:
        self.optimizer = optimizer
        self.keep = keep
        self.stepped = False
        optimizer.helper = self  # type: ignore[attr-defined]

    def __del__(self) -> None:
        self.optimizer.step()  # after the collector cleared the weak references to it
        if self.keep:
            _StepsAtCollection.kept.append(self.optimizer)  # brought back to life


@pytest.mark.parametrize("freed", ["refcount", "collected", "resurrected"])
def test_a_freed_optimizer_leaves_no_view_of_it_behind(
    watched: gradguard.WatchHandle, freed: str
) -> None:
    """The step hook's view goes with its optimizer, however freed: its address may be reused.

    The hook's fast path trusts the view cached for an address to be that of the optimizer
    living there; a finaliser stepping the optimizer while the collector frees it makes a view
    after the collector has cleared the weak references, which must go too.
    """
    model = Net().train()
    model(batch()).sum().backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    optimizer.step()
    assert list(_optimizer.optimizer_cache) == [id(optimizer)]
    if freed != "refcount":
        _StepsAtCollection(optimizer, keep=freed == "resurrected")
    del optimizer
    gc.collect()
    views = list(_optimizer.optimizer_cache.values())
    if freed == "resurrected":
        [alive] = _StepsAtCollection.kept
        _StepsAtCollection.kept.clear()
        del alive.helper  # type: ignore[attr-defined]
        alive.step()
        assert [view.ref() for view in _optimizer.optimizer_cache.values()] == [alive]
        del alive
        gc.collect()
        views = list(_optimizer.optimizer_cache.values())
    assert views == []
    assert gradguard.findings() == []


def test_a_view_stored_as_the_watchdog_was_removed_is_not_trusted_by_the_next_one() -> None:
    """A step that made its view while another thread removed the watchdog stores it after the
    cache was cleared; the next watch() makes its own (the modules may have changed unseen)."""
    with gradguard.watch():
        model = Net().train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        model(batch()).sum().backward()
        late = _optimizer._view_of(optimizer)
    _optimizer.optimizer_cache[id(optimizer)] = late  # the late store, as unwatch() finished
    with gradguard.watch():
        optimizer.step()
        assert _optimizer.optimizer_cache[id(optimizer)].roots is not late.roots


def _two_group_training() -> tuple[nn.Module, list[nn.Parameter], torch.optim.Optimizer]:
    """A backbone of four parameters and a head of one, each its own param group."""
    backbone = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    head = nn.Linear(4, 1, bias=False)
    model = nn.Sequential(backbone, head).train()
    optimizer = torch.optim.SGD(
        [{"params": backbone.parameters()}, {"params": head.parameters()}], lr=0.1
    )
    return model, [*backbone.parameters(), *head.parameters()], optimizer


def _grads_on(model: nn.Module, params: list[nn.Parameter]) -> None:
    for param in model.parameters():
        param.grad = None
    for param in params:
        param.grad = torch.ones_like(param)


def _step_interleaved(pause_line: int | None) -> tuple[set[int], list[BaseException]]:
    """One thread's step paused at ``pause_line`` of the step hook's module while another steps.

    The first step finds the gradient at the backbone's last parameter; while it is paused, the
    gradients move to the head and a second thread steps. Returns the lines the first step ran
    there and what any step (both threads', then two more) raised.
    """
    model, params, optimizer = _two_group_training()
    _grads_on(model, params)
    optimizer.step()  # the step hook's view is made
    _grads_on(model, [params[3]])
    hook_file = _optimizer.__file__
    seen: set[int] = set()
    paused, resume = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def line_by_line(frame: types.FrameType, event: str, arg: object) -> object:
        if frame.f_code.co_filename != hook_file:
            return None

        def on_line(frame: types.FrameType, event: str, arg: object) -> object:
            if event == "line":
                seen.add(frame.f_lineno)
                if frame.f_lineno == pause_line and not paused.is_set():
                    paused.set()
                    resume.wait(10)
            return on_line

        return on_line

    def step(traced: bool) -> None:
        if traced:
            sys.settrace(line_by_line)
        try:
            optimizer.step()
        except BaseException as error:
            raised.append(error)
        finally:
            sys.settrace(None)

    first = threading.Thread(target=step, args=(True,))
    first.start()
    deadline = time.monotonic() + 10
    while first.is_alive() and not paused.wait(0.001) and time.monotonic() < deadline:
        pass  # the first step pauses at pause_line, or ends without reaching it
    if paused.is_set():
        _grads_on(model, [params[4]])
        second = threading.Thread(target=step, args=(False,))
        second.start()
        second.join(10)
    resume.set()
    first.join(10)
    step(traced=False)
    _grads_on(model, [params[4]])
    step(traced=False)
    return seen, raised


def test_steps_of_one_optimizer_in_two_threads_leave_every_next_step_working(
    watched: gradguard.WatchHandle,
) -> None:
    """Another thread's step landing anywhere in a step's hook never breaks a later step."""
    lines, raised = _step_interleaved(None)
    assert lines and raised == []
    for line in sorted(lines):
        _seen, raised = _step_interleaved(line)
        assert raised == [], f"paused at {_optimizer.__file__}:{line}"
    assert gradguard.findings() == []


def _free_paused_while_unwatching(code: types.CodeType, pause_line: int | None) -> set[int]:
    """Free a stepped model and optimizer in a thread paused at ``pause_line`` of ``code``.

    While it is paused there (in a weak reference's callback), the main thread calls unwatch().
    Returns the lines of ``code`` the thread ran.
    """
    gradguard.watch()
    model = Net().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    model(batch()).sum().backward()
    optimizer.step()
    held: list[object] = [model, optimizer, nn.Linear(2, 2)]  # built since: not resolved yet
    del model, optimizer
    seen: set[int] = set()
    paused, resume = threading.Event(), threading.Event()

    def line_by_line(frame: types.FrameType, event: str, arg: object) -> object:
        if frame.f_code is not code:
            return None

        def on_line(frame: types.FrameType, event: str, arg: object) -> object:
            if event == "line":
                seen.add(frame.f_lineno)
                if frame.f_lineno == pause_line and not paused.is_set():
                    paused.set()
                    resume.wait(10)
            return on_line

        return on_line

    def free() -> None:
        sys.settrace(line_by_line)
        try:
            held.clear()
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=free)
    thread.start()
    deadline = time.monotonic() + 10
    while thread.is_alive() and not paused.wait(0.001) and time.monotonic() < deadline:
        pass
    gradguard.unwatch()
    resume.set()
    thread.join(10)
    return seen


@pytest.mark.parametrize(
    "callback",
    [_optimizer._forget_optimizer, _reach._forget_model, _reach._forget_parameter, _built._forget],
    ids=lambda callback: callback.__name__,
)
def test_objects_freed_in_a_thread_while_unwatching_raise_nothing(
    monkeypatch: pytest.MonkeyPatch, callback: types.FunctionType
) -> None:
    """unwatch() landing anywhere in the callback of a model or optimizer freed elsewhere."""
    raised: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda hook: raised.append(hook.exc_value))
    lines = _free_paused_while_unwatching(callback.__code__, None)
    assert lines and raised == []
    for line in sorted(lines):
        _free_paused_while_unwatching(callback.__code__, line)
        assert raised == [], f"paused at {callback.__code__.co_filename}:{line}"


def test_compiled_model_compiles_fullgraph_without_recompiling(
    watched: gradguard.WatchHandle,
) -> None:
    """A watched model compiles with fullgraph=True and is not recompiled because of the hooks."""
    import torch._dynamo

    torch._dynamo.reset()
    model = Net()
    model.eval()
    assert model in _watchdog.known_models()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = batch()
    with torch.no_grad():
        expected = model(x)
        with torch._dynamo.config.patch(error_on_recompile=True):
            first = compiled(x)
            second = compiled(x)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert gradguard.findings() == []
    torch._dynamo.reset()


def test_export_of_watched_models_runs_as_unwatched_and_reports_after() -> None:
    """torch.export of watched models (strict): the unwatched graph; a finding waits for after."""
    model, trained = Net().eval(), Net().train()
    unwatched = str(torch.export.export(model, (batch(),)).graph)
    with gradguard.watch(strict=True):
        model.eval()
        trained.train()
        line = here() + 1
        model(batch())  # a graph built in eval and dropped: GG001 waits for a safe point
        gc.collect()
        exported = torch.export.export(model, (batch(),))
        with torch.no_grad():
            torch.export.export(trained, (batch(),))  # traced, not run in training mode
        with pytest.raises(gradguard.GradGuardError, match="GG001"):
            _watchdog.flush()
    assert str(exported.graph) == unwatched
    assert codes() == [("GG001", line)]


def test_findings_channel_is_shared(watched: gradguard.WatchHandle) -> None:
    """Watchdog findings land in gradguard.findings() with the public warning classes."""
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.warns(gradguard.StepWithoutGradientsWarning):
        optimizer.step()
    [finding] = gradguard.findings()
    assert finding.check == "step-without-gradients"
    assert _findings.CHECKS[finding.check] == finding.code


def test_warning_turned_error_by_user_filter_is_not_an_internal_error(
    watched: gradguard.WatchHandle,
) -> None:
    """With warnings as errors, the finding's own class is raised, not InternalCheckWarning."""
    model = Net()
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad(), pytest.raises(gradguard.TrainModeWithoutGradWarning):
            model(batch())
    assert [f.code for f in gradguard.findings()] == ["GG002"]


def test_set_grad_enabled_as_decorator_is_not_blamed(watched: gradguard.WatchHandle) -> None:
    """@torch.set_grad_enabled(False) switches only inside the function: not a bare disable."""

    @torch.set_grad_enabled(False)
    def predict(model: nn.Module) -> torch.Tensor:
        return model(batch())

    assert torch.is_grad_enabled()
    model = Net()
    model.train()
    with pytest.warns(gradguard.TrainModeWithoutGradWarning) as caught:
        predict(model)
    assert "set_grad_enabled(False) at" not in str(caught[0].message)


@pytest.mark.parametrize("deep", [False, True])
def test_compiled_training_step_with_watchdog_does_not_recompile(deep: bool) -> None:
    """A compiled training-mode forward (fullgraph) under watch(deep=...) compiles once."""
    import torch._dynamo

    torch._dynamo.reset()
    model = Net()
    with gradguard.watch(deep=deep):
        model.train()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(3):
                optimizer.zero_grad()
                compiled(batch()).sum().backward()
                optimizer.step()
    assert gradguard.findings() == []
    torch._dynamo.reset()


def test_self_referencing_model_is_not_kept_alive() -> None:
    """A model reachable from its own attributes (Lightning, via its trainer) is freed."""

    class Owned(Net):
        def __init__(self) -> None:
            super().__init__()
            self.owner = {"model": self}

    with gradguard.watch(deep=True):
        model = Owned()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        model.train()
        model(batch()).sum().backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            model(batch())
        ref = weakref.ref(model)
        del model, optimizer
        gc.collect()
        assert ref() is None


def test_strict_close_raises_for_graph_still_alive() -> None:
    """Under watch(strict=True), leaving with an unused eval graph still alive raises GG001."""
    model = Net()
    with pytest.raises(gradguard.GradGuardError) as raised, gradguard.watch(strict=True):
        model.eval()
        out = model(batch())
    assert raised.value.finding.code == "GG001"
    assert not _watchdog.is_watching()
    del out


def test_strict_close_never_replaces_the_user_exception() -> None:
    """An exception leaving a strict watch block is the one that propagates, not a finding."""
    model = Net()
    with pytest.raises(KeyError, match="user"), gradguard.watch(strict=True):
        model.eval()
        out = model(batch())
        raise KeyError("user")
    assert not _watchdog.is_watching()
    del out


def test_scopes_keep_their_fast_path_while_watching(watched: gradguard.WatchHandle) -> None:
    """The patched train() still counts as the default one: scopes write flags directly."""
    model = Net()
    model.features[1].eval()
    with gradguard.evaluating(model):
        assert not any(m.training for m in model.modules())
    assert _state.tree_of((model,)).all_plain
    assert [m.training for m in model.modules()] == [
        True,
        True,
        True,
        False,
        True,
        True,
        True,
        True,
    ]
    assert model in _watchdog.known_models()


def test_optimizer_checks_silent_under_allow(watched: gradguard.WatchHandle) -> None:
    """allow('eval-mode-training', 'step-without-gradients') silences GG004 and GG005."""
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.eval()
    with gradguard.allow("eval-mode-training", "step-without-gradients"):
        optimizer.step()
        model(batch()).sum().backward()
        optimizer.step()
    assert gradguard.findings() == []


def test_threads_are_checked_independently(watched: gradguard.WatchHandle) -> None:
    """A correct evaluation thread and a faulty one run together: only the faulty one is found."""
    good, bad = Net(), Net()
    good.eval()
    bad.train()
    barrier = threading.Barrier(2)
    lines: list[int] = []

    def evaluate(model: nn.Module) -> None:
        barrier.wait()
        for _ in range(20):
            with torch.no_grad():
                lines.append(here() + 1)
                model(batch())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradguard.TrainModeWithoutGradWarning)
        threads = [threading.Thread(target=evaluate, args=(m,)) for m in (good, bad)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    [finding] = gradguard.findings()
    assert (finding.code, finding.lineno, finding.count) == ("GG002", lines[0], 20)
    assert finding.message.startswith("Net is in training mode")


def test_copied_model_is_watched_and_leaves_no_hook_after_unwatch() -> None:
    """A deepcopy of a watched model (a DQN target network) is watched, and unhooked after."""
    import copy

    policy = Net()
    with gradguard.watch():
        policy.train()
        target = copy.deepcopy(policy)
        with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.no_grad():
            target(batch())
        assert target in _watchdog.known_models()
        late_copy = copy.deepcopy(policy)
    late_copy(batch())
    for model in (policy, target, late_copy):
        assert not model._forward_pre_hooks and not model._forward_hooks


def test_flush_reports_freed_graphs_at_once(watched: gradguard.WatchHandle) -> None:
    """flush() reports a graph freed unused without waiting for the next forward."""
    model = Net()
    model.eval()
    line = here() + 1
    model(batch())
    gc.collect()
    assert gradguard.findings() == []
    with pytest.warns(gradguard.GraphInInferenceWarning):
        _watchdog.flush()
    assert [(f.code, f.lineno) for f in gradguard.findings()] == [("GG001", line)]


def test_compiled_code_may_switch_gradients_while_watching(watched: gradguard.WatchHandle) -> None:
    """torch.set_grad_enabled inside a fullgraph-compiled function still compiles while watching."""
    import torch._dynamo

    torch._dynamo.reset()
    layer = nn.Linear(8, 8)

    @torch.compile(backend="eager", fullgraph=True)
    def features(x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(False):
            y = layer(x)
        return y * 2

    assert torch.set_grad_enabled is torch.autograd.grad_mode.set_grad_enabled
    assert not features(batch()).requires_grad
    torch._dynamo.reset()


class Interruptible(Net):
    """A Net whose forward is interrupted (Ctrl-C) while ``interrupt`` is set."""

    interrupt = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interrupt:
            raise KeyboardInterrupt
        return super().forward(x)


def test_keyboard_interrupt_in_a_forward_does_not_blind_the_thread(
    watched: gradguard.WatchHandle,
) -> None:
    """A Ctrl-C caught inside a watched forward: the next forward is still checked (GG002)."""
    model = Interruptible()
    model.train()
    model.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        model(batch())
    model.interrupt = False
    with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.no_grad():
        line = here() + 1
        model(batch())
    assert codes() == [("GG002", line)]


class EndArming(Net):
    """A Net that, as its forward returns, arms a Ctrl-C for the next Python frame entered."""

    armed: ClassVar[list[bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        self.armed.append(True)
        return out


def _interrupt_at_next_frame(frame: types.FrameType, event: str, arg: object) -> None:
    # CPython runs signal handlers (KeyboardInterrupt) where a Python frame starts: a Ctrl-C that
    # arrives as a forward returns is raised in the first frame entered after it.
    if event == "call" and EndArming.armed:
        EndArming.armed.clear()
        raise KeyboardInterrupt


def test_keyboard_interrupt_as_a_deep_first_call_ends_does_not_blind_the_thread() -> None:
    """deep=True: a Ctrl-C raised just as a model's first forward returns, at the next Python
    frame entered, leaves the thread watched: the next model's first call is checked (GG002)."""
    first, other = EndArming().eval(), Net()  # built before watch(): only deep mode sees them
    with gradguard.watch(deep=True):
        with torch.no_grad():
            previous = sys.gettrace()
            sys.settrace(_interrupt_at_next_frame)
            try:
                first(batch())
            except KeyboardInterrupt:
                pass
            finally:  # disarmed before the next frame (no_grad's __exit__) is entered
                sys.settrace(previous)
                EndArming.armed.clear()
        assert torch.is_grad_enabled()
        with pytest.warns(gradguard.TrainModeWithoutGradWarning), torch.no_grad():
            line = here() + 1
            other(batch())
    assert codes() == [("GG002", line)]
