"""gradguard.testing: assert_no_holds(), leaves_nothing() and the gradguard_no_holds fixture."""

from __future__ import annotations

import pytest
import torch

import gradguard
from gradguard.testing import assert_no_holds, leaves_nothing
from tests.helpers import Net


def test_passes_when_nothing_is_left() -> None:
    """After closed scopes of every kind nothing is reported."""
    net = Net()
    with gradguard.evaluating(net), gradguard.frozen(net, eval=True), gradguard.allow("GG002"):
        pass
    assert_no_holds()


def test_reports_an_open_evaluating_scope_and_what_it_holds() -> None:
    """An evaluating() entered and not exited: held tree, GG001 watch, open scope, grad."""
    net = Net()
    scope = gradguard.evaluating(net)
    scope.__enter__()
    try:
        with pytest.raises(AssertionError) as raised:
            assert_no_holds()
        message = str(raised.value)
        assert "1 module tree(s) still held in eval" in message
        assert "still watched for GG001 by an open scope: Net" in message
        assert "1 gradguard scope(s) still open in this thread" in message
        assert "gradients are disabled in this thread, expected enabled" in message
    finally:
        scope.__exit__(None, None, None)
    assert_no_holds()


def test_reports_frozen_parameters_and_silenced_checks() -> None:
    """frozen() and allow() left open are named; grad_enabled=None skips the grad check."""
    net = Net()
    frozen = gradguard.frozen(net)
    allowed = gradguard.allow("train-mode-without-grad")
    frozen.__enter__()
    allowed.__enter__()
    try:
        with pytest.raises(AssertionError, match="parameter\\(s\\) still held") as raised:
            assert_no_holds(grad_enabled=None)
        assert "checks still silenced in this thread: train-mode-without-grad" in str(raised.value)
    finally:
        allowed.__exit__(None, None, None)
        frozen.__exit__(None, None, None)
    assert_no_holds()


def test_grad_mode_is_checked_against_the_expected_one() -> None:
    """grad_enabled=False expects gradients off in this thread."""
    with torch.no_grad():
        assert_no_holds(grad_enabled=False)
    with pytest.raises(AssertionError, match="gradients are enabled in this thread"):
        assert_no_holds(grad_enabled=False)


def test_leaves_nothing_fails_for_a_block_that_leaves_a_scope_open() -> None:
    """leaves_nothing() raises when its block leaves a scope open."""
    net = Net()
    scope = gradguard.evaluating(net, mode="grad")
    with pytest.raises(AssertionError, match="still held in eval"), leaves_nothing():
        scope.__enter__()
    scope.__exit__(None, None, None)
    with leaves_nothing(), gradguard.evaluating(net):
        pass


def test_fixture_fails_a_test_that_leaves_a_scope_open(pytester: pytest.Pytester) -> None:
    """The gradguard_no_holds fixture errors the leaking test and passes the clean one."""
    pytester.makepyfile(
        """
        import torch
        import gradguard

        pytest_plugins = ["gradguard.testing"]
        model = torch.nn.Linear(2, 2)

        def test_clean(gradguard_no_holds):
            with gradguard.evaluating(model):
                pass

        def test_leaky(gradguard_no_holds):
            gradguard.evaluating(model).__enter__()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*gradguard left state behind: 1 module tree(s) still held*"])
