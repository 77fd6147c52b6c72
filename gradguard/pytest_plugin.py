"""The gradguard pytest plugin: every test under the watchdog, and no test leaking grad/eval state.

Enabled with ``pytest --gradguard`` (or ``gradguard = true`` in the ini file); until then it only
registers its options, ini keys and the ``gradguard_allow`` marker, imports nothing else and adds no
per-test hook. When enabled:

- the watchdog is installed for the session, and a finding fails the test that caused it (setup,
  call or teardown) with the finding's message; ``--gradguard-warn`` lists findings at the end
  instead of failing;
- a test that leaves gradients disabled, inference mode on, or a model known to gradguard (one a
  scope was entered on, or one the watchdog saw) with a different training flag is reported by name
  as failed, and the state from before the test is put back so later tests are unaffected;
- ``@pytest.mark.gradguard_allow("graph-in-inference", ...)`` allows checks for one test.

Loaded automatically through the ``pytest11`` entry point; where plugin autoload is disabled
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``), load it with ``-p gradguard.pytest_plugin``.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from torch import nn

    from gradguard._findings import Finding

MARKER = "gradguard_allow"
PLUGIN_NAME = "gradguard-watchdog"

# Guards that switch inference mode back off after a test leaked it on. They are kept for the life
# of the process: dropping one would put inference mode back to what it was when it was made.
_inference_off_guards: list[Any] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--gradguard``, ``--gradguard-warn`` and their ini keys (always; cheap)."""
    group = parser.getgroup("gradguard", "gradguard: no_grad/eval mistakes")
    group.addoption(
        "--gradguard",
        action="store_true",
        default=False,
        help="run every test under the gradguard watchdog: a finding, or a test that leaves "
        "gradients off, inference mode on or a known model switched, fails that test",
    )
    group.addoption(
        "--gradguard-warn",
        action="store_true",
        default=False,
        help="like --gradguard, but list findings and leaks at the end instead of failing tests",
    )
    parser.addini(
        "gradguard",
        type="bool",
        default=False,
        help="run every test under the gradguard watchdog (same as --gradguard)",
    )
    parser.addini(
        "gradguard_warn",
        type="bool",
        default=False,
        help="report gradguard findings and leaks instead of failing (same as --gradguard-warn)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; when enabled, install the watchdog and the per-test checks."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*checks): allow these gradguard checks (names like 'graph-in-inference' or "
        "codes like 'GG001') for this test",
    )
    warn = bool(config.getoption("gradguard_warn") or config.getini("gradguard_warn"))
    if warn or config.getoption("gradguard") or config.getini("gradguard"):
        try:
            session = _GradGuardSession(warn=warn)
        except ValueError as error:  # an invalid GRADGUARD_STRICT/GRADGUARD_WATCH
            raise pytest.UsageError(f"gradguard: {error}") from None
        config.pluginmanager.register(session, PLUGIN_NAME)


@dataclass
class _State:
    """What a test must leave as it found it: grad mode, inference mode, known models' flags."""

    grad: bool
    inference: bool
    # (root, [(module, its own training flag)]) for every model gradguard knows about.
    models: list[tuple[weakref.ref[nn.Module], list[tuple[nn.Module, bool]]]] = field(
        default_factory=list
    )
    # How many scopes held each eval hold, and each frozen parameter: a test must not leave
    # one more open than it found.
    holds: dict[int, int] = field(default_factory=dict)
    frozen: dict[int, int] = field(default_factory=dict)


def _known_models() -> list[nn.Module]:
    from gradguard import _state, _watchdog

    roots: dict[int, nn.Module] = {}
    for root in [*_state.known_roots(), *_watchdog.known_models()]:
        roots.setdefault(id(root), root)
    return list(roots.values())


def _capture() -> _State:
    import torch

    from gradguard import _state

    models = [
        (weakref.ref(root), [(module, module.training) for module in root.modules()])
        for root in _known_models()
    ]
    with _state._lock:
        holds = {id(hold): hold.count for hold in _state._holds.values()}
        frozen = {key: entry[0] for key, entry in _state._param_counts.items()}
    return _State(
        torch.is_grad_enabled(),
        torch.is_inference_mode_enabled(),
        models,
        holds,
        frozen,
    )


def _release_leaked_scopes(before: _State) -> list[str]:
    """Close the scopes opened since ``before`` and never exited, as their exits would have.

    Releasing the hold (not writing the flags behind it) is what lets the next test's own
    ``evaluating`` put the model in eval again.
    """
    from gradguard import _scopes, _state

    problems: list[str] = []
    with _state._lock:
        leaked = [
            (hold, hold.count - before.holds.get(id(hold), 0)) for hold in _state._holds.values()
        ]
        params = [
            (entry[2], entry[0] - before.frozen.get(key, 0))
            for key, entry in _state._param_counts.items()
        ]
    leaked = [(hold, extra) for hold, extra in leaked if extra > 0]
    if leaked:
        # Exited as their `with` would have (grad mode, GG001 hook and watch, optimizers too);
        # what is still held after that (another thread's entry) is released behind them.
        _scopes.exit_leaked_entries({id(hold): extra for hold, extra in leaked})
    for hold, extra in leaked:
        names = [type(root).__name__ for ref in hold.tree.root_refs if (root := ref()) is not None]
        with _state._lock:
            still = min(extra, hold.count - before.holds.get(id(hold), 0))
        for _ in range(still):
            _state.release_eval(hold)
        problems.append(
            f"left a gradguard scope holding {', '.join(names) or 'a model'} in eval open "
            "(evaluating()/inference_fn entered and never exited); it was released, putting "
            "back each module's own training flag"
        )
    stuck = [(param, extra) for param, extra in params if extra > 0]
    for param, extra in stuck:
        for _ in range(extra):
            _state.release_frozen(_state.ParamHold((param,)))
    if stuck:
        problems.append(
            f"left gradguard.frozen() open on {len(stuck)} parameter(s) (entered and never "
            "exited); it was released, putting back each parameter's own requires_grad"
        )
    return problems


def _restore_and_describe(before: _State) -> list[str]:
    """Put back what changed since ``before``; say what it was."""
    import torch

    from gradguard import _state, _watchdog

    problems = _release_leaked_scopes(before)
    if torch.is_inference_mode_enabled() and not before.inference:
        guard = torch.inference_mode(False)
        guard.__enter__()
        _inference_off_guards.append(guard)
        problems.append(
            "left inference mode on (a torch.inference_mode() entered and never exited); it was "
            "switched off again"
        )
    grad = torch.is_grad_enabled()
    if grad is not before.grad:
        # While watching, a bare set_grad_enabled(False) is remembered with its line: read it
        # before restoring, which forgets it.
        where = _watchdog.where_grad_disabled() if _watchdog.is_watching() else ""
        torch.set_grad_enabled(before.grad)
        if not grad:
            cause = where or "torch.set_grad_enabled(False) or a no_grad entered and never exited"
            problems.append(f"left gradients disabled ({cause}); they were enabled again")
        elif not before.inference:
            problems.append(
                "left gradients enabled where they were disabled; they were disabled again"
            )
    for root_ref, flags in before.models:
        root = root_ref()
        if root is None:
            continue
        changed = [(module, flag) for module, flag in flags if module.training is not flag]
        if not changed:
            continue
        for module, flag in changed:
            _state._set_training(module, flag)
        module, flag = changed[0]
        state = "training" if flag else "eval"
        problems.append(
            f"left model {type(root).__name__} switched: {len(changed)} of its module(s) changed "
            f"training mode (first: {type(module).__name__}, which was in {state} mode); each "
            "module's own flag was put back. Restore the mode the test found "
            "(or use gradguard.evaluating(model), which does it)"
        )
    return problems


def _finding_counts() -> dict[tuple[str, str, int], int]:
    from gradguard import _findings

    return {(f.code, f.filename, f.lineno): f.count for f in _findings.findings()}


def _new_findings(before: dict[tuple[str, str, int], int]) -> list[Finding]:
    from gradguard import _findings

    fresh = []
    for finding in _findings.findings():
        seen = before.get((finding.code, finding.filename, finding.lineno), 0)
        if finding.count > seen:
            finding.count -= seen
            fresh.append(finding)
    return fresh


def _describe_findings(found: list[Finding]) -> str:
    from gradguard._findings import format_finding

    parts = []
    for finding in found:
        times = "" if finding.count == 1 else f" ({finding.count} times)"
        parts.append(f"{finding.filename}:{finding.lineno}{times}: {format_finding(finding)}")
    return "\n".join(parts)


class _GradGuardSession:
    """The active plugin, registered only when enabled."""

    def __init__(self, *, warn: bool) -> None:
        from gradguard import _watchdog

        self.warn = warn
        self.handle: Any = _watchdog.watch()
        self.reports: list[tuple[str, str]] = []

    # ---------------------------------------------------------------------------------------
    # Per test
    # ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _phase(self, item: pytest.Item) -> Iterator[None]:
        """Run one phase of a test with its allowed checks; fail it for any new finding."""
        from gradguard import _findings, _watchdog

        if not _watchdog.is_watching():
            # The previous test uninstalled it; every test gets the watchdog.
            self.handle = _watchdog.watch()
        checks = item.stash.get(_allowed, None)
        if checks is None:
            # Resolved once, at setup: a bad marker errors the test there, not in every phase.
            item.stash[_allowed] = checks = []
            for marker in item.iter_markers(MARKER):
                try:
                    checks.extend(_findings.resolve_checks(tuple(marker.args)))
                except (TypeError, ValueError) as error:
                    pytest.fail(f"@pytest.mark.{MARKER}: {error}", pytrace=False)
        before = _finding_counts()
        with contextlib.ExitStack() as stack:
            # A project whose filters make warnings errors (``filterwarnings = error``) would get
            # a finding raised inside the code under test, with a traceback through gradguard:
            # the plugin tells each finding itself. Failing the test, it tells it once (not also
            # as a warning); in warn mode the warning stays, counted in pytest's summary line.
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("default" if self.warn else "ignore", _findings.GradGuardWarning)
            if checks:
                # Every thread: the marker covers the test, whatever thread does its work.
                names = tuple(checks)
                _findings.push_allowed_everywhere(names)
                stack.callback(_findings.pop_allowed_everywhere, names)
            yield
            # Graphs freed during this phase are reported at the watchdog's next safe point:
            # make that now, so the finding lands on this test and not on the next one. (No
            # gc.collect() first: it would cost every test milliseconds; a graph freed only by
            # the cycle collector is reported on a later test or at the end of the session.)
            _watchdog.flush()
        found = _new_findings(before)
        if found:
            self._problem(item, f"gradguard: {item.nodeid} caused:\n" + _describe_findings(found))

    def _problem(self, item: pytest.Item, text: str) -> None:
        if self.warn:
            self.reports.append((item.nodeid, text))
        else:
            pytest.fail(text, pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        item.stash[_before_setup] = _capture()
        with self._phase(item):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        before = _capture()
        try:
            with self._phase(item):
                result = yield
        except BaseException:
            problems = _restore_and_describe(before)
            if problems:
                item.add_report_section(
                    "call", "gradguard", f"{item.nodeid} also " + "; ".join(problems)
                )
            raise
        problems = _restore_and_describe(before)
        if problems:
            self._problem(item, f"gradguard: {item.nodeid} " + "\n  and ".join(problems))
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, None, None]:
        problems: list[str] = []
        try:
            with self._phase(item):
                result = yield
        finally:
            before = item.stash.get(_before_setup, None)
            if before is not None:
                del item.stash[_before_setup]
                problems = _restore_and_describe(before)
        if problems:
            self._problem(
                item, f"gradguard: the fixtures of {item.nodeid} " + "\n  and ".join(problems)
            )
        return result

    # ---------------------------------------------------------------------------------------
    # Session end
    # ---------------------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        before = _finding_counts()
        try:
            self.handle.close()
        except Exception as error:  # strict: a graph alive and unused at the end raises here
            self.reports.append(("(end of session)", f"gradguard: {error}"))
        found = _new_findings(before)
        if found:
            text = "gradguard: after the last test:\n" + _describe_findings(found)
            self.reports.append(("(end of session)", text))
            if not self.warn and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.reports:
            return
        terminalreporter.section("gradguard")
        for nodeid, text in self.reports:
            terminalreporter.write_line(f"{nodeid}:")
            for line in text.splitlines():
                terminalreporter.write_line(f"  {line}")


_before_setup = pytest.StashKey[_State]()
_allowed = pytest.StashKey[list[str]]()
