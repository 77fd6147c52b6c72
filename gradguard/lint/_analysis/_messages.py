"""The words of every finding: what happened, which receiver, the causing line, and the fix."""

from __future__ import annotations

from gradguard.lint._analysis._module import Fact


def _cause(fact: Fact) -> str:
    if fact[3] == "built":
        return f"built by {fact[2]} at line {fact[1]}, and a new module starts in training mode"
    return f"{fact[2]} at line {fact[1]}"


def train_forward_without_grad(receiver: str, mode: Fact, grad: Fact) -> tuple[str, str]:
    return (
        f"`{receiver}` runs forward in training mode ({_cause(mode)}) with gradients disabled "
        f"by {grad[2]} at line {grad[1]}: dropout stays on and BatchNorm updates its running "
        "statistics",
        f"Call `{receiver}.eval()` before the block, or use "
        f"`with gradguard.evaluating({receiver}):`.",
    )


def eval_forward_with_grad(receiver: str, mode: Fact) -> tuple[str, str]:
    return (
        f"`{receiver}` runs forward in eval mode ({_cause(mode)}) with gradients possibly on, and "
        "the result never reaches a backward: an autograd graph is built and kept for nothing",
        "Wrap the evaluation in `with torch.no_grad():` (or "
        f"`with gradguard.evaluating({receiver}):`).",
    )


def step_in_eval(call: str, receiver: str, mode: Fact) -> tuple[str, str]:
    return (
        f"`{call}` may run while `{receiver}` is in eval mode: {_cause(mode)} reaches this step "
        f"without `{receiver}.train()` on some path, so dropout is off and BatchNorm is frozen",
        f"Call `{receiver}.train()` before the training steps (at the top of every epoch).",
    )


def step_in_eval_through(
    call: str, receiver: str, mode: Fact, helper: str, step: str, step_line: int
) -> tuple[str, str]:
    return (
        f"`{call}` may run while `{receiver}` is in eval mode: {_cause(mode)} reaches this call "
        f"without `{receiver}.train()` on some path, and `{helper}` steps with `{step}` at line "
        f"{step_line} without putting it back in training, so dropout is off and BatchNorm is "
        "frozen",
        f"Call `{receiver}.train()` before the training steps (at the top of every epoch), or "
        f"at the top of `{helper}`.",
    )


def grad_not_restored(spelled: str, function: str, exit_line: int) -> tuple[str, str]:
    return (
        f"{spelled} is not undone on some path out of `{function}` (leaving at line "
        f"{exit_line}): gradients stay disabled for the caller and everything after it",
        "Use `with torch.no_grad():` instead, or restore the previous mode in a `finally`.",
    )


def backward_without_grad(call: str, value: str, grad: Fact) -> tuple[str, str]:
    return (
        f"`{call}` on `{value}`, which is computed with gradients disabled ({grad[2]} at line "
        f"{grad[1]}) on every path: it has no graph, so backward raises",
        f"Compute `{value}` outside the {grad[2]} block (or under `torch.enable_grad()`).",
    )


def graph_accumulated(statement: str, accumulator: str, source: str, line: int) -> tuple[str, str]:
    return (
        f"`{statement}` keeps every iteration's autograd graph alive: the value comes from "
        f"{source} at line {line} with gradients on, and `{accumulator}` never reaches a backward",
        "Accumulate a plain number or a detached tensor: `loss.item()` or `loss.detach()`.",
    )


def step_without_backward(call: str, optimizer: str, zeroed: Fact) -> tuple[str, str]:
    return (
        f"`{call}` with no backward since {zeroed[2]} at line {zeroed[1]} on some path: "
        f"`{optimizer}` steps with no new gradients",
        f"Call `loss.backward()` before `{call}` on every path that reaches it.",
    )


def train_restores_snapshot(call: str, receiver: str, source: Fact) -> tuple[str, str]:
    return (
        f"`{call}` restores a snapshot read from {source[2]} at line {source[1]}: it sets every "
        f"submodule of `{receiver}` to that one mode, waking the ones that were frozen in eval",
        f"Use `with gradguard.evaluating({receiver}):`, which restores each submodule's own flag.",
    )


def eval_no_grad_pair(receiver: str, with_spelled: str, with_line: int) -> tuple[str, str]:
    return (
        f"`{receiver}.eval()` followed by {with_spelled} at line {with_line} is what "
        f"`with gradguard.evaluating({receiver}):` does, with every flag restored exactly after",
        f"Replace the pair with `with gradguard.evaluating({receiver}):`.",
    )
