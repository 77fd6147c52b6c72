"""``--fix`` rewrites: the exact text before and after for every fix, idempotent, comments kept."""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from gradguard.lint._analysis import analyze
from gradguard.lint._driver import lint_paths
from gradguard.lint._fix import fix_result
from tests.lint.fix_helpers import comments, fix_paths, fix_text, options


@dataclass(frozen=True)
class Case:
    """One fix: the code it removes, the text before, and the exact text after."""

    id: str
    code: str
    before: str
    after: str
    unsafe: bool = False


def _case(id: str, code: str, before: str, after: str, *, unsafe: bool = False) -> Case:
    return Case(id, code, textwrap.dedent(before), textwrap.dedent(after), unsafe)


CASES = [
    _case(
        "GG110-no-grad",
        "GG110",
        '''\
        """Evaluate."""
        import os

        import torch


        def evaluate(model, loader):
            # switch to eval
            model.eval()
            total = 0
            with torch.no_grad():  # no graphs
                for x in loader:
                    total += model(x).sum().item()
            model.train()  # back to training
            return total, os.getpid()
        ''',
        '''\
        """Evaluate."""
        import os

        import gradguard
        import torch


        def evaluate(model, loader):
            # switch to eval
            total = 0
            with gradguard.evaluating(model):  # no graphs
                for x in loader:
                    total += model(x).sum().item()
            # back to training
            return total, os.getpid()
        ''',
    ),
    _case(
        "GG110-inference-mode-from-import",
        "GG110",
        """\
        import torch
        from gradguard import frozen


        def predict(self, batch):
            self.net.eval()
            with torch.inference_mode():
                out = self.net(batch)
            self.net.train(True)
            return out
        """,
        """\
        import torch
        from gradguard import evaluating, frozen


        def predict(self, batch):
            with evaluating(self.net, mode="inference"):
                out = self.net(batch)
            return out
        """,
    ),
    _case(
        "GG110-import-alias",
        "GG110",
        """\
        import gradguard as gg
        import torch


        def validate(model, x):
            model.eval()

            with torch.no_grad():
                y = model(x)
            model.train()
            return y
        """,
        """\
        import gradguard as gg
        import torch


        def validate(model, x):

            with gg.evaluating(model):
                y = model(x)
            return y
        """,
    ),
    _case(
        "GG108-no-grad",
        "GG108",
        """\
        import torch


        @torch.no_grad()  # serving
        async def predict(model, x):
            return model(x)
        """,
        """\
        import gradguard
        import torch


        @gradguard.inference_fn(models=[])  # serving
        async def predict(model, x):
            return model(x)
        """,
    ),
    _case(
        "GG108-inference-mode-from-import",
        "GG108",
        """\
        import torch
        from gradguard import evaluating


        class Server:
            @torch.inference_mode()
            async def handle(self, x):
                return self.model(x)
        """,
        """\
        import torch
        from gradguard import evaluating, inference_fn


        class Server:
            @inference_fn(models=[], mode="inference")
            async def handle(self, x):
                return self.model(x)
        """,
    ),
    _case(
        "GG106-item",
        "GG106",
        """\
        def train(model, loader, criterion, optimizer):
            model.train()
            total = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                total += loss  # running sum
            print(f"mean loss {total / len(loader):.4f}")
        """,
        """\
        def train(model, loader, criterion, optimizer):
            model.train()
            total = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                total += loss.item()  # running sum
            print(f"mean loss {total / len(loader):.4f}")
        """,
    ),
    _case(
        "GG106-detach-when-used-as-tensor",
        "GG106",
        """\
        import torch


        def train(model, loader, criterion, optimizer):
            model.train()
            total = 0
            losses = []
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                total += loss + 0.1 * loss  # regularised
                losses.append(loss)
            return total.item(), torch.stack(losses).mean().item()
        """,
        """\
        import torch


        def train(model, loader, criterion, optimizer):
            model.train()
            total = 0
            losses = []
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                total += (loss + 0.1 * loss).detach()  # regularised
                losses.append(loss.detach())
            return total.item(), torch.stack(losses).mean().item()
        """,
    ),
    _case(
        "GG102",
        "GG102",
        """\
        import torch


        def validate(model, loader, criterion):
            model.eval()
            total = 0.0
            for x, y in loader:
                # forward only
                logits = model(x)
                total += criterion(logits, y).item()
            return total
        """,
        """\
        import torch


        def validate(model, loader, criterion):
            model.eval()
            total = 0.0
            for x, y in loader:
                # forward only
                with torch.no_grad():
                    logits = model(x)
                total += criterion(logits, y).item()
            return total
        """,
        unsafe=True,
    ),
    _case(
        "GG109",
        "GG109",
        """\
        import torch


        def evaluate(model, loader):
            was_training = model.training
            model.eval()
            with torch.no_grad():  # eval
                outputs = [model(x) for x in loader]
            model.train(was_training)
            return outputs
        """,
        """\
        import gradguard
        import torch


        def evaluate(model, loader):
            with gradguard.evaluating(model):  # eval
                outputs = [model(x) for x in loader]
            return outputs
        """,
        unsafe=True,
    ),
    _case(
        "GG109-grad-kept",
        "GG109",
        """\
        import gradguard


        def saliency(model, x):
            was_training = model.training
            model.eval()
            x.requires_grad_(True)
            model(x).sum().backward()
            model.train(mode=was_training)
            return x.grad
        """,
        """\
        import gradguard


        def saliency(model, x):
            with gradguard.evaluating(model, mode="grad"):
                x.requires_grad_(True)
                model(x).sum().backward()
            return x.grad
        """,
        unsafe=True,
    ),
    _case(
        "GG109-try-finally",
        "GG109",
        """\
        import gradguard


        class Probe:
            def evaluate(self, x):
                was = self.net.training
                self.net.eval()
                try:
                    out = self.net(x)  # with gradients, for the saliency
                finally:
                    self.net.train(was)
                return out
        """,
        """\
        import gradguard


        class Probe:
            def evaluate(self, x):
                with gradguard.evaluating(self.net, mode="grad"):
                    out = self.net(x)  # with gradients, for the saliency
                return out
        """,
        unsafe=True,
    ),
    _case(
        "GG103",
        "GG103",
        """\
        import torch


        def fit(model, optimizer, train_loader, val_loader, epochs):
            model.train()
            for epoch in range(epochs):
                # train
                for x, y in train_loader:
                    optimizer.zero_grad()
                    model(x).sum().backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    print(epoch, sum(model(x).sum().item() for x, _ in val_loader))
        """,
        """\
        import torch


        def fit(model, optimizer, train_loader, val_loader, epochs):
            model.train()
            for epoch in range(epochs):
                model.train()
                # train
                for x, y in train_loader:
                    optimizer.zero_grad()
                    model(x).sum().backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    print(epoch, sum(model(x).sum().item() for x, _ in val_loader))
        """,
        unsafe=True,
    ),
    _case(
        "GG104",
        "GG104",
        """\
        import torch


        def predict(model, x):
            model.eval()
            # inference only
            torch.set_grad_enabled(False)  # no graphs
            y = model(x)
            return y.argmax(1)
        """,
        """\
        import torch


        def predict(model, x):
            model.eval()
            # inference only
            with torch.set_grad_enabled(False):  # no graphs
                y = model(x)
                return y.argmax(1)
        """,
        unsafe=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fix_rewrites_exactly(case: Case, tmp_path: Path) -> None:
    """The finding is there before; after ``--fix`` the file is exactly the expected text."""
    assert case.code in {f.code for f in analyze(case.before, "m.py")}
    fixed, report = fix_text(tmp_path, case.before, unsafe=case.unsafe)
    assert fixed == case.after
    assert {fix.codes for fix in report.applied} == {(case.code,)}
    assert all(fix.safe is not case.unsafe for fix in report.applied)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fixed_code_compiles_and_lints_clean_for_the_rule(case: Case) -> None:
    """The rewritten code compiles, and the rule it fixed no longer fires on it."""
    compile(case.after, "m.py", "exec")
    assert case.code not in {f.code for f in analyze(case.after, "m.py")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fix_is_idempotent(case: Case, tmp_path: Path) -> None:
    """Fixing the fixed file changes nothing and applies nothing."""
    once, _ = fix_text(tmp_path, case.before, unsafe=case.unsafe)
    twice, report = fix_text(tmp_path, once, unsafe=case.unsafe)
    assert twice == once
    assert report.applied == []
    assert report.changed_files == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fix_keeps_every_comment(case: Case) -> None:
    """No comment is lost or changed by a fix."""
    assert comments(case.after) == comments(case.before)


@pytest.mark.parametrize("case", [c for c in CASES if c.unsafe], ids=lambda c: c.id)
def test_unsafe_fix_needs_unsafe_fixes(case: Case, tmp_path: Path) -> None:
    """Without --unsafe-fixes the unsafe rewrite is not made, and the report says one exists."""
    fixed, report = fix_text(tmp_path, case.before, unsafe=False)
    assert fixed == case.before
    assert report.applied == []
    assert report.unsafe_available >= 1
    assert case.code in {f.code for f in report.remaining}


def test_diff_writes_nothing_and_shows_the_change(tmp_path: Path) -> None:
    """``diff=True`` leaves the file alone and returns a unified diff of the fix."""
    case = next(c for c in CASES if c.id == "GG108-no-grad")
    path = tmp_path / "serve.py"
    path.write_text(case.before, encoding="utf-8")
    report = fix_paths([path], diff=True)
    assert path.read_text(encoding="utf-8") == case.before
    assert report.written is False
    assert f"--- {path}\n+++ {path}\n" in report.diff
    assert "-@torch.no_grad()  # serving\n" in report.diff
    assert "+@gradguard.inference_fn(models=[])  # serving\n" in report.diff
    assert "+import gradguard\n" in report.diff
    assert {f.code for f in report.remaining} == {"GG108"}  # nothing was fixed on disk


def test_fix_reports_remaining_findings_after_the_fix(tmp_path: Path) -> None:
    """What remains is the re-analysed file: the fixed finding is gone, an unfixable one stays."""
    source = textwrap.dedent(
        """\
        import torch


        @torch.no_grad()
        async def predict(model, x):
            return model(x)


        def train(model, opt, loader, log):
            for x in loader:
                opt.zero_grad()
                loss = model(x).sum()
                if log:
                    loss.backward()
                opt.step()
        """
    )
    fixed, report = fix_text(tmp_path, source)
    assert "@gradguard.inference_fn(models=[])" in fixed
    assert [f.code for f in report.remaining] == ["GG107"]
    assert report.remaining[0].line == 16  # the import moved it down by one


def test_gg110_left_when_train_does_not_follow(tmp_path: Path) -> None:
    """Without ``R.train()`` after the block, evaluating would change the mode after it: left."""
    source = textwrap.dedent(
        """\
        import torch


        def evaluate(model, x):
            model.eval()
            with torch.no_grad():
                return model(x)
        """
    )
    fixed, report = fix_text(tmp_path, source)
    assert fixed == source
    assert [left.finding.code for left in report.left] == ["GG110"]
    assert "every path" in report.left[0].reason or "early" in report.left[0].reason


def test_gg110_left_when_the_block_returns_early(tmp_path: Path) -> None:
    """A ``return`` inside the block skips ``R.train()``: that path would change, so it is left."""
    source = textwrap.dedent(
        """\
        import torch


        def evaluate(model, x, quick):
            model.eval()
            with torch.no_grad():
                if quick:
                    return model(x)
                y = model(x) * 2
            model.train()
            return y
        """
    )
    fixed, report = fix_text(tmp_path, source)
    assert fixed == source
    assert "early" in report.left[0].reason


def test_gg106_and_gg102_together_wrap_and_need_no_detach(tmp_path: Path) -> None:
    """With both fixes, the forward goes under no_grad and the accumulation then needs nothing."""
    source = textwrap.dedent(
        """\
        import torch


        def validate(model, loader, criterion):
            model.eval()
            total = 0
            for x, y in loader:
                logits = model(x)
                total += criterion(logits, y)
            return total.item()
        """
    )
    fixed, report = fix_text(tmp_path, source, unsafe=True)
    assert "with torch.no_grad():\n            logits = model(x)\n" in fixed
    assert "total += criterion(logits, y)\n" in fixed
    assert report.remaining == []


def test_fix_keeps_crlf_line_endings(tmp_path: Path) -> None:
    """A file with Windows line endings keeps them."""
    case = next(c for c in CASES if c.id == "GG106-item")
    path = tmp_path / "m.py"
    path.write_bytes(case.before.replace("\n", "\r\n").encode())
    fix_paths([path])
    assert path.read_bytes() == case.after.replace("\n", "\r\n").encode()


def test_two_pairs_in_one_function_share_one_import(tmp_path: Path) -> None:
    """Every independent fix lands in one run, and the import is added once."""
    source = textwrap.dedent(
        """\
        import torch


        def check(student, teacher, x):
            student.eval()
            with torch.no_grad():
                a = student(x)
            student.train()
            teacher.eval()
            with torch.no_grad():
                b = teacher(x)
            teacher.train()
            return a, b
        """
    )
    fixed, report = fix_text(tmp_path, source)
    assert fixed == textwrap.dedent(
        """\
        import gradguard
        import torch


        def check(student, teacher, x):
            with gradguard.evaluating(student):
                a = student(x)
            with gradguard.evaluating(teacher):
                b = teacher(x)
            return a, b
        """
    )
    assert len(report.applied) == 2


def test_bare_decorator_and_from_import_spelling(tmp_path: Path) -> None:
    """``@no_grad`` imported from torch, without parentheses, is fixed too."""
    source = textwrap.dedent(
        """\
        from torch import no_grad


        @no_grad
        async def predict(model, x):
            return model(x)
        """
    )
    fixed, _ = fix_text(tmp_path, source)
    assert fixed == textwrap.dedent(
        """\
        import gradguard
        from torch import no_grad


        @gradguard.inference_fn(models=[])
        async def predict(model, x):
            return model(x)
        """
    )


def test_suppressed_finding_is_not_fixed(tmp_path: Path) -> None:
    """A finding silenced by a comment is not reported, so it is not rewritten either."""
    source = textwrap.dedent(
        """\
        import torch


        @torch.no_grad()  # noqa: GG108
        async def predict(model, x):
            return model(x)
        """
    )
    fixed, report = fix_text(tmp_path, source)
    assert fixed == source
    assert report.applied == [] and report.remaining == []


def test_fix_writes_through_a_symlink_and_keeps_the_encoding(tmp_path: Path) -> None:
    """A linked file is rewritten where it lives; a latin-1 file stays latin-1."""
    case = next(c for c in CASES if c.id == "GG106-item")
    header = "# -*- coding: latin-1 -*-\n# caf\u00e9\n"
    real = tmp_path / "real.py"
    real.write_bytes((header + case.before).encode("latin-1"))
    link = tmp_path / "link.py"
    link.symlink_to(real)
    fix_paths([link])
    assert link.is_symlink()
    assert real.read_bytes() == (header + case.after).encode("latin-1")


def test_non_ascii_line_positions(tmp_path: Path) -> None:
    """Columns from ``ast`` are bytes; a line with non-ASCII text before the value still works."""
    source = textwrap.dedent(
        """\
        def train(model, loader, criterion, optimizer):
            model.train()
            total = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                total += loss  # Verlust \u00fcber alle Schritte
            print(f"\u00d8 {total / len(loader):.4f}")
        """
    )
    fixed, _ = fix_text(tmp_path, source)
    assert "total += loss.item()  # Verlust \u00fcber alle Schritte\n" in fixed


def test_gg103_left_when_eval_comes_first_in_the_same_iteration(tmp_path: Path) -> None:
    """A train() at the loop's head would run before the eval(): left, with the reason."""
    source = textwrap.dedent(
        """\
        def g(model, opt, loader):
            for x in loader:
                model.eval()
                opt.zero_grad()
                model(x).sum().backward()
                opt.step()
        """
    )
    fixed, report = fix_text(tmp_path, source, unsafe=True)
    assert fixed == source
    assert report.errors == []
    assert [left.finding.code for left in report.left] == ["GG103"]
    assert "runs before the step in the same iteration" in report.left[0].reason


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_fix_keeps_the_owner_of_a_file(tmp_path: Path) -> None:
    """Fixing another user's file (as root) leaves it owned by that user."""
    case = next(c for c in CASES if c.id == "GG106-item")
    path = tmp_path / "m.py"
    path.write_text(case.before, encoding="utf-8")
    os.chown(path, 4321, 4322)
    fix_paths([path])
    assert path.read_text(encoding="utf-8") == case.after
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)


@pytest.mark.parametrize(
    ("setup", "added"),
    [
        ("criterion = torch.nn.CrossEntropyLoss(reduction='none')", "criterion(model(x), y)"),
        ("criterion = torch.nn.CrossEntropyLoss()", "loss_per_sample"),
        ("criterion = torch.nn.CrossEntropyLoss()", "losses"),
    ],
)
def test_gg106_detaches_what_may_not_be_one_number(
    setup: str, added: str, tmp_path: Path
) -> None:
    """``.item()`` needs one element: a per-sample loss is detached instead, never ``.item()``."""
    source = textwrap.dedent(
        f"""\
        import torch

        {setup}


        def train(model, loader, optimizer):
            model.train()
            total = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss_per_sample = losses = criterion(model(x), y)
                loss_per_sample.sum().backward()
                optimizer.step()
                total += {added}
            print(f"{{total / len(loader)}}")
        """
    )
    fixed, report = fix_text(tmp_path, source)
    assert f"total += {added}.detach()\n" in fixed, report.summary()


def test_tab_indented_file_stays_tab_indented(tmp_path: Path) -> None:
    """A new block is indented the way the file is (tabs here)."""
    source = (
        "import torch\n\n\ndef predict(model, x):\n\tmodel.eval()\n"
        "\ttorch.set_grad_enabled(False)\n\tif x is None:\n\t\treturn None\n\treturn model(x)\n"
    )
    fixed, _ = fix_text(tmp_path, source, unsafe=True)
    assert fixed == (
        "import torch\n\n\ndef predict(model, x):\n\tmodel.eval()\n"
        "\twith torch.set_grad_enabled(False):\n\t\tif x is None:\n\t\t\treturn None\n"
        "\t\treturn model(x)\n"
    )


def test_file_gone_before_the_fix_is_reported_and_kept(tmp_path: Path) -> None:
    """A file removed between the lint and the fix: its findings stay, the error names it."""
    case = next(c for c in CASES if c.id == "GG108-no-grad")
    path = tmp_path / "serve.py"
    path.write_text(case.before, encoding="utf-8")
    chosen = options()
    result = lint_paths([str(path)], chosen, jobs=1)
    path.unlink()
    report = fix_result(result, chosen)
    assert [f.code for f in report.remaining] == ["GG108"]
    assert len(report.errors) == 1 and "cannot read it again" in report.errors[0]
    assert str(path) in report.errors[0]


def test_gg108_set_grad_enabled_false_is_no_grad(tmp_path: Path) -> None:
    """``@torch.set_grad_enabled(False)`` is no_grad spelled as a switch: fixed the same way."""
    source = textwrap.dedent(
        """\
        import gradguard
        import torch


        @torch.set_grad_enabled(False)
        async def quiet(model, x):
            return model(x)


        @torch.enable_grad()
        async def attack(model, x):
            return model(x)
        """
    )
    fixed, report = fix_text(tmp_path, source)
    assert "@gradguard.inference_fn(models=[])\nasync def quiet" in fixed
    assert "@torch.enable_grad()\nasync def attack" in fixed
    assert [left.finding.line for left in report.left] == [11]
    assert "may turn gradients on" in report.left[0].reason
