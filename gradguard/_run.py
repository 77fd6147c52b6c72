"""``gradguard run``: run a script or module exactly as ``python`` would, under the watchdog.

``gradguard run [--strict] [--deep] [--json FILE] SCRIPT [ARGS...]`` or
``gradguard run [...] -m MODULE [ARGS...]``. The script gets the ``sys.argv``, ``__main__``,
``sys.path[0]``, exceptions and exit status it would get from ``python``; at exit a summary of the
findings goes to stderr, and ``--json FILE`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import contextlib
import importlib.machinery
import io
import json
import os
import runpy
import sys
import threading
import traceback
import types
import zipfile
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from gradguard import _config, _findings, _output

PROG = "gradguard run"
USAGE = (
    "usage: gradguard run [--strict] [--deep] [--json FILE] SCRIPT [ARGS...]\n"
    "       gradguard run [--strict] [--deep] [--json FILE] -m MODULE [ARGS...]"
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``gradguard run``'s options to its subparser."""
    parser.usage = USAGE.removeprefix("usage: ")
    parser.epilog = (
        "Everything after SCRIPT (or after -m MODULE) is passed to the script untouched. "
        "The exit status is the script's own. GRADGUARD_STRICT=1 is the same as --strict."
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="raise GradGuardError where the first finding happens (the script stops with a "
        "non-zero status); the summary still prints",
    )
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also watch models that the default level cannot see (a layer on every module "
        "call: slower)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        dest="json_file",
        help="write the findings to FILE as JSON; '{rank}' in FILE is replaced by the RANK "
        "environment variable (one file per rank under torchrun)",
    )
    parser.add_argument(
        "-m",
        dest="module",
        nargs=argparse.REMAINDER,
        metavar="MODULE",
        help="run a library module as a script, like python -m (ends the option list)",
    )
    parser.add_argument("script", nargs="?", metavar="SCRIPT", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help=argparse.SUPPRESS)


def main(namespace: argparse.Namespace) -> int:
    """Run the script or module under the watchdog; return its exit status.

    The summary is printed (and the JSON file written) once the script has finished, whether it
    returned, called ``sys.exit`` or raised, and after its non-daemon threads have ended, as
    Python itself waits for them before exiting.
    """
    module: list[str] | None = namespace.module
    script: str | None = namespace.script
    if module is not None and script is not None:
        return _usage_error("give either SCRIPT or -m MODULE, not both")
    if module is not None and not module:
        return _usage_error("-m needs a module name, e.g. gradguard run -m package.train")
    if module is None and script is None:
        return _usage_error("give the script to run, e.g. gradguard run train.py --epochs 3")
    try:
        strict = namespace.strict or _config.env_flag("GRADGUARD_STRICT")
    except ValueError as error:
        return _usage_error(str(error))
    # Absolute now: the script may change directory before the file is written.
    json_file = os.path.abspath(_json_path(namespace.json_file)) if namespace.json_file else None

    if json_file is not None:
        unwritable = _unwritable(json_file)
        if unwritable:
            return _usage_error(f"--json {namespace.json_file!r}: {unwritable}")
    if module is not None:
        target = ["-m", *module]
        problem, status = _check_module(module[0]), 1
    else:
        assert script is not None
        target = [script, *namespace.args]
        problem, status = _check_script(script)
    if problem:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return status

    if strict:
        # Read by the findings channel wherever a check runs, in child processes too.
        os.environ["GRADGUARD_STRICT"] = "1"

    from gradguard._watchdog import _deferred, _processes

    width = _output.terminal_width()
    restore_warnings = _output.short_live_warnings(width)
    # Children first, so that a process started as the script imports torch is collected too.
    try:
        _processes.collect_children(deep=namespace.deep, strict=True if strict else None)
    except OSError as error:  # the script still runs, watched in this process only
        print(f"{PROG}: child processes will not be watched: {error}", file=sys.stderr)
    handle = _deferred.watch_when_torch_imported(
        strict=True if strict else None, deep=namespace.deep
    )
    started_by = os.getpid()
    status = _execute(target)
    if os.getpid() != started_by:
        # A child forked by the script (os.fork()) ended by returning or sys.exit(): only the
        # process that started the run reports; the child exits as python would.
        return status
    _shut_down_like_python()
    try:
        handle.close()
    except _findings.GradGuardError as error:
        # Strict: a graph still alive and unused at exit raises here; the script is done anyway.
        _to_stderr(f"{PROG}: {error}\n")
    except Exception as error:  # the summary must still print
        _to_stderr(f"{PROG}: stopping the watchdog failed: {error!r}\n")

    found = _processes.gather(_findings.findings())
    if strict and found and status == 0:
        # The script caught the GradGuardError (or the finding came at exit): still a failure.
        status = 1
    restore_warnings()
    _to_stderr(format_summary(found, rank=os.environ.get("RANK"), deep=namespace.deep, width=width))
    if json_file is not None:
        try:
            write_json(found, json_file)
        except OSError as error:
            _to_stderr(f"{PROG}: could not write --json {json_file!r}: {error}\n")
            if status == 0:
                status = 2
    if status == INTERRUPTED:
        _die_by_sigint()
    return status


# _execute's status for an uncaught KeyboardInterrupt: python then dies by SIGINT.
INTERRUPTED = -1


def _to_stderr(text: str) -> None:
    """Write to stderr even when the script closed or replaced sys.stderr (python exits fine)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
        return
    except (AttributeError, ValueError, OSError):
        pass
    with contextlib.suppress(OSError):  # no stderr at all: nowhere left to say it
        os.write(2, text.encode("utf-8", "replace"))


def _die_by_sigint() -> None:
    """End as python does after an uncaught KeyboardInterrupt: killed by SIGINT."""
    import signal

    with contextlib.suppress(Exception):
        sys.stdout.flush()
    if not hasattr(signal, "SIGINT") or os.name == "nt":
        return
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _unwritable(path: str) -> str:
    """Why the --json file cannot be written, or "" (checked before the script runs)."""
    if os.path.isdir(path):
        return "is a directory; give a file name"
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        return f"the folder {directory!r} does not exist"
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return "is not writable"
    return ""


def _usage_error(message: str) -> int:
    print(USAGE, file=sys.stderr)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _json_path(template: str) -> str:
    return template.replace("{rank}", os.environ.get("RANK", "0"))


def _check_script(script: str) -> tuple[str, int]:
    """What is wrong with SCRIPT and python's status for it, or ("", 0)."""
    if not os.path.exists(script):
        return f"can't open file {os.path.abspath(script)!r}: no such file or directory", 2
    if os.path.isdir(script) and not os.path.exists(os.path.join(script, "__main__.py")):
        return f"can't find '__main__' module in {script!r}", 1
    return "", 0


def _check_module(name: str) -> str:
    """Whether the top-level package of ``name`` exists; imports nothing.

    Its submodules are looked up once the watchdog is installed and ``sys.argv`` is the
    script's, as python imports the parent packages of ``-m pkg.mod`` then.
    """
    import importlib.util

    top = name.partition(".")[0]
    sys.path[0:1] = [os.getcwd()]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError) as error:
        return f"error while finding module specification for {name!r}: {error}"
    if spec is None:
        return f"no module named {top!r}"
    return ""


def _execute(target: list[str]) -> int:
    """Run ``target`` (``[SCRIPT, ARGS...]`` or ``["-m", MODULE, ARGS...]``) as ``python`` would."""
    if target[0] == "-m":
        # As python: "-m" while the module is being located (its packages imported).
        sys.argv = ["-m", *target[2:]]
        sys.path[0:1] = [os.getcwd()]
    elif os.path.isdir(target[0]):
        sys.argv = list(target)
        sys.path[0:1] = [os.path.abspath(target[0])]
    elif zipfile.is_zipfile(target[0]):
        sys.argv = list(target)
        del sys.path[0]  # runpy puts the archive (as given) in front, as python does
    else:
        sys.argv = list(target)
        sys.path[0:1] = [os.path.dirname(os.path.abspath(target[0]))]
    try:
        if target[0] == "-m":
            problem = _find_module(target[1])
            if problem:
                _to_stderr(f"{PROG}: {problem}\n")
                return 1
            runpy.run_module(target[1], run_name="__main__", alter_sys=True)
        else:
            _run_path(target[0])
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    except KeyboardInterrupt:
        _print_exception(*sys.exc_info())
        return INTERRUPTED
    except BaseException:
        _print_exception(*sys.exc_info())
        return 1
    finally:
        with contextlib.suppress(Exception):  # the script may have closed sys.stdout
            sys.stdout.flush()
    return 0


def _find_module(name: str) -> str:
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except ImportError as error:
        return f"error while finding module specification for {name!r}: {error}"
    return "" if spec is not None else f"no module named {name!r}"


def _run_path(path: str) -> None:
    """Run a script file as ``python path`` does: ``__main__``, an absolute ``__file__``."""
    if zipfile.is_zipfile(path):
        runpy.run_path(path, run_name="__main__")
        return
    # Not runpy.run_path: it rewrites sys.argv[0], which python leaves exactly as given; a
    # directory runs its __main__.py with the directory itself (absolute) as sys.path[0].
    filename = os.path.abspath(os.path.join(path, "__main__.py") if os.path.isdir(path) else path)
    with io.open_code(filename) as stream:
        source = stream.read()
    # dont_inherit: this module's __future__ imports must not leak into the script.
    code = compile(source, filename, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__file__ = filename
    module.__cached__ = None  # type: ignore[attr-defined]  # set by python for __main__ too
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", filename)
    module.__builtins__ = builtins  # type: ignore[attr-defined]  # as python's own __main__
    module.__annotations__ = {}
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def _exit_status(code: Any) -> int:
    """The process status ``python`` gives for ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _print_exception(
    exc_type: type[BaseException] | None,
    value: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """Print an uncaught exception as ``python`` does, via ``sys.excepthook``, minus our frames."""
    ours = (__file__, runpy.__file__, "<frozen runpy>")
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    if exc_type is None or value is None:
        return
    if isinstance(value, _findings.GradGuardError):
        _output.end_at_user_frame(tb)
        _output.point_to_summary(value)
    # The default hook renders the exception's own __traceback__, so cut that one too.
    value.__traceback__ = tb
    try:
        sys.excepthook(exc_type, value, tb)
    except Exception:  # a broken custom hook: fall back to the default rendering
        traceback.print_exception(exc_type, value, tb)
    with contextlib.suppress(Exception):  # the script may have closed sys.stderr
        sys.stderr.flush()


def _shut_down_like_python() -> None:
    """Do what the interpreter does once ``__main__`` ends, in its order, before our summary.

    First the ``threading._register_atexit`` callbacks (``concurrent.futures`` uses them to
    stop the idle workers of every executor never shut down, the default executor of an event
    loop included), then join the non-daemon threads, then the ``atexit`` functions: work done
    by any of them is watched, and a pool that python would stop never hangs the run.
    """
    callbacks = getattr(threading, "_threading_atexits", [])
    pending = list(callbacks)
    callbacks.clear()  # python calls each once
    for callback in reversed(pending):
        try:
            callback()
        except BaseException:  # python reports these and goes on shutting down
            _print_exception(*sys.exc_info())
    _wait_for_threads()
    atexit._run_exitfuncs()


def _wait_for_threads() -> None:
    """Join the script's non-daemon threads, as the interpreter does before it exits."""
    main_thread = threading.main_thread()
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is main_thread or thread is current or thread.daemon:
            continue
        try:
            thread.join()
        except KeyboardInterrupt:
            break


NOT_DEEP_HINT = (
    "  (default level: a model is watched from its construction or unpickling once gradients "
    "go off or an optimizer steps, and from any train()/eval()/to()/load_state_dict() or "
    "gradguard scope; --deep watches every module call, which also sees a model only ever "
    "called with gradients on)\n"
)


def format_summary(
    found: Sequence[_findings.Finding],
    *,
    rank: str | None = None,
    deep: bool = False,
    width: int | None = None,
) -> str:
    """The stderr summary: one block per finding (code, check, file:line, count, fix).

    A clean run at the default level says what the watchdog could see, since a model that is
    only ever called with gradients on (never switched, stepped or run with gradients off) is
    invisible there.
    With ``width``, every line is wrapped to it (paths are never broken).
    """
    who = f"gradguard [rank {rank}]" if rank is not None else "gradguard"
    if not found:
        if deep:
            return f"{who}: no findings\n"
        if width is None:
            return f"{who}: no findings\n" + NOT_DEEP_HINT
        hint = _output.wrap(NOT_DEEP_HINT.strip(), width, "  ", "   ")
        return f"{who}: no findings\n" + "\n".join(hint) + "\n"
    total = len(found)
    lines = [f"{who}: {total} finding{'s' if total != 1 else ''}"]
    from gradguard._watchdog._processes import process_name

    # Processes are named only when some finding came from a process the program started.
    this = process_name()
    several = any(name != this for finding in found for name in finding.processes)
    for finding in found:
        times = "1 time" if finding.count == 1 else f"{finding.count} times"
        if several:
            times += ", in " + ", ".join(finding.processes)
        head = f"{finding.code} {finding.check} at {finding.filename}:{finding.lineno} ({times})"
        lines += _output.wrap(head, width, "  ", "      ")
        for text in finding.message.splitlines():
            lines += _output.wrap(text, width, "      ", "      ")
        if finding.fix:
            lines += _output.wrap(f"fix: {finding.fix}", width, "      ", "           ")
    return "\n".join(lines) + "\n"


def findings_json(found: Sequence[_findings.Finding]) -> dict[str, list[dict[str, Any]]]:
    """The ``--json`` document: ``{"findings": [{code, check, message, file, line, count, fix,
    processes}]}``.

    ``file`` is the code location's file name as Python reports it, ``line`` and ``count`` ints
    (summed over processes), ``processes`` the names of the processes it happened in.
    """
    return {
        "findings": [
            {
                "code": f.code,
                "check": f.check,
                "message": f.message,
                "file": f.filename,
                "line": int(f.lineno),
                "count": int(f.count),
                "fix": f.fix,
                "processes": list(f.processes),
            }
            for f in found
        ]
    }


def write_json(found: Sequence[_findings.Finding], path: str) -> None:
    """Write :func:`findings_json` to ``path`` atomically (a reader never sees half a file)."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(findings_json(found), stream, indent=2)
        stream.write("\n")
    os.replace(temporary, path)
