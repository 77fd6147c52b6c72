"""Helpers for tests: check that code under test left no gradguard scope or hook behind.

``assert_no_holds()`` is the check; ``leaves_nothing()`` wraps a block with it; the pytest
fixture ``gradguard_no_holds`` runs it after a test (bring it in with
``pytest_plugins = ["gradguard.testing"]`` or ``from gradguard.testing import gradguard_no_holds``
in a ``conftest.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from gradguard import _findings, _scopes, _state

__all__ = ["assert_no_holds", "gradguard_no_holds", "leaves_nothing"]


def _leftovers(grad_enabled: bool | None) -> list[str]:
    problems: list[str] = []
    trees, params = _state.held_counts()
    if trees:
        problems.append(f"{trees} module tree(s) still held in eval by an open scope")
    if params:
        problems.append(f"{params} parameter(s) still held with requires_grad=False")
    with _state._lock:
        optimizers = len(_scopes._optimizer_counts)
    hooked = [type(root).__name__ for root in _scopes.hooked_roots()]
    if hooked:
        problems.append(f"still watched for GG001 by an open scope: {', '.join(hooked)}")
    if optimizers:
        problems.append(f"{optimizers} optimizer(s) still held in eval by an open scope")
    watches = getattr(_scopes._watches, "stack", None)
    if watches:
        problems.append(f"{len(watches)} gradguard scope(s) still open in this thread")
    allowed = getattr(_findings._local, "allowed", None)
    if allowed:
        problems.append(f"checks still silenced in this thread: {', '.join(sorted(allowed))}")
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    pair = top(False) if top is not None else None
    if pair is not None and getattr(pair[0], "__module__", "").startswith("gradguard"):
        problems.append("a gradguard saved-tensors hook is still pushed in this thread")
    if grad_enabled is not None and torch.is_grad_enabled() is not grad_enabled:
        problems.append(
            f"gradients are {'enabled' if torch.is_grad_enabled() else 'disabled'} in this "
            f"thread, expected {'enabled' if grad_enabled else 'disabled'}"
        )
    return problems


def assert_no_holds(*, grad_enabled: bool | None = True) -> None:
    """Assert that no gradguard scope is open and nothing of gradguard's is left pushed.

    Checks: no module tree held in eval and no parameter held frozen (in any thread: those flags
    are shared), no optimizer held in eval, gradguard's forward hook on no model, and, in the
    calling thread (grad mode and hook stacks are thread local): no scope open, no check
    silenced by ``allow()``, no gradguard saved-tensors hook pushed, and the grad mode equal to
    ``grad_enabled``. Nothing is changed.

    Args:
        grad_enabled: the grad mode this thread must be in; ``None`` skips that check.

    Raises:
        AssertionError: listing everything that was left behind.

    Example:
        >>> import torch, gradguard
        >>> from gradguard.testing import assert_no_holds
        >>> with gradguard.evaluating(torch.nn.Linear(2, 2)):
        ...     pass
        >>> assert_no_holds()
    """
    problems = _leftovers(grad_enabled)
    if problems:
        raise AssertionError("gradguard left state behind: " + "; ".join(problems))


@contextlib.contextmanager
def leaves_nothing() -> Iterator[None]:
    """Run a block and :func:`assert_no_holds` after it, with the grad mode it started in.

    Thread locality: the grad-mode and hook-stack parts are checked in the calling thread.

    Raises:
        AssertionError: the block left a scope open, a hook pushed or the grad mode changed.

    Example:
        >>> import torch, gradguard
        >>> from gradguard.testing import leaves_nothing
        >>> with leaves_nothing():
        ...     with gradguard.evaluating(torch.nn.Linear(2, 2)):
        ...         pass
    """
    grad_enabled = torch.is_grad_enabled()
    yield
    assert_no_holds(grad_enabled=grad_enabled)


try:
    import pytest
except ImportError:  # pytest is not a dependency: the fixture exists only where it is installed
    pass
else:

    @pytest.fixture
    def gradguard_no_holds() -> Iterator[None]:
        """Fixture: fail the test if it leaves a gradguard scope open or a hook pushed.

        The grad mode the test started with must also be the one it ends with.
        """
        with leaves_nothing():
            yield
