"""GG003: backward fails because gradients were disabled."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from gradguard import _findings
from gradguard._watchdog._common import fail_open, is_compiling, report, status
from gradguard._watchdog._grad_switch import describe_grad_disabled

_NO_GRAD_ERROR = "does not require grad"


@fail_open("backward-without-grad")
def _explain(error: RuntimeError, tensors: Any) -> None:
    """Raise GG003 chained to ``error`` when gradients being off explains it; else return."""
    if isinstance(error, _findings.GradGuardError) or _NO_GRAD_ERROR not in str(error):
        return
    first = tensors[0] if isinstance(tensors, (tuple, list)) and tensors else tensors
    inference = isinstance(first, torch.Tensor) and first.is_inference()
    if torch.is_grad_enabled() and not inference:
        return
    if inference:
        where = "under torch.inference_mode(), so it can never have a graph"
    else:
        where = "while gradients are disabled " + describe_grad_disabled()
    site, inside = _findings.user_site_inside()
    try:
        report(
            "backward-without-grad",
            f"backward(){inside} failed because the loss was computed {where}; PyTorch only says "
            f"{str(error).splitlines()[0]!r}",
            "compute the loss with gradients enabled: run the training step outside the "
            "torch.no_grad()/inference_mode() block, or turn gradients back on with "
            "torch.set_grad_enabled(True) after the evaluation that disabled them",
            site,
        )
    except _findings.GradGuardError as explained:
        raise explained from error


def _explained(error: RuntimeError, tensors: Any) -> BaseException | None:
    """What to raise instead of ``error`` from backward (GG003, chained to it), or None."""
    if is_compiling() or not status.installed:
        return None
    if isinstance(error, _findings.GradGuardError):
        # Explained by the inner wrapper (Tensor.backward calls torch.autograd.backward): from
        # here up, only the program's frames; its cause is PyTorch's error already.
        return error.with_traceback(None)
    try:
        _explain(error, tensors)
    except _findings.GradGuardError as explained:
        # The user's frames and PyTorch's own error matter here, not gradguard's internals.
        explained.__cause__ = error
        explained.__suppress_context__ = True
        return explained.with_traceback(None)
    return None


def explaining(original: Callable[..., Any], first: str) -> Callable[..., Any]:
    """Wrap ``Tensor.backward`` or ``torch.autograd.backward``: only the error path does work.

    ``first`` names the wrapped function's first parameter (``self`` or ``tensors``), which
    callers may pass by keyword: the wrapper takes exactly what the original takes.
    """

    @functools.wraps(original)
    def backward(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except RuntimeError as error:
            raised = _explained(error, args[0] if args else kwargs.get(first))
            if raised is None:
                raise
            raise raised  # noqa: B904  # chained to PyTorch's error by _explained

    return backward


# What PyTorch's own Tensor.backward refers to: ``if has_torch_function_unary(self): ...`` then
# ``torch.autograd.backward(self, gradient, retain_graph, create_graph, inputs=inputs)``.
_TENSOR_BACKWARD_NAMES = (
    "has_torch_function_unary",
    "handle_torch_function",
    "Tensor",
    "backward",
    "torch",
    "autograd",
)


def explaining_tensor_backward(
    original: Callable[..., Any], autograd_backward: Callable[..., Any]
) -> Callable[..., Any]:
    """``Tensor.backward`` with GG003; PyTorch's own two lines done here when it is the known one.

    Every training step calls it, so where ``original`` is PyTorch's known function this does
    its work itself (one Python frame less per ``loss.backward()``), calling
    ``torch.autograd.backward`` as it would: gradguard's wrapper there is skipped (this one
    explains), another tool's layer is not. Otherwise it wraps ``original`` like
    :func:`explaining`.
    """
    code = getattr(original, "__code__", None)
    if (
        code is None
        or code.co_names != _TENSOR_BACKWARD_NAMES
        or getattr(original, "__defaults__", None) != (None, None, False, None)
    ):
        return explaining(original, "self")
    has_torch_function_unary = torch.overrides.has_torch_function_unary
    autograd = torch.autograd
    ours: Any = None  # gradguard's torch.autograd.backward, once patched

    def skipping(wrapper: Callable[..., Any]) -> None:
        nonlocal ours
        ours = wrapper

    @functools.wraps(original)
    def backward(
        self: torch.Tensor,
        gradient: Any = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
        inputs: Any = None,
    ) -> None:
        try:
            if has_torch_function_unary(self):
                # A tensor subclass: PyTorch's own path, its __torch_function__ then this layer
                # again (which explains); from here up, only the program's frames.
                return original(self, gradient, retain_graph, create_graph, inputs)  # type: ignore[no-any-return]
            run = autograd.backward
            if run is ours:
                run = autograd_backward
            run(self, gradient, retain_graph, create_graph, inputs=inputs)
        except RuntimeError as error:
            raised = _explained(error, self)
            if raised is None:
                raise
            raise raised  # noqa: B904  # chained to PyTorch's error by _explained
        return None

    backward._gradguard_skips = skipping  # type: ignore[attr-defined]
    return backward
