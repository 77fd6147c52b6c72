"""GG100 (parse errors) and GG108 (grad-mode decorators on async functions)."""

from __future__ import annotations

import subprocess
import sys

from gradguard.lint._analysis import analyze


def test_parse_error_is_one_gg100_at_the_syntax_error_line() -> None:
    findings = analyze("x = 1\ndef broken(:\n    pass\n", "broken.py")
    assert [(f.code, f.name, f.line) for f in findings] == [("GG100", "parse-error", 2)]


def test_no_grad_on_async_def_is_reported_at_the_def_line() -> None:
    source = "import torch\n\n@torch.no_grad()\nasync def serve(model, x):\n    return model(x)\n"
    findings = analyze(source, "serve.py")
    assert [(f.code, f.line, f.column) for f in findings] == [("GG108", 4, 0)]
    assert findings[0].related[0].line == 3


def test_a_file_nested_deeper_than_the_parser_allows_is_one_gg100() -> None:
    source = "def f(model, x):\n    y = " + " + ".join(["model(x)"] * 5000) + "\n"
    assert [(f.code, f.line) for f in analyze(source, "generated.py")] == [("GG100", 1)]


def test_deeply_nested_code_that_parses_is_analysed_without_raising() -> None:
    source = "def f(model, x):\n    model.eval()\n    y = " + " + ".join(["model(x)"] * 900)
    source += "\n    print(y)\n"
    assert {f.code for f in analyze(source, "generated.py")} <= {"GG102"}


def test_every_statement_kind_is_walked_without_raising() -> None:
    source = """
import torch

async def run(model, xs, ys):
    global counter
    async with torch.no_grad():
        pass
    async for x in xs:
        match x:
            case [a, *rest]:
                del a
            case {"k": v}:
                print(v)
            case _:
                pass
    try:
        (a, *b), c = ys
    except* ValueError:
        raise
    while (n := len(xs)) > 0:
        lam = lambda q: model(q)
        break
    else:
        pass
    class Inner:
        z = [model(x) for x in xs if x]
    assert model, "model"
    with open("f") as f, torch.no_grad():
        return {k: model(k) for k in f}
"""
    assert analyze(source, "kinds.py") == []


def test_the_analysis_runs_where_torch_cannot_be_imported() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from gradguard.lint._analysis import analyze\n"
        "source = 'import torch\\n@torch.no_grad()\\nasync def f():\\n    pass\\n'\n"
        "found = analyze(source, 'x.py')\n"
        "assert [f.code for f in found] == ['GG108'], found\n"
        "assert sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_try_star_bodies_are_analysed() -> None:
    source = (
        "import torch\n"
        "def f(model, x):\n"
        "    try:\n"
        "        torch.set_grad_enabled(False)\n"
        "        y = model(x)\n"
        "    except* ValueError:\n"
        "        return None\n"
        "    return y\n"
    )
    assert [(f.code, f.line) for f in analyze(source, "t.py")] == [("GG104", 4)]
