"""GG100 (parse errors) and GG108 (grad-mode decorators on async functions)."""

from __future__ import annotations

from gradguard.lint._analysis import analyze


def test_parse_error_is_one_gg100_at_the_syntax_error_line() -> None:
    findings = analyze("x = 1\ndef broken(:\n    pass\n", "broken.py")
    assert [(f.code, f.name, f.line) for f in findings] == [("GG100", "parse-error", 2)]


def test_no_grad_on_async_def_is_reported_at_the_def_line() -> None:
    source = "import torch\n\n@torch.no_grad()\nasync def serve(model, x):\n    return model(x)\n"
    findings = analyze(source, "serve.py")
    assert [(f.code, f.line, f.column) for f in findings] == [("GG108", 4, 0)]
    assert findings[0].related[0].line == 3
