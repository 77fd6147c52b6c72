"""The pytest plugin, exercised on real test suites run by pytester."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import gradguard
from gradguard import _watchdog

# The inner suites run in this process: their findings must reach their own warning capture.
pytestmark = pytest.mark.filterwarnings("always::gradguard.GradGuardWarning")
PREAMBLE = """\
import pytest
import torch
import gradguard

model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout())
"""

SCOPE_MISTAKE_TESTS = (
    PREAMBLE
    + """
def test_switches_back_to_train_inside_scope():
    with gradguard.evaluating(model):
        model(torch.randn(2, 4))
        model.train()

def test_clean_evaluation():
    with gradguard.evaluating(model):
        assert model(torch.randn(2, 4)).requires_grad is False
"""
)


@pytest.fixture(autouse=True)
def _isolated_channel() -> Iterator[None]:
    """Each inner suite starts with an empty findings channel and must leave the state as found."""
    gradguard.clear_findings()
    yield
    gradguard.clear_findings()
    assert torch.is_grad_enabled()
    assert not torch.is_inference_mode_enabled()
    assert not _watchdog.is_watching()


def test_finding_fails_the_test_that_caused_it_with_its_message(pytester: pytest.Pytester) -> None:
    """With --gradguard the test that made a finding fails with the finding's text; others pass."""
    pytester.makepyfile(test_scope=SCOPE_MISTAKE_TESTS)
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*FAILED test_scope.py::test_switches_back_to_train_inside_scope*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*gradguard: test_scope.py::test_switches_back_to_train_inside_scope caused:",
            "*test_scope.py:8: GG006 scope-state-changed: code inside evaluating(Sequential) "
            "switched 4 module(s) back to training mode "
            "(BatchNorm1d, Dropout, Linear, Sequential)*",
            "Fix: move model.train() after the with-block*",
        ]
    )


def test_without_the_option_the_plugin_does_nothing(pytester: pytest.Pytester) -> None:
    """Not enabled: no watchdog, no per-test hooks, and findings are only warnings."""
    pytester.makepyfile(
        test_scope=SCOPE_MISTAKE_TESTS
        + """
def test_plugin_is_idle(request):
    from gradguard import _watchdog
    assert request.config.pluginmanager.has_plugin("gradguard")
    assert not request.config.pluginmanager.has_plugin("gradguard-watchdog")
    assert not _watchdog.is_watching()
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.no_fnmatch_line("*gradguard: test_scope.py*")


def test_ini_key_enables_the_plugin(pytester: pytest.Pytester) -> None:
    """`gradguard = true` in the ini file does what --gradguard does."""
    pytester.makeini("[pytest]\ngradguard = true\n")
    pytester.makepyfile(test_scope=SCOPE_MISTAKE_TESTS)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*GG006 scope-state-changed*"])


def test_watchdog_is_installed_during_tests_and_removed_after(pytester: pytest.Pytester) -> None:
    """Every test runs with the watchdog installed; the session removes it at the end."""
    pytester.makepyfile(
        """
        from gradguard import _watchdog

        def test_watching():
            assert _watchdog.is_watching()

        def test_reinstalled_after_a_test_unwatches():
            _watchdog.unwatch()

        def test_watching_again():
            assert _watchdog.is_watching()
        """
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(passed=3)
    assert not _watchdog.is_watching()


@pytest.mark.parametrize("form", ["option", "ini"])
def test_warn_mode_lists_findings_without_failing(pytester: pytest.Pytester, form: str) -> None:
    """--gradguard-warn (or ini gradguard_warn) lists each finding by test and fails nothing,
    even where the project's filters make warnings errors."""
    pytester.makepyfile(test_scope=SCOPE_MISTAKE_TESTS)
    if form == "ini":
        pytester.makeini("[pytest]\ngradguard_warn = true\nfilterwarnings = error\n")
        result = pytester.runpytest()
    else:
        result = pytester.runpytest("--gradguard-warn")
    result.assert_outcomes(passed=2, warnings=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*= gradguard =*",
            "test_scope.py::test_switches_back_to_train_inside_scope:",
            "*test_scope.py:8: GG006 scope-state-changed*",
        ]
    )


def test_allow_marker_silences_checks_for_that_test_only(pytester: pytest.Pytester) -> None:
    """@pytest.mark.gradguard_allow(...) lets one test make the finding; its twin still fails."""
    pytester.makepyfile(
        PREAMBLE
        + """
@pytest.mark.gradguard_allow("scope-state-changed")
def test_allowed():
    with gradguard.evaluating(model):
        model.train()

@pytest.mark.gradguard_allow("GG001")
def test_allowed_something_else():
    with gradguard.evaluating(model):
        model.train()
"""
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAILED *::test_allowed_something_else*"])


def test_allow_marker_covers_work_the_test_runs_in_a_worker_thread(
    pytester: pytest.Pytester,
) -> None:
    """The marker covers the test whatever thread does the work; an unmarked twin still fails."""
    pytester.makepyfile(
        PREAMBLE
        + """
import threading

def mc_dropout_in_a_thread():
    def work():
        model.train()
        with torch.no_grad():
            model(torch.randn(2, 4))  # Monte-Carlo dropout: training mode on purpose
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()

@pytest.mark.gradguard_allow("train-mode-without-grad")
def test_allowed_in_a_thread():
    mc_dropout_in_a_thread()

def test_not_allowed_in_a_thread():
    mc_dropout_in_a_thread()
"""
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAILED *::test_not_allowed_in_a_thread*"])


def test_allow_marker_with_an_unknown_check_errors_listing_valid_names(
    pytester: pytest.Pytester,
) -> None:
    """A misspelt check in the marker fails that test with the list of valid names."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gradguard_allow("graph-in-inferance")
        def test_typo():
            pass
        """
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.gradguard_allow: allow() got an unknown check 'graph-in-inferance'; "
            "valid names are 'graph-in-inference' (GG001)*"
        ]
    )


def test_marker_and_ini_keys_pass_strict_markers_and_strict_config(
    pytester: pytest.Pytester,
) -> None:
    """Users of --strict-markers and --strict-config can use the marker and the ini keys."""
    pytester.makeini("[pytest]\ngradguard = true\ngradguard_warn = false\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gradguard_allow("train-mode-without-grad")
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "--strict-config")
    result.assert_outcomes(passed=1)


def test_test_leaving_gradients_disabled_fails_by_name_and_is_restored(
    pytester: pytest.Pytester,
) -> None:
    """set_grad_enabled(False) never undone fails that test; the next test has gradients again."""
    pytester.makepyfile(
        """
        import torch

        def test_validation_forgets_to_reenable():
            torch.set_grad_enabled(False)

        def test_next_test_trains():
            assert torch.is_grad_enabled()
        """
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*gradguard: test_test_leaving_gradients_disabled_fails_by_name_and_is_restored.py"
            "::test_validation_forgets_to_reenable left gradients disabled (by "
            "torch.set_grad_enabled(False) at *test_test_leaving_gradients_disabled_fails_by_name"
            "_and_is_restored.py:4)*enabled again",
        ]
    )


def test_test_leaving_inference_mode_on_fails_by_name_and_is_restored(
    pytester: pytest.Pytester,
) -> None:
    """An inference_mode entered and never exited fails that test; it is switched off again."""
    pytester.makepyfile(
        """
        import torch

        LEAKED = []

        def test_enters_inference_mode_for_good():
            context = torch.inference_mode()
            context.__enter__()
            LEAKED.append(context)

        def test_next_test_is_not_in_inference_mode():
            assert not torch.is_inference_mode_enabled()
            assert torch.is_grad_enabled()
        """
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["*::test_enters_inference_mode_for_good left inference mode on*switched off again"]
    )


def test_test_leaving_a_known_model_switched_fails_and_is_restored(
    pytester: pytest.Pytester,
) -> None:
    """A model a scope knows about, left in eval by a test, fails it; every flag is put back."""
    pytester.makepyfile(
        PREAMBLE
        + """
model[1].eval()  # a frozen BatchNorm: its own flag must come back too
with gradguard.evaluating(model):
    pass

def test_leaves_model_in_eval():
    model.eval()

def test_model_is_back_in_training():
    assert model.training and model[0].training and model[2].training
    assert not model[1].training
"""
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*::test_leaves_model_in_eval left model Sequential switched: 3 of its module(s) "
            "changed training mode (first: Sequential, which was in training mode)*",
        ]
    )


def test_leaked_scope_is_named_and_released_so_later_tests_are_right(
    pytester: pytest.Pytester,
) -> None:
    """A test leaving evaluating() open fails naming it; the next test's own scope works."""
    pytester.makepyfile(
        PREAMBLE
        + """
model[1].eval()  # a frozen BatchNorm: its own flag must come back too

def test_enters_and_never_exits():
    gradguard.evaluating(model).__enter__()
    model(torch.randn(2, 4))

def test_next_evaluates_correctly():
    assert model.training and not model[1].training
    with gradguard.evaluating(model):
        assert not any(m.training for m in model.modules())
        model(torch.randn(2, 4))
    assert model.training and not model[1].training
    assert torch.is_grad_enabled()
    model(torch.randn(2, 4)).sum().backward()  # no scope's graph check may still be pushed
"""
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*::test_enters_and_never_exits left a gradguard scope holding Sequential in eval "
            "open (evaluating()/inference_fn entered and never exited); it was released*",
        ]
    )
    result.stdout.no_fnmatch_line("*GG006*")


def test_a_failing_test_that_leaks_is_restored_and_says_so(pytester: pytest.Pytester) -> None:
    """A test that fails on its own still gets its leak undone, noted in its report."""
    pytester.makepyfile(
        """
        import torch

        def test_fails_with_gradients_off():
            torch.set_grad_enabled(False)
            assert False, "own failure"

        def test_after():
            assert torch.is_grad_enabled()
        """
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: own failure*",
            "*Captured gradguard call*",
            "*::test_fails_with_gradients_off also left gradients disabled*",
        ]
    )


def test_fixture_leaking_grad_mode_is_reported_at_teardown(pytester: pytest.Pytester) -> None:
    """A fixture that disables gradients and never restores them is reported for its test."""
    pytester.makepyfile(
        """
        import pytest
        import torch

        @pytest.fixture
        def evaluation_mode():
            torch.set_grad_enabled(False)
            yield

        @pytest.fixture
        def tidy_evaluation_mode():
            with torch.no_grad():
                yield

        def test_uses_leaky_fixture(evaluation_mode):
            assert not torch.is_grad_enabled()

        def test_uses_tidy_fixture(tidy_evaluation_mode):
            assert not torch.is_grad_enabled()

        def test_after():
            assert torch.is_grad_enabled()
        """
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_uses_leaky_fixture*",
            "*gradguard: the fixtures of *::test_uses_leaky_fixture left gradients disabled*",
        ]
    )


def test_finding_in_a_fixture_errors_the_test_at_setup(pytester: pytest.Pytester) -> None:
    """A finding made while setting up a fixture is reported as that test's setup error."""
    pytester.makepyfile(
        PREAMBLE
        + """
@pytest.fixture
def calibrated():
    with gradguard.evaluating(model):
        model.train()
    return model

def test_uses_it(calibrated):
    pass
"""
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_uses_it*", "*GG006*"])


@pytest.mark.parametrize("name", ["gradguard.pytest_plugin", "gradguard"])
def test_plugin_loads_with_dash_p_when_autoload_is_disabled(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """With PYTEST_DISABLE_PLUGIN_AUTOLOAD=1, `-p gradguard.pytest_plugin` brings it back."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_scope=SCOPE_MISTAKE_TESTS)
    unknown = pytester.runpytest("--gradguard")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    unknown.stderr.fnmatch_lines(["*unrecognized arguments: --gradguard*"])
    result = pytester.runpytest("-p", name, "--gradguard")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*GG006 scope-state-changed*"])


def test_plugin_can_be_disabled_by_name(pytester: pytest.Pytester) -> None:
    """`-p no:gradguard` removes the plugin and its options."""
    pytester.makepyfile(test_scope=SCOPE_MISTAKE_TESTS)
    result = pytester.runpytest("-p", "no:gradguard", "--gradguard")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


WATCHDOG_TESTS = """\
import pytest
import torch

@pytest.fixture(scope="module")
def model():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    return net.to("cpu")

def test_validation_without_eval(model):
    with torch.no_grad():
        model(torch.randn(4, 4))

def test_inference_without_no_grad(model):
    model.eval()
    prediction = model(torch.randn(4, 4)).argmax(dim=1)
    model.train()
    assert prediction.shape == (4,)

@pytest.mark.gradguard_allow("graph-in-inference")
def test_saliency_needs_the_graph_but_drops_it(model):
    model.eval()
    model(torch.randn(4, 4))
    model.train()

def test_correct_evaluation(model):
    model.eval()
    with torch.no_grad():
        model(torch.randn(4, 4))
    model.train()
"""


# What the plugin says of WATCHDOG_TESTS' two mistakes, each after the test that made it.
WATCHDOG_GG002 = [
    "*gradguard: test_loop.py::test_validation_without_eval caused:",
    "*test_loop.py:11: GG002 train-mode-without-grad: Sequential is in training mode*",
]
WATCHDOG_GG001 = [
    "*gradguard: test_loop.py::test_inference_without_no_grad caused:",
    "*test_loop.py:15: GG001 graph-in-inference: Sequential is in eval mode*",
]


def test_watchdog_findings_fail_the_test_that_made_them(pytester: pytest.Pytester) -> None:
    """GG002 and GG001 from the watchdog fail exactly the tests whose code made them."""
    pytester.makepyfile(test_loop=WATCHDOG_TESTS)
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(failed=2, passed=2)
    result.stdout.fnmatch_lines(WATCHDOG_GG002)
    result.stdout.fnmatch_lines(WATCHDOG_GG001)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_loop.py::test_validation_without_eval - *",
            "FAILED test_loop.py::test_inference_without_no_grad - *",
        ]
    )


def test_findings_keep_the_short_form_where_warnings_are_errors(
    pytester: pytest.Pytester,
) -> None:
    """A project whose pytest turns warnings into errors gets the plugin's message, not a
    traceback through gradguard's internals, and each finding is told once."""
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(test_loop=WATCHDOG_TESTS)
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(failed=2, passed=2)
    result.stdout.fnmatch_lines(WATCHDOG_GG002 + WATCHDOG_GG001)
    output = result.stdout.str()
    assert "_watchdog" not in output and "_findings.py" not in output
    assert "TrainModeWithoutGradWarning" not in output
    assert "warnings summary" not in output


def test_model_seen_by_the_watchdog_left_in_eval_fails_and_is_restored(
    pytester: pytest.Pytester,
) -> None:
    """A fixture model moved with .to() is watched; a test leaving it in eval fails by name."""
    pytester.makepyfile(
        """
        import pytest
        import torch

        @pytest.fixture(scope="module")
        def model():
            return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout()).to("cpu")

        def test_forgets_to_switch_back(model):
            model.eval()

        def test_trains(model):
            assert model.training
            assert model[1].training
        """
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["*::test_forgets_to_switch_back left model Sequential switched: 3 of its module(s)*"]
    )


def test_graph_still_alive_at_the_end_fails_the_session(pytester: pytest.Pytester) -> None:
    """An unused inference graph kept alive past the last test is reported when the run ends."""
    pytester.makepyfile(
        """
        import torch

        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout()).to("cpu")
        KEPT = []

        def test_keeps_eval_outputs_with_their_graph():
            model.eval()
            KEPT.append(model(torch.randn(2, 4)))
            model.train()
        """
    )
    result = pytester.runpytest("--gradguard")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*= gradguard =*",
            "(end of session):",
            "*gradguard: after the last test:",
            "*test_graph_still_alive_at_the_end_fails_the_session.py:8: GG001 graph-in-inference:*"
            "still alive and unused*",
        ]
    )
