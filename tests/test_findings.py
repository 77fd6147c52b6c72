"""Tests of the findings channel: warning classes, user's line, once per site, strict, allow()."""

from __future__ import annotations

import sys

import pytest
import torch

import gradguard
from gradguard import (
    GradGuardError,
    GraphInInferenceWarning,
    ScopeStateChangedWarning,
    allow,
    evaluating,
    frozen,
)
from tests.helpers import Net, fine_tuning_net, flags, requires

THIS_FILE = __file__


def line_of(marker: str) -> int:
    """The line number in this file of the line that ends with the comment ``marker``."""
    with open(THIS_FILE) as handle:
        for number, line in enumerate(handle, 1):
            if line.rstrip().endswith(f"# {marker}"):
                return number
    raise AssertionError(f"marker {marker!r} not found")


def test_train_inside_evaluating_warns_once_at_users_line_and_restores() -> None:
    """GG006: model.train() inside a scope is put right and reported at the with-statement."""
    net = fine_tuning_net()
    before = flags(net)
    with pytest.warns(ScopeStateChangedWarning) as record:
        for _ in range(3):
            with evaluating(net):  # gg006-site
                net.train()
                assert net.training  # the body's own call takes effect until the exit
    assert len(record) == 1
    assert record[0].filename == THIS_FILE
    assert record[0].lineno == line_of("gg006-site")
    assert "GG006 scope-state-changed" in str(record[0].message)
    assert "evaluating(Net)" in str(record[0].message)
    assert flags(net) == before
    (finding,) = gradguard.findings()
    assert (finding.code, finding.check, finding.count) == ("GG006", "scope-state-changed", 3)
    assert (finding.filename, finding.lineno) == (THIS_FILE, line_of("gg006-site"))
    assert finding.fix


def test_nested_scope_change_is_put_right_while_outer_scope_is_open() -> None:
    """After an inner scope catches model.train(), the model is in eval again for the outer one."""
    net = Net()
    with evaluating(net):
        with pytest.warns(ScopeStateChangedWarning), evaluating(net):
            net.train()
        assert not any(flags(net))
    assert all(flags(net))


def test_grad_re_enabled_inside_scope_is_reported_and_restored() -> None:
    """GG006: torch.set_grad_enabled(True) left on inside a no_grad scope is reported."""
    net = Net()
    with torch.no_grad():
        with (
            pytest.warns(ScopeStateChangedWarning, match="gradients were re-enabled"),
            evaluating(net),
        ):
            torch.set_grad_enabled(True)
        assert not torch.is_grad_enabled()


def test_frozen_reports_requires_grad_turned_back_on() -> None:
    """GG006 from frozen(): a parameter unfrozen inside is frozen again, then restored."""
    net = Net()
    with (
        pytest.warns(ScopeStateChangedWarning, match="requires_grad=True on 1 parameter"),
        frozen(net),
    ):
        net.head[1].weight.requires_grad_(True)
    assert all(requires(net))


def test_graph_recorded_inside_no_grad_scope_is_reported() -> None:
    """GG001: a graph recorded under enable_grad inside a no_grad scope, at the forward's line."""
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
    x = torch.randn(4, 8)
    with pytest.warns(GraphInInferenceWarning) as record, evaluating(net), torch.enable_grad():
        net(x)  # gg001-site
        net(x)
    assert len(record) == 1
    assert record[0].filename == THIS_FILE
    assert record[0].lineno == line_of("gg001-site")
    assert gradguard.findings()[0].code == "GG001"


def test_graph_finding_points_at_the_call_of_the_users_model() -> None:
    """With the user's own model class, the site is the user's line that ran the held model."""
    net = Net()
    with pytest.warns(GraphInInferenceWarning) as record, evaluating(net), torch.enable_grad():
        net(torch.randn(4, 8))  # users-model-site
    assert record[0].filename == THIS_FILE
    assert record[0].lineno == line_of("users-model-site")
    assert "Net ran forward with gradients turned back on" in str(record[0].message)


def test_no_graph_finding_in_grad_mode_scope() -> None:
    """mode='grad' is for gradients in eval mode (saliency): no finding at all."""
    net = Net()
    x = torch.randn(4, 8, requires_grad=True)
    with evaluating(net, mode="grad"):
        net(x).sum().backward()
    assert x.grad is not None
    assert gradguard.findings() == []


def test_allow_silences_named_check_and_records_nothing() -> None:
    """allow('scope-state-changed') silences GG006 inside it, only inside it."""
    net = Net()
    with allow("scope-state-changed"), evaluating(net):
        net.train()
    assert gradguard.findings() == []
    assert all(flags(net))
    with pytest.warns(ScopeStateChangedWarning), evaluating(net):
        net.train()


def test_allow_accepts_codes_and_works_as_decorator() -> None:
    """allow('GG001') as a decorator silences graph-in-inference for the call."""
    net = Net()

    @allow("GG001")
    def saliency_in_scope() -> None:
        with evaluating(net), torch.enable_grad():
            net(torch.randn(2, 8))

    saliency_in_scope()
    assert gradguard.findings() == []


def test_allow_is_per_thread() -> None:
    """A check allowed in one thread still fires in another."""
    import threading

    net_a, net_b = Net(), Net()
    caught: list[BaseException] = []
    ready, done = threading.Event(), threading.Event()

    def other() -> None:
        ready.wait(10)
        try:
            with evaluating(net_b):
                net_b.train()
        except BaseException as error:  # the warning is raised (filterwarnings=error)
            caught.append(error)
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with allow("scope-state-changed"):
        ready.set()
        done.wait(10)
        with evaluating(net_a):
            net_a.train()
    thread.join()
    assert len(caught) == 1 and isinstance(caught[0], ScopeStateChangedWarning)


@pytest.mark.parametrize("bad", [(), ("no-such-check",), ("GG999",)])
def test_allow_rejects_unknown_checks_with_valid_names(bad: tuple[str, ...]) -> None:
    """allow() with no or an unknown check names the valid ones."""
    with pytest.raises(ValueError, match="graph-in-inference") as info:
        allow(*bad)
    assert "scope-state-changed" in str(info.value)


def test_strict_from_configure_raises_error_carrying_the_finding() -> None:
    """configure(strict=True): the finding is a GradGuardError, and the state is still restored."""
    gradguard.configure(strict=True)
    net = fine_tuning_net()
    before = flags(net)
    with pytest.raises(GradGuardError) as info, evaluating(net):
        net.train()
    assert isinstance(info.value, RuntimeError)
    assert info.value.finding.code == "GG006"
    assert flags(net) == before and torch.is_grad_enabled()


def test_strict_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRADGUARD_STRICT=YES turns findings into errors; configure(strict=False) overrides it."""
    monkeypatch.setenv("GRADGUARD_STRICT", "YES")
    net = Net()
    with pytest.raises(GradGuardError), evaluating(net), torch.enable_grad():
        net(torch.randn(2, 8))
    gradguard.configure(strict=False)
    with pytest.warns(ScopeStateChangedWarning), evaluating(net):
        net.train()


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_invalid_strict_environment_names_variable_and_valid_values(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """An unknown GRADGUARD_STRICT value is an error listing what is valid."""
    monkeypatch.setenv("GRADGUARD_STRICT", value)
    with pytest.raises(ValueError, match="GRADGUARD_STRICT") as info:
        gradguard._config.is_strict()
    assert repr(value) in str(info.value) and "true" in str(info.value) and "off" in str(info.value)


@pytest.mark.parametrize("value", ["", "0", "False", "OFF", "no"])
def test_strict_off_spellings(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Every off spelling, any case, means not strict."""
    monkeypatch.setenv("GRADGUARD_STRICT", value)
    assert gradguard._config.is_strict() is False


def test_configure_rejects_non_bool() -> None:
    """configure(strict='yes') is a TypeError."""
    with pytest.raises(TypeError, match="True, False or None"):
        gradguard.configure(strict="yes")  # type: ignore[arg-type]


def test_strict_finding_does_not_replace_users_exception() -> None:
    """When the body raises, a strict GG006 at exit does not hide the user's own exception."""
    gradguard.configure(strict=True)
    net = Net()
    with pytest.raises(KeyError), evaluating(net):
        net.train()
        raise KeyError("user")
    assert gradguard.findings()[0].code == "GG006"
    assert all(flags(net))


def test_clear_findings_lets_a_site_warn_again() -> None:
    """After clear_findings() the same location warns again."""
    net = Net()
    for _ in range(2):
        with pytest.warns(ScopeStateChangedWarning), evaluating(net):
            net.train()
        assert len(gradguard.findings()) == 1
        gradguard.clear_findings()


def test_import_patches_nothing() -> None:
    """A fresh interpreter importing gradguard leaves torch's Module methods untouched."""
    import subprocess

    code = (
        "import torch, torch.nn as nn; train, call = nn.Module.train, nn.Module.__call__; "
        "step = torch.optim.Optimizer.step; import gradguard; "
        "assert nn.Module.train is train and nn.Module.__call__ is call; "
        "assert torch.optim.Optimizer.step is step; "
        "from torch.nn.modules import module as m; "
        "assert not m._global_forward_hooks and not m._global_forward_pre_hooks; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_plain_import_does_not_import_torch() -> None:
    """`import gradguard` stays cheap: torch is imported only when a name that needs it is used."""
    import subprocess

    code = (
        "import sys, gradguard; assert 'torch' not in sys.modules, 'torch imported'; "
        "gradguard.evaluating; assert 'torch' in sys.modules; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_grad_disabled_inside_grad_mode_scope_is_reported_and_restored() -> None:
    """mode='grad' keeps the grad mode; a set_grad_enabled(False) left inside is put right."""
    net = Net()
    with (
        pytest.warns(ScopeStateChangedWarning, match="gradients were disabled") as record,
        evaluating(net, mode="grad"),
    ):
        torch.set_grad_enabled(False)
    assert torch.is_grad_enabled()
    assert "torch.no_grad()" in str(record[0].message)


def test_grad_disabled_inside_grad_mode_inference_fn_is_reported_and_restored() -> None:
    """inference_fn(mode='grad') also puts back a grad mode its body switched off."""
    net = Net()

    @gradguard.inference_fn(mode="grad")
    def saliency(model: torch.nn.Module, x: torch.Tensor) -> None:
        torch.set_grad_enabled(False)

    with pytest.warns(ScopeStateChangedWarning, match="gradients were disabled"):
        saliency(net, torch.randn(2, 8))
    assert torch.is_grad_enabled()
