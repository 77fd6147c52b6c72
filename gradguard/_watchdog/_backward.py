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
            if is_compiling() or not status.installed:
                raise
            if isinstance(error, _findings.GradGuardError):
                # Explained by the inner wrapper (Tensor.backward calls torch.autograd.backward):
                # from here up, only the program's frames.
                raise error.with_traceback(None)  # noqa: B904  # its cause is PyTorch's error
            try:
                _explain(error, args[0] if args else kwargs.get(first))
            except _findings.GradGuardError as explained:
                # The user's frames and PyTorch's own error matter here, not gradguard's internals.
                raise explained.with_traceback(None) from error
            raise

    return backward
