"""The rules table: every GG1xx code, its name, severity and documentation.

Codes and names are stable: ``--select``/``--ignore``, suppressions and configuration take either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gradguard.lint._finding import Severity


@dataclass(frozen=True)
class Rule:
    """A lint rule's metadata; ``doc`` is what ``gradguard lint --explain CODE`` prints."""

    code: str
    name: str
    severity: Severity
    enabled_by_default: bool
    summary: str
    runtime_twin: str | None
    doc: str = ""
    bad_example: str = ""
    good_example: str = ""


_DOCS: dict[str, tuple[str, str, str]] = {
    "GG100": (
        """## What it does
Reports a file that does not parse as Python, at the line of the syntax error.

## Why is this bad?
Nothing in the file can be checked until it parses; the other files are still linted.

## Fix
Fix the syntax error.
""",
        "def broken(:\n    pass\n",
        "def fixed():\n    pass\n",
    ),
    "GG101": (
        """## What it does
Flags a forward call of a model known to be in training mode inside a `torch.no_grad()` or
`torch.inference_mode()` block, or in a function decorated with one. A model is known to be in
training mode when this function switched it with `train()`, or built it here from a module class
with dropout or BatchNorm (a class of this file, a `torch.nn` layer, a `torchvision.models`
factory, or an imported class whose checkpoint is loaded here with `load_state_dict`).

## Why is this bad?
No gradients means inference, but the model still behaves as in training: dropout drops
activations at random and BatchNorm normalises with the batch's statistics and overwrites its
running statistics. Predictions are noisy and the model's state changes under you.

## Example
```python
model.train()
...
with torch.no_grad():
    predictions = model(x)
```

## Fix
Call `model.eval()` before the block, or use `with gradguard.evaluating(model):`, which sets eval
mode and no_grad together and restores every flag after.

## Leaves alone
Models whose mode is unknown here (a teacher, an EMA copy, a parameter, a model handed to a
function of another module); blocks that contain a backward (a deliberate no_grad section inside
training code); `train()` called while gradients are already off (BatchNorm recalibration such as
`update_bn`); blocks under `gradguard.allow("train-mode-without-grad")` (Monte-Carlo dropout).

Runtime twin: GG002 `train-mode-without-grad`.
""",
        """import torch


def evaluate(model, loader):
    model.train()
    with torch.no_grad():
        return [model(x) for x in loader]
""",
        """import torch


def evaluate(model, loader):
    model.eval()
    with torch.no_grad():
        return [model(x) for x in loader]
""",
    ),
    "GG102": (
        """## What it does
Flags a forward call of a model known to be in eval mode (`eval()` or `train(False)` in this
function, or in a helper of this module it calls) while gradients may be on, when the result never
reaches a `backward()` or `torch.autograd.grad` in the function and is not returned or stored.

## Why is this bad?
Eval mode says "inference", but with gradients on every forward records an autograd graph and
keeps the activations it needs: memory and time spent for a backward that never comes.

## Example
```python
model.eval()
for x, y in val_loader:
    correct += (model(x).argmax(1) == y).sum().item()
```

## Fix
Wrap the evaluation in `with torch.no_grad():` (or `torch.inference_mode()`), or use
`with gradguard.evaluating(model):`.

## Leaves alone
Adversarial examples, saliency maps, Grad-CAM (the result reaches a backward or
`autograd.grad`); bodies of functions decorated with `@torch.no_grad()` or
`@torch.inference_mode()`, generators included, or with a project's own decorator named for
no_grad or inference (`@smart_inference_mode()`); helpers this module only calls under no_grad;
results returned to the caller, stored on an object or handed to another function; calls on
attributes that are not models (`self.tokenizer(x)`).

Runtime twin: GG001 `graph-in-inference`.
""",
        """def evaluate(model, loader):
    model.eval()
    correct = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
    return correct
""",
        """import torch


def evaluate(model, loader):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct
""",
    ),
    "GG103": (
        """## What it does
Flags `optimizer.step()` (or `scaler.step(optimizer)`) that a `model.eval()` reaches without a
`model.train()` on some path: across loop back-edges (evaluation at the end of an epoch, training
again at the top of the next one) and through helpers of this module (`validate(model)` that leaves
the model in eval). A call of a helper of this module whose step the model reaches as it was
handed over (`train_one_epoch(model, loader, optimizer)` that never calls `model.train()`, directly
or a few helpers down) counts as a step at that call.

## Why is this bad?
The parameters are trained with dropout off and BatchNorm frozen on its running statistics: the
training is not the one you wrote, and nothing fails, it only trains worse.

## Example
```python
model.train()
for epoch in range(epochs):
    for x, y in loader:
        ...
        optimizer.step()
    validate(model)      # calls model.eval()
```

## Fix
Call `model.train()` at the top of every epoch (after each evaluation), or evaluate inside
`with gradguard.evaluating(model):`, which restores the training mode after.

## Leaves alone
A sub-module put in eval while its parent is in train (`model.backbone.eval()` to freeze
BatchNorm); loop variables (`for m in model.modules(): m.eval()`); a teacher or target network in
eval while another model switched here trains (distillation, DQN), unless the optimizer is built
here from the eval model's parameters; a model in eval that is not trained in this function
(no `train()` and no forward of it reaching the backward); a mode unknown at the function's entry;
a stepping helper that puts the model in training itself (`model.train()` at its top, or a helper
of its own that may switch modes), or that hands the model to code it cannot see first.

Runtime twin: GG004 `eval-mode-training`.
""",
        """def fit(model, optimizer, loader, epochs):
    model.train()
    for epoch in range(epochs):
        for x in loader:
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
        model.eval()
""",
        """def fit(model, optimizer, loader, epochs):
    for epoch in range(epochs):
        model.train()
        for x in loader:
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
        model.eval()
""",
    ),
    "GG104": (
        """## What it does
Flags the statement `torch.set_grad_enabled(False)` (any spelling: `torch.autograd`, an imported
name, `mode=False`) when some path leaves the function with gradients still off.

## Why is this bad?
The grad mode is per thread and outlives the function: the caller's training step runs without
gradients, and its `backward()` raises far from the line that caused it.

## Example
```python
def predict(model, x):
    torch.set_grad_enabled(False)
    return model(x)
```

## Fix
Use the `with` form (`with torch.no_grad():`), or restore the previous mode in a `finally`.

## Leaves alone
The `with torch.set_grad_enabled(False):` form; a restore in `finally`; a restore on every
path (to `True` or to a saved `torch.is_grad_enabled()`); a switch and its undo under the same
`if flag:`; a context manager's `__enter__` (its `__exit__` restores); a script's top level (the
process ends with it).

Runtime twin: GG002 `train-mode-without-grad` (the training that follows runs without gradients).
""",
        """import torch


def predict(model, x):
    model.eval()
    torch.set_grad_enabled(False)
    return model(x)
""",
        """import torch


def predict(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)
""",
    ),
    "GG105": (
        """## What it does
Flags `backward()` (or `torch.autograd.backward` / `torch.autograd.grad`) on a value computed under
`torch.no_grad()` or `torch.inference_mode()` on every path that reaches it.

## Why is this bad?
A value computed without gradients has no graph: the backward raises `element 0 of tensors does
not require grad`, or, through other terms of the loss, silently trains only part of the model.

## Example
```python
with torch.no_grad():
    loss = criterion(model(x), y)
    loss.backward()
```

## Fix
Compute the loss outside the no_grad block (or inside a `torch.enable_grad()` block).

## Leaves alone
Values computed in an `enable_grad` block inside the no_grad one; values computed without
gradients on one path only; tensors that only are read under no_grad (`p.grad`); a leaf that asks
for gradients afterwards (`requires_grad_()`); a backward inside no_grad on a value computed
with gradients (that works).

Runtime twin: GG003 `backward-without-grad`.
""",
        """import torch


def step(model, criterion, optimizer, x, y):
    optimizer.zero_grad()
    with torch.no_grad():
        loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
""",
        """def step(model, criterion, optimizer, x, y):
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
""",
    ),
    "GG106": (
        """## What it does
Flags `acc += t` or `acc.append(t)` inside a loop when `t` comes from a model's forward computed
with gradients possibly on, and the local accumulator `acc` never reaches a backward (nor is
returned, stored on an object, or handed to a function).

## Why is this bad?
`total_loss += loss` keeps a reference to every iteration's autograd graph: memory grows with
every batch until the loop ends (or runs out).

## Example
```python
for x, y in loader:
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
    total_loss += loss
```

## Fix
Accumulate a plain number or a detached tensor: `total_loss += loss.item()` (or
`loss.detach()`).

## Leaves alone
`.item()`, `.detach()`, `float()`, `.cpu().numpy()` values; values computed under no_grad;
accumulators that later reach a backward (REINFORCE's `torch.stack(log_probs)`, a summed
multi-scale loss) or are returned to the caller.

Runtime twin: GG001 `graph-in-inference`.
""",
        """import torch


def train(model, criterion, optimizer, loader):
    total_loss = 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss
    print(total_loss.item())
""",
        """def train(model, criterion, optimizer, loader):
    total_loss = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    print(total_loss)
""",
    ),
    "GG107": (
        """## What it does
Flags `optimizer.step()` when some path from the last `zero_grad()` (of that optimizer, or of a
model) reaches it with no backward of any form: `x.backward()`, `torch.autograd.backward`,
`accelerator.backward`, `fabric.backward`, `self.manual_backward`, `scaler.scale(x).backward()`,
a helper of this module that does one.

## Why is this bad?
The gradients were just zeroed: the step does nothing, or only applies weight decay and momentum,
while the loop looks like it trains.

## Example
```python
optimizer.zero_grad()
loss = criterion(model(x), y)
if log_gradients:
    loss.backward()
optimizer.step()
```

## Fix
Call `loss.backward()` on every path that reaches the step.

## Leaves alone
`step(closure)` (the closure does the backward); code that assigns gradients itself (`.grad`,
Opacus's `.grad_sample`); another optimizer's `zero_grad()`; a loop over optimizers; a step with
nothing known since the function's entry; a loss handed to a function this module cannot see.

Runtime twin: GG005 `step-without-gradients`.
""",
        """def train(model, criterion, optimizer, loader):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        optimizer.step()
""",
        """def train(model, criterion, optimizer, loader):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
""",
    ),
    "GG108": (
        """## What it does
Flags `@torch.no_grad()`, `@torch.inference_mode()`, `@torch.enable_grad()` and
`@torch.set_grad_enabled(...)` on an `async def` or an async generator, at the `def` line.

## Why is this bad?
Torch's decorators wrap the call, and calling an `async def` only creates the coroutine: the body
runs later, when awaited, outside the mode. The decorator silently does nothing.

## Example
```python
@torch.no_grad()
async def serve(model, x):
    return model(x)
```

## Fix
Use the `with` form inside the body, or `@gradguard.inference_fn`, which holds the mode around
every step of the coroutine.

## Leaves alone
Sync generators (torch enters the mode around each step of those).

Runtime twin: none (nothing happens at run time to observe).
""",
        """import torch


@torch.no_grad()
async def serve(model, x):
    return model(x)
""",
        """import torch


async def serve(model, x):
    with torch.no_grad():
        return model(x)
""",
    ),
    "GG109": (
        """## What it does
Flags `model.train(x)` where `x` was read from a `.training` flag
(`was_training = model.training` ... `model.train(was_training)`).

## Why is this bad?
`train(mode)` sets every submodule to that one mode: sub-modules that were frozen in eval
(BatchNorm of a fine-tuned backbone, a frozen encoder) wake up in training mode, with nothing to
show for it.

## Example
```python
was_training = model.training
model.eval()
...
model.train(was_training)
```

## Fix
Use `with gradguard.evaluating(model):`, which restores each submodule's own flag.

## Leaves alone
Literal arguments (`train()`, `train(True)`); a child synced to another module's flag
(`child.train(parent.training)`); the body of a module's own `train(self, mode)` override.

Runtime twin: GG006 `scope-state-changed` (the flags a scope restores).
""",
        """def probe(model, x):
    was_training = model.training
    model.eval()
    y = model(x)
    model.train(was_training)
    return y
""",
        """import gradguard


def probe(model, x):
    with gradguard.evaluating(model):
        return model(x)
""",
    ),
    "GG110": (
        """## What it does
Off unless selected. Flags a hand-written `model.eval()` followed (within a few statements) by
`with torch.no_grad():` or `with torch.inference_mode():`, at the `eval()` line.

## Why is this bad?
It is not wrong, but it is the pattern every other rule here is about: the mode has to be put back
by hand afterwards (and `train(was_training)` puts it back wrong).

## Example
```python
model.eval()
with torch.no_grad():
    predictions = model(x)
```

## Fix
Replace the pair with `with gradguard.evaluating(model):`, which restores every flag exactly.

Runtime twin: none.
""",
        """import torch


def predict(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)
""",
        """import gradguard


def predict(model, x):
    with gradguard.evaluating(model):
        return model(x)
""",
    ),
    "GG190": (
        """## What it does
With `--warn-unused-ignores`, flags a suppression comment (`# gradguard: ignore[...]`,
`# noqa: GG1xx`) that silenced no finding of a rule that ran, and a code or name in one that is
no gradguard rule.

## Why is this bad?
A suppression outlives the code it was written for: after a fix it hides the next real mistake on
that line, and a misspelt name never silenced anything.

## Example
```python
total += loss.item()  # gradguard: ignore[graph-accumulated]
```

## Fix
Remove the comment, or the codes in it that no longer apply.

## Leaves alone
A bare `# noqa` and other tools' codes (`# noqa: E501`): they may be there for another linter.
Codes of rules that did not run (not selected) are not judged.

Runtime twin: none.
""",
        """def train(model, optimizer, loader):
    total = 0.0
    for x, y in loader:
        loss = model(x, y)
        total += loss.item()  # gradguard: ignore[graph-accumulated]
    return total
""",
        """def train(model, optimizer, loader):
    total = 0.0
    for x, y in loader:
        loss = model(x, y)
        total += loss.item()
    return total
""",
    ),
}


def _documented(rule: Rule) -> Rule:
    doc = _DOCS.get(rule.code)
    if doc is None:
        return rule
    return replace(rule, doc=doc[0], bad_example=doc[1], good_example=doc[2])


RULES: dict[str, Rule] = {
    rule.code: _documented(rule)
    for rule in (
        Rule("GG100", "parse-error", "error", True, "the file does not parse", None),
        Rule(
            "GG101",
            "train-mode-forward-without-grad",
            "warning",
            True,
            "a model known to be in training mode runs forward with gradients disabled",
            "GG002",
        ),
        Rule(
            "GG102",
            "eval-forward-with-grad",
            "warning",
            True,
            "a model known to be in eval runs forward with gradients on, and the result never "
            "reaches a backward",
            "GG001",
        ),
        Rule(
            "GG103",
            "step-in-eval-mode",
            "error",
            True,
            "an optimizer steps while the model is left in eval mode",
            "GG004",
        ),
        Rule(
            "GG104",
            "grad-disabled-not-restored",
            "warning",
            True,
            "torch.set_grad_enabled(False) is not undone on some path out of the function",
            "GG002",
        ),
        Rule(
            "GG105",
            "backward-without-grad",
            "error",
            True,
            "backward() on a value computed with gradients disabled",
            "GG003",
        ),
        Rule(
            "GG106",
            "graph-accumulated",
            "warning",
            True,
            "a loss tensor with its graph is accumulated in a loop",
            "GG001",
        ),
        Rule(
            "GG107",
            "step-without-backward",
            "error",
            True,
            "an optimizer steps with no backward since the last zero_grad()",
            "GG005",
        ),
        Rule(
            "GG108",
            "grad-decorator-on-async",
            "error",
            True,
            "a torch grad-mode decorator on an async def does nothing for its body",
            None,
        ),
        Rule(
            "GG109",
            "train-restores-snapshot",
            "warning",
            True,
            "train(was_training) wakes submodules that were frozen in eval",
            "GG006",
        ),
        Rule(
            "GG110",
            "eval-no-grad-pair",
            "note",
            False,
            "a hand-written eval() + no_grad() pair that gradguard.evaluating replaces",
            None,
        ),
        Rule(
            "GG190",
            "unused-ignore",
            "warning",
            False,
            "a suppression comment that suppresses nothing, or names an unknown rule "
            "(reported with --warn-unused-ignores)",
            None,
        ),
    )
}
