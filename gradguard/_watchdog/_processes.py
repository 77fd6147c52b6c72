"""Every process of the program: children watched as the parent is, their findings sent back once.

``gradguard run`` calls :func:`collect_children` before the script starts and :func:`gather` after
it ends. In between, every process that ``multiprocessing`` starts (fork, spawn, forkserver, and so
``torch.multiprocessing.spawn`` and DataLoader workers) is watched with the parent's options:

* a forked child inherits the installed watchdog and drops the parent's findings it inherited;
* a spawned or forkserver child gets a small boot step inside the preparation data that
  ``multiprocessing`` pickles for it: unpickling it (before the child imports the program's main
  module) installs the watchdog as soon as the child imports torch.

A child sends nothing while it runs: at exit (``multiprocessing``'s own exit finalizers, or a
``SIGTERM`` such as ``Pool.terminate()`` sends) it writes its findings once, as one JSON file,
into a temporary directory that the parent reads, merges by site and removes.

This module does not import torch: a child that never imports torch never pays for it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import replace
from typing import Any

from gradguard import _findings

_BOOT_KEY = "gradguard"


class _State:
    """This process's part in collecting: where findings go and with which options it watches."""

    __slots__ = (
        "__weakref__",
        "booted_pid",
        "collector_pid",
        "deep",
        "directory",
        "original",
        "sending",
        "sent_pid",
        "started_pid",
        "strict",
        "terminate_pending",
    )

    def __init__(self) -> None:
        self.directory: str | None = None
        self.deep = False
        self.strict: bool | None = None
        # The function that multiprocessing.spawn.get_preparation_data was before the patch.
        self.original: Any = None
        # The pid that was booted from pickled data (a spawned child), and the pid that sent.
        self.booted_pid = 0
        self.collector_pid = 0  # the process that collects (runs the program under gradguard run)
        self.started_pid = 0
        self.sent_pid = 0
        self.sending = False
        self.terminate_pending = False


state = _State()


def process_name() -> str:
    """This process's ``multiprocessing`` name (``MainProcess`` when it never started one)."""
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None:
        return "MainProcess"
    return str(multiprocessing.current_process().name)


def collect_children(*, deep: bool, strict: bool | None) -> None:
    """In the process that runs the program: watch every child and collect its findings.

    Raises:
        OSError: no temporary directory could be made (nothing is changed then).
    """
    directory = tempfile.mkdtemp(prefix="gradguard-children-")
    try:
        _enable(directory, deep, strict)
        state.collector_pid = os.getpid()
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        ):
            # A run ended by SIGTERM (timeout, a job scheduler, kill) exits without atexit: the
            # folder goes first. A handler the program sets replaces this one, as it would the
            # default.
            signal.signal(signal.SIGTERM, _remove_then_terminate)
    except BaseException:
        _disable()
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _remove_then_terminate(signum: int, _frame: Any) -> None:
    directory = state.directory
    if os.getpid() == state.collector_pid and directory is not None:
        # Not in a child that inherited this handler (os.fork()): the folder is the parent's.
        _disable()
        shutil.rmtree(directory, ignore_errors=True)
    _terminate(signum)


def _enable(directory: str, deep: bool, strict: bool | None) -> None:
    import multiprocessing.spawn
    import multiprocessing.util

    state.directory = directory
    state.deep = deep
    state.strict = strict
    if state.original is None:
        state.original = multiprocessing.spawn.get_preparation_data
        multiprocessing.spawn.get_preparation_data = _preparation_data
    # Run in every multiprocessing child as it starts, whatever the start method.
    multiprocessing.util.register_after_fork(state, _child_started)


def _preparation_data(name: str) -> dict[str, Any]:
    """``spawn.get_preparation_data`` plus the boot step a spawned child unpickles first."""
    data: dict[str, Any] = state.original(name)
    if state.directory is not None:
        data[_BOOT_KEY] = _Boot(state.directory, state.deep, state.strict)
    return data


class _Boot:
    """Pickled into a spawned child's preparation data; unpickling it boots the watchdog there."""

    def __init__(self, directory: str, deep: bool, strict: bool | None) -> None:
        self.arguments = (directory, deep, strict)

    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, Any]]]:
        # exec of a builtin, not a reference to this module: a child that cannot import
        # gradguard (a different sys.path) must still start, unwatched.
        source = (
            "try:\n"
            "    from gradguard._watchdog._processes import boot\n"
            f"    boot(*{self.arguments!r})\n"
            "except Exception:\n"
            "    pass\n"
        )
        return (exec, (source, {}))


def boot(directory: str, deep: bool, strict: bool | None) -> None:
    """In a spawned child, before its main module is imported: watch as the parent does."""
    state.booted_pid = os.getpid()
    _enable(directory, deep, strict)
    from gradguard import _output

    # As in the parent (a forked child inherits it): each finding one line pointing to the
    # summary, which the parent prints with the children's findings in it.
    _output.short_live_warnings(_output.terminal_width())
    # A spawned child's multiprocessing skips the after-fork step: arrange the exit here.
    _child_started(state)
    from gradguard._watchdog._deferred import watch_when_torch_imported

    watch_when_torch_imported(strict=strict, deep=deep)


def _child_started(_state: _State) -> None:
    """In every child as it starts (multiprocessing's after-fork step): arrange to send at exit."""
    try:
        if state.booted_pid != os.getpid():
            _forget_inherited()
        import multiprocessing.util

        # Lowest priority: after the child's own children were joined (they send first).
        # Registered on every call: a forkserver child's after-fork step clears the first one.
        multiprocessing.util.Finalize(None, send, exitpriority=-100)
        if state.started_pid == os.getpid():
            return
        state.started_pid = os.getpid()
        atexit.register(send)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(
            signal.SIGTERM
        ) in (signal.SIG_DFL, _remove_then_terminate):
            signal.signal(signal.SIGTERM, _send_then_terminate)
    except Exception:  # fail open: a child must start even if its findings will be lost
        pass


def _forget_inherited() -> None:
    """A forked child starts with a copy of its parent's findings and graphs: not its own."""
    _findings.clear_findings()
    graphs = sys.modules.get("gradguard._watchdog._graphs")
    if graphs is not None:
        for use in list(graphs.graphs):
            use.armed = False
        graphs.graphs.clear()
        graphs.pending.clear()


def _send_then_terminate(signum: int, _frame: Any) -> None:
    if state.sending:
        # Interrupted while sending at exit: let that finish, then terminate (see send).
        state.terminate_pending = True
        return
    # Without stopping the watchdog: the interrupted code may be inside it, holding its locks.
    send(stop=False)
    _terminate(signum)


def _terminate(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _stop_watching() -> None:
    """Remove the watchdog, reporting the graphs still alive and unused, unless it is stuck."""
    install = sys.modules.get("gradguard._watchdog._install")
    common = sys.modules.get("gradguard._watchdog._common")
    if install is None or common is None:
        return
    # A forked child may hold a copy of a lock that another thread of the parent had taken.
    for lock in (common.lock, _findings._lock):
        if not lock.acquire(timeout=1.0):
            return
        lock.release()
    # Strict: the finding was recorded before it was raised.
    with contextlib.suppress(_findings.GradGuardError):
        install.unwatch()


def send(*, stop: bool = True) -> None:
    """At a child's exit: stop watching, then write its findings, once, for the parent."""
    directory = state.directory
    if directory is None or state.sent_pid == os.getpid():
        return
    state.sent_pid = os.getpid()
    state.sending = True
    try:
        if stop:
            _stop_watching()
        # Read without the channel's lock: a signal may have interrupted its holder.
        found = [replace(record) for record in list(_findings._records)]
        if not found or not os.path.isdir(directory):
            return
        document = {
            "process": process_name(),
            "pid": os.getpid(),
            "findings": [vars(finding) for finding in found],
        }
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(document, stream)
        # Atomic: the parent never reads half a file.
        os.replace(temporary, temporary[: -len(".tmp")] + ".json")
    except Exception:  # fail open: never break a child's exit
        pass
    finally:
        state.sending = False
        if state.terminate_pending:
            _terminate(signal.SIGTERM)


def gather(own: list[_findings.Finding]) -> list[_findings.Finding]:
    """In the parent, once the program is done: its findings merged with every child's.

    Waits for the non-daemon children first (as the interpreter would before exiting), then
    merges by site: counts are added, and each finding names the processes it happened in.
    Removes the temporary directory and the patch.
    """
    directory = state.directory
    if directory is None:
        return own
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None:
        for child in multiprocessing.active_children():
            if not child.daemon:
                child.join()
    reports: list[tuple[str, list[dict[str, Any]]]] = []
    try:
        for name in sorted(os.listdir(directory)):
            if name.endswith(".json"):
                with open(os.path.join(directory, name), encoding="utf-8") as stream:
                    document = json.load(stream)
                reports.append((str(document["process"]), list(document["findings"])))
    finally:
        _disable()
        shutil.rmtree(directory, ignore_errors=True)
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is _remove_then_terminate
        ):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return merge(own, reports)


def _disable() -> None:
    state.directory = None
    if state.original is not None:
        import multiprocessing.spawn

        multiprocessing.spawn.get_preparation_data = state.original
    state.original = None


def merge(
    own: list[_findings.Finding], reports: list[tuple[str, list[dict[str, Any]]]]
) -> list[_findings.Finding]:
    """This process's findings and the children's ``(process, findings)``, merged by site."""
    main = process_name()
    merged: dict[tuple[str, str, int], _findings.Finding] = {}
    for finding in own:
        merged[(finding.code, finding.filename, finding.lineno)] = replace(
            finding, processes=(main,)
        )
    for process, found in reports:
        for fields in found:
            key = (fields["code"], fields["filename"], fields["lineno"])
            known = merged.get(key)
            if known is None:
                fields = {**fields, "processes": (process,)}
                merged[key] = _findings.Finding(**fields)
                continue
            known.count += int(fields["count"])
            if process not in known.processes:
                known.processes = (*known.processes, process)
    return list(merged.values())
