"""``gradguard run``: real subprocesses, the way a user starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gradguard
from gradguard._run import NOT_DEEP_HINT

VENV_BIN = Path(sys.executable).parent

PROBE = """\
import json, os, sys
print(json.dumps({
    "argv": sys.argv,
    "name": __name__,
    "path0": sys.path[0],
    "file": __file__,
    "main_file": sys.modules["__main__"].__file__,
}))
"""

# A scope finding (GG006) that needs no watchdog: model.train() inside evaluating().
SCOPE_MISTAKE = """\
import sys
import torch
import gradguard

model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())
for _ in range(3):
    with gradguard.evaluating(model):
        model(torch.randn(2, 4))
        model.train()  # the mistake, reported at the with-statement
print("finished", flush=True)
"""
MISTAKE_LINE = 7


CLEAN = "gradguard: no findings\n" + NOT_DEEP_HINT


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def gradguard_run(
    *args: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    console_script: bool = False,
) -> subprocess.CompletedProcess[str]:
    command = (
        [str(VENV_BIN / "gradguard"), "run"]
        if console_script
        else [sys.executable, "-m", "gradguard", "run"]
    )
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    full_env.pop("RANK", None)
    full_env.update(env or {})
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_script_sees_argv_main_and_path_exactly_as_under_python(tmp_path: Path) -> None:
    """The script gets the same sys.argv, __name__, sys.path[0] and __file__ as `python SCRIPT`."""
    write(tmp_path, "sub/probe.py", PROBE)
    args = ["sub/probe.py", "--epochs", "3", "--strict", "-m", "x"]
    plain = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    watched = gradguard_run(*args, cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    expected = json.loads(plain.stdout)
    assert expected["path0"] == str(tmp_path / "sub")
    assert json.loads(watched.stdout) == expected
    assert watched.stderr.endswith(CLEAN)


def test_module_form_runs_like_python_dash_m(tmp_path: Path) -> None:
    """`-m MODULE ARGS` gives the module the argv, __main__ and sys.path[0] of `python -m`."""
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/probe.py", PROBE)
    plain = subprocess.run(
        [sys.executable, "-m", "pkg.probe", "a", "--json", "b"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    watched = gradguard_run("-m", "pkg.probe", "a", "--json", "b", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    seen = json.loads(watched.stdout)
    assert seen == json.loads(plain.stdout)
    assert seen["argv"] == [str(tmp_path / "pkg" / "probe.py"), "a", "--json", "b"]
    assert seen["name"] == "__main__"
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("body", "status", "stderr_has"),
    [
        ("import sys\nsys.exit(3)\n", 3, None),
        ("import sys\nsys.exit('bad config: lr < 0')\n", 1, "bad config: lr < 0\n"),
        ("raise SystemExit(None)\n", 0, None),
        ("def train():\n    raise ValueError('diverged')\n\ntrain()\n", 1, "ValueError: diverged"),
    ],
    ids=["exit-code", "exit-message", "exit-none", "uncaught-exception"],
)
def test_exit_status_is_the_scripts_own_and_summary_still_prints(
    tmp_path: Path, body: str, status: int, stderr_has: str | None
) -> None:
    """sys.exit codes and uncaught exceptions give python's status; the summary prints anyway."""
    write(tmp_path, "job.py", body)
    plain = subprocess.run([sys.executable, "job.py"], cwd=tmp_path, capture_output=True, text=True)
    watched = gradguard_run("job.py", cwd=tmp_path)
    assert plain.returncode == status
    assert watched.returncode == status
    if stderr_has is not None:
        assert stderr_has in watched.stderr
    assert watched.stderr.endswith(CLEAN)


def test_uncaught_exception_traceback_starts_in_the_script(tmp_path: Path) -> None:
    """The traceback is python's own, with no gradguard or runpy frames in front of the script's."""
    write(tmp_path, "job.py", "def train():\n    raise ValueError('diverged')\n\ntrain()\n")
    plain = subprocess.run([sys.executable, "job.py"], cwd=tmp_path, capture_output=True, text=True)
    watched = gradguard_run("job.py", cwd=tmp_path)
    assert watched.returncode == 1
    traceback_text = watched.stderr.split("gradguard: no findings")[0]
    assert traceback_text == plain.stderr
    assert "runpy" not in traceback_text
    assert "_run.py" not in traceback_text


def test_summary_lists_each_finding_with_code_check_site_count_and_fix(tmp_path: Path) -> None:
    """A finding made three times at one line is summarised once, with its site, count and fix."""
    script = write(tmp_path, "train.py", SCOPE_MISTAKE)
    result = gradguard_run(script.name, cwd=tmp_path, console_script=True)
    assert result.returncode == 0, result.stderr
    assert "finished" in result.stdout
    summary = result.stderr[result.stderr.index("gradguard: 1 finding\n") :]
    lines = summary.splitlines()
    assert lines[0] == "gradguard: 1 finding"
    assert lines[1] == f"  GG006 scope-state-changed at {script}:{MISTAKE_LINE} (3 times)"
    assert "switched 3 module(s) back to training mode (Dropout, Linear, Sequential)" in lines[2]
    assert lines[3].startswith("      fix: move model.train() after the with-block")
    assert len(lines) == 4


def test_json_file_follows_the_documented_schema(tmp_path: Path) -> None:
    """--json FILE writes {"findings": [{code, check, message, file, line, count, fix, ...}]}."""
    write(tmp_path, "train.py", SCOPE_MISTAKE)
    out = tmp_path / "reports" / "findings.json"
    out.parent.mkdir()
    result = gradguard_run("--json", out, "train.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert list(document) == ["findings"]
    (finding,) = document["findings"]
    assert finding == {
        "code": "GG006",
        "check": "scope-state-changed",
        "message": finding["message"],
        "file": str(tmp_path / "train.py"),
        "line": MISTAKE_LINE,
        "count": 3,
        "fix": finding["fix"],
        "processes": ["MainProcess"],
    }
    assert "back to training mode" in finding["message"]
    assert finding["fix"].startswith("move model.train()")


def test_json_file_is_written_with_no_findings(tmp_path: Path) -> None:
    """A clean run still writes the file (where it was asked for, though the script chdir'd)."""
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path, "clean.py", "import os, torch\nos.chdir('elsewhere')\nprint(torch.ones(1))\n")
    result = gradguard_run("--json", "out.json", "clean.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == {"findings": []}


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_strict_stops_at_the_first_finding_with_nonzero_status(tmp_path: Path, how: str) -> None:
    """--strict or GRADGUARD_STRICT=1 raises GradGuardError at the finding; the summary prints."""
    write(tmp_path, "train.py", SCOPE_MISTAKE)
    if how == "flag":
        result = gradguard_run("--strict", "train.py", cwd=tmp_path)
    else:
        result = gradguard_run("train.py", cwd=tmp_path, env={"GRADGUARD_STRICT": "1"})
    assert result.returncode == 1
    assert "finished" not in result.stdout
    assert "gradguard.GradGuardError: GG006 scope-state-changed" in result.stderr
    assert f'File "{tmp_path / "train.py"}", line {MISTAKE_LINE}, in <module>' in result.stderr
    assert result.stderr.endswith("the scope restores the training flags itself\n")
    site = f"{tmp_path / 'train.py'}:{MISTAKE_LINE}"
    assert f"  GG006 scope-state-changed at {site} (1 time)\n" in result.stderr


def test_strict_fails_a_script_that_catches_the_error(tmp_path: Path) -> None:
    """Under --strict a finding means a non-zero status even if the script swallowed the error."""
    write(
        tmp_path,
        "train.py",
        """\
        import torch
        import gradguard

        model = torch.nn.Linear(4, 4)
        try:
            with gradguard.evaluating(model):
                model.train()
        except RuntimeError as error:
            print("caught", type(error).__name__)
        """,
    )
    result = gradguard_run("--strict", "train.py", cwd=tmp_path)
    assert result.stdout == "caught GradGuardError\n"
    assert result.returncode == 1
    assert "gradguard: 1 finding" in result.stderr


def test_findings_from_threads_are_summarised_after_they_finish(tmp_path: Path) -> None:
    """Like python, the run waits for non-daemon threads, so their findings are in the summary."""
    write(
        tmp_path,
        "loader.py",
        """\
        import threading, time
        import torch
        import gradguard

        model = torch.nn.Linear(4, 4)

        def late_validation():
            time.sleep(0.3)
            with gradguard.evaluating(model):
                model.train()

        threading.Thread(target=late_validation).start()
        """,
    )
    result = gradguard_run("loader.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    site = f"{tmp_path / 'loader.py'}:9"
    assert f"gradguard: 1 finding\n  GG006 scope-state-changed at {site}" in result.stderr


def test_deep_sees_a_model_the_default_level_cannot(tmp_path: Path) -> None:
    """Put in eval by writing its flags, only ever called with grad on: seen only with --deep."""
    write(
        tmp_path,
        "score.py",
        """\
        import torch

        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())
        for module in model.modules():
            module.training = False
        score = model(torch.randn(2, 4)).sum()
        del score
        """,
    )
    default = gradguard_run("score.py", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert default.stderr == CLEAN  # and the hint that --deep watches every module call
    deep = gradguard_run("--deep", "score.py", cwd=tmp_path)
    assert deep.returncode == 0, deep.stderr
    site = f"{tmp_path / 'score.py'}:6"
    expected = f"gradguard: 1 finding\n  GG001 graph-in-inference at {site} (1 time)"
    assert expected in deep.stderr


@pytest.mark.parametrize(
    ("args", "env", "status", "message"),
    [
        (["missing.py"], {}, 2, "gradguard run: can't open file"),
        (["-m", "no_such_module_here"], {}, 1, "no module named 'no_such_module_here'"),
        ([], {}, 2, "gradguard run: error: give the script to run"),
        (["job.py"], {"GRADGUARD_STRICT": "maybe"}, 2, "GRADGUARD_STRICT='maybe' is not a valid"),
        (["job.py"], {"GRADGUARD_WATCH": "bogus"}, 2, "error: GRADGUARD_WATCH='bogus' is not a"),
    ],
    ids=["missing-script", "missing-module", "nothing-to-run", "bad-strict-env", "bad-watch-env"],
)
def test_bad_invocations_fail_with_a_clear_message(
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    status: int,
    message: str,
) -> None:
    """Bad input is refused before anything runs, saying what was wrong."""
    write(tmp_path, "job.py", "print('ran')\n")
    result = gradguard_run(*args, cwd=tmp_path, env=env)
    assert result.returncode == status
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "ran" not in result.stdout


TORCHRUN_SCRIPT = """\
import torch
import torch.distributed as dist
import gradguard

dist.init_process_group("gloo")
model = torch.nn.Linear(4, 4)
with gradguard.evaluating(model):
    model.train()
dist.barrier()
dist.destroy_process_group()
"""


def test_under_torchrun_each_rank_summarises_and_names_its_rank(tmp_path: Path) -> None:
    """torchrun starts `gradguard run` on two gloo ranks; each summary and JSON names its rank."""
    write(tmp_path, "ddp_job.py", TORCHRUN_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADGUARD_")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "gradguard",
            "run",
            "--json",
            "findings-{rank}.json",
            "ddp_job.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    for rank in (0, 1):
        assert f"gradguard [rank {rank}]: 1 finding\n" in result.stderr
        (finding,) = json.loads((tmp_path / f"findings-{rank}.json").read_text())["findings"]
        assert finding["message"].startswith(f"[rank {rank}] code inside evaluating(Linear)")
        assert (finding["file"], finding["line"]) == (str(tmp_path / "ddp_job.py"), 7)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def line_of(path: Path, text: str) -> int:
    """The 1-based line of the only line of ``path`` that contains ``text``."""
    (number,) = [i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return number


def test_example_with_mistakes_is_found_line_by_line(tmp_path: Path) -> None:
    """The demo script's mistakes come out with the right codes and lines; it dies in GG003."""
    script = EXAMPLES / "train_with_mistakes.py"
    result = gradguard_run("--json", tmp_path / "out.json", script, cwd=tmp_path)
    assert result.returncode == 1
    assert "gradguard.GradGuardError: GG003 backward-without-grad" in result.stderr
    explained = result.stderr.split("The above exception was the direct cause")[1]
    assert "_findings.py" not in explained  # the error shows the user's frames, not gradguard's
    found = json.loads((tmp_path / "out.json").read_text())["findings"]
    sites = {(f["code"], f["line"]) for f in found}
    assert {f["file"] for f in found} == {str(script)}
    forward_in_training = line_of(script, "loss = nn.functional.cross_entropy(model(features)")
    assert sites == {
        ("GG002", line_of(script, "correct += (model(features)")),  # validation without eval()
        ("GG004", line_of(script, "optimizer.step()")),  # trained on while left in eval
        ("GG001", line_of(script, "logits = model(features)")),  # inference without no_grad
        ("GG002", forward_in_training),  # training resumed with gradients still off
        ("GG003", line_of(script, "loss.backward()")),  # ... and its backward fails
    }
    disabled_at = f"set_grad_enabled(False) at {script}:{line_of(script, 'MISTAKE 4')}"
    late = [f for f in found if (f["code"], f["line"]) == ("GG002", forward_in_training)]
    assert disabled_at in late[0]["message"]
    assert f"gradguard: {len(found)} findings\n" in result.stderr


def test_fixed_example_runs_clean(tmp_path: Path) -> None:
    """The fixed twin trains, evaluates and predicts with no finding at all."""
    script = EXAMPLES / "train_fixed.py"
    result = gradguard_run("--json", tmp_path / "out.json", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fine-tuning on the validation split" in result.stdout
    assert result.stderr == CLEAN
    assert json.loads((tmp_path / "out.json").read_text()) == {"findings": []}


def test_version_and_unknown_command(tmp_path: Path) -> None:
    """`gradguard --version` prints the version; an unknown command names the valid ones."""
    version = subprocess.run(
        [sys.executable, "-m", "gradguard", "--version"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert version.returncode == 0
    assert version.stdout.strip() == f"gradguard {gradguard.__version__}"
    bogus = subprocess.run(
        [sys.executable, "-m", "gradguard", "--bogus"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert bogus.returncode == 2
    assert "unknown command '--bogus'; choose from run, bench" in bogus.stderr


def test_a_script_that_never_imports_torch_runs_without_torch(tmp_path: Path) -> None:
    """No torch in sys.modules at the end of a script that never imports it."""
    write(
        tmp_path,
        "plain.py",
        """\
        import atexit, sys
        atexit.register(lambda: print("torch loaded:", "torch" in sys.modules, flush=True))
        print(sum(range(10)))
        """,
    )
    result = gradguard_run("plain.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "45\ntorch loaded: False\n"
    assert result.stderr.startswith("gradguard: no findings\n")


def test_a_script_importing_torch_late_is_still_watched(tmp_path: Path) -> None:
    """The watchdog is installed when the script first imports torch, inside a function."""
    write(
        tmp_path,
        "late.py",
        """\
        import sys
        assert "torch" not in sys.modules

        def train():
            import torch

            model = torch.nn.Linear(2, 2)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            optimizer.step()  # no backward: GG005

        train()
        """,
    )
    result = gradguard_run("late.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"  GG005 step-without-gradients at {tmp_path / 'late.py'}:9 (1 time)\n" in result.stderr


EXECUTOR_SCRIPTS = {
    "library-executor": """\
        import concurrent.futures, sys, types
        # A library that keeps a process-wide pool, never shut down.
        library = types.ModuleType("library")
        library.POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        sys.modules["library"] = library
        print(library.POOL.submit(sum, [1, 2, 3]).result(), flush=True)
        """,
    "event-loop-default-executor": """\
        import asyncio
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        print(loop.run_until_complete(loop.run_in_executor(None, sum, [1, 2, 3])), flush=True)
        """,
}


@pytest.mark.parametrize("name", sorted(EXECUTOR_SCRIPTS))
def test_script_leaving_an_executor_alive_ends_as_under_python(tmp_path: Path, name: str) -> None:
    """An executor never shut down stops at exit as under python; summary and JSON are written."""
    write(tmp_path, "job.py", EXECUTOR_SCRIPTS[name])
    plain = subprocess.run(
        [sys.executable, "job.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert (plain.returncode, plain.stdout) == (0, "6\n")
    watched = gradguard_run("--json", "out.json", "job.py", cwd=tmp_path)
    assert (watched.returncode, watched.stdout) == (0, "6\n"), watched.stderr
    assert watched.stderr.endswith(CLEAN)
    assert json.loads((tmp_path / "out.json").read_text()) == {"findings": []}


def test_exit_time_work_is_watched_in_pythons_order(tmp_path: Path) -> None:
    """Thread-exit callbacks, then thread joins, then atexit run before the summary, in order."""
    write(
        tmp_path,
        "job.py",
        """\
        import atexit, threading, time

        def worker():
            time.sleep(0.2)
            print("thread joined", flush=True)

        threading._register_atexit(lambda: print("threading atexit", flush=True))
        atexit.register(lambda: print("atexit", flush=True))
        threading.Thread(target=worker).start()
        """,
    )
    plain = subprocess.run(
        [sys.executable, "job.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    watched = gradguard_run("job.py", cwd=tmp_path)
    assert plain.stdout == "threading atexit\nthread joined\natexit\n"
    assert (watched.returncode, watched.stdout) == (0, plain.stdout), watched.stderr
    assert watched.stderr.endswith(CLEAN)


FORKING_SCRIPT = """\
import os, sys
import torch
import gradguard

pid = os.fork()
if pid == 0:
    print("child", flush=True)
    sys.exit(0)
os.waitpid(pid, 0)
model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())
with gradguard.evaluating(model):
    model.train()
print("parent", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only")
def test_forked_child_leaves_the_parents_report_alone(tmp_path: Path) -> None:
    """A child of os.fork() ending with sys.exit(0) prints no summary and writes no JSON."""
    write(tmp_path, "job.py", FORKING_SCRIPT)
    watched = gradguard_run("--json", "out.json", "job.py", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert sorted(watched.stdout.split()) == ["child", "parent"]
    assert watched.stderr.count("gradguard: ") == 1, watched.stderr
    assert "gradguard: 1 finding" in watched.stderr
    [finding] = json.loads((tmp_path / "out.json").read_text())["findings"]
    assert finding["code"] == "GG006"


PARITY_CASES: dict[str, tuple[dict[str, str], list[str]]] = {
    "closes-stdout": ({"job.py": "import sys\nprint('x')\nsys.stdout.close()\n"}, ["job.py"]),
    "closes-stderr": ({"job.py": "import sys\nsys.stderr.close()\n"}, ["job.py"]),
    "keyboard-interrupt": ({"job.py": "raise KeyboardInterrupt\n"}, ["job.py"]),
    "directory-without-main": ({"app/util.py": ""}, ["app"]),
    "directory": (
        {"app/__main__.py": "import sys, json\nprint(json.dumps(sys.path[0]))\n"},
        ["app"],
    ),
    "main-globals": (
        {"job.py": "print(sorted(k for k in globals() if k.startswith('__')))\n"},
        ["job.py"],
    ),
    "module-package-import": (
        {
            "pkg/__init__.py": "import sys\nprint('pkg sees', sys.argv)\n",
            "pkg/mod.py": "import sys\nprint('mod sees', sys.argv[1:])\n",
        },
        ["-m", "pkg.mod", "a"],
    ),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_runs_as_plain_python_does(tmp_path: Path, case: str) -> None:
    """Status, stdout and python's own view match `python ARGS` (the summary aside)."""
    files, args = PARITY_CASES[case]
    for name, text in files.items():
        write(tmp_path, name, text)
    plain = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    watched = gradguard_run(*args, cwd=tmp_path)
    assert watched.returncode == plain.returncode, watched.stderr
    assert watched.stdout == plain.stdout
    if case != "directory-without-main":
        assert "gradguard: no findings" in watched.stderr or case == "closes-stderr"


def test_module_package_is_imported_under_the_watchdog(tmp_path: Path) -> None:
    """`-m pkg.mod`: pkg's __init__ is part of the script: watched from its import of torch."""
    write(
        tmp_path,
        "pkg/__init__.py",
        "import torch\nfrom gradguard import _watchdog\nprint(_watchdog.is_watching())\n",
    )
    write(tmp_path, "pkg/mod.py", "")
    watched = gradguard_run("-m", "pkg.mod", cwd=tmp_path)
    assert (watched.returncode, watched.stdout) == (0, "True\n"), watched.stderr


def test_closed_stdout_still_gets_the_json_written(tmp_path: Path) -> None:
    """A script that closes sys.stdout and sys.stderr: status 0 and the --json file written."""
    write(tmp_path, "job.py", "import sys\nsys.stdout.close()\nsys.stderr.close()\n")
    watched = gradguard_run("--json", "out.json", "job.py", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == {"findings": []}


def test_unwritable_json_is_refused_before_the_script_runs(tmp_path: Path) -> None:
    """--json into a missing folder: status 2 with a clear line, and the script never ran."""
    write(tmp_path, "job.py", "print('ran')\n")
    watched = gradguard_run("--json", "no/such/folder/out.json", "job.py", cwd=tmp_path)
    assert watched.returncode == 2
    assert "gradguard run: error: --json 'no/such/folder/out.json': the folder" in watched.stderr
    assert watched.stdout == ""


def test_bad_watch_variable_is_one_line_from_the_console_script(tmp_path: Path) -> None:
    """`gradguard run` (console script) with GRADGUARD_WATCH=bogus: one line, status 2."""
    write(tmp_path, "job.py", "print('ran')\n")
    result = gradguard_run("job.py", cwd=tmp_path, env={"GRADGUARD_WATCH": "bogus"},
                           console_script=True)  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("gradguard: error: GRADGUARD_WATCH='bogus' is not a valid")
    assert "Traceback" not in result.stderr
