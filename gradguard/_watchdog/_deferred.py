"""Installing the watchdog when the program first imports torch: a program without it pays nothing.

``gradguard run`` does not import torch itself: a script that never imports torch runs without
it (no second of start-up, no hundreds of MiB). The watchdog is installed by a post-import hook
that fires once, right after ``import torch`` completes, wherever in the program that happens.

This module does not import torch.
"""

from __future__ import annotations

import atexit
import sys
from typing import TYPE_CHECKING, Any

import wrapt

from gradguard import _config

if TYPE_CHECKING:
    from gradguard._watchdog._install import WatchHandle


class DeferredWatch:
    """A watchdog installation that waits for torch; :meth:`close` removes it either way.

    Attributes:
        handle: the installation's ``WatchHandle`` once torch was imported, else None.
        error: why installing failed when torch was imported, else None (the program goes on).
    """

    def __init__(self, strict: bool | None, deep: bool) -> None:
        self.strict = strict
        self.deep = deep
        self.handle: WatchHandle | None = None
        self.error: BaseException | None = None
        self.closed = False

    def _torch_imported(self, _torch: Any) -> None:
        if self.closed or self.handle is not None:
            return
        try:
            from gradguard._watchdog._install import watch

            self.handle = watch(strict=self.strict, deep=self.deep)
        except Exception as error:  # fail open: the program's own import must succeed
            self.error = error

    def close(self) -> None:
        """Remove the installation (if torch was imported), or stop waiting for torch.

        Raises:
            GradGuardError: strict, and a graph was still alive and unused.
        """
        self.closed = True
        if self.handle is not None:
            self.handle.close()


def watch_when_torch_imported(*, strict: bool | None, deep: bool) -> DeferredWatch:
    """Install the watchdog now if torch is imported, else as soon as the program imports it."""
    deferred = DeferredWatch(strict, deep)
    if "torch" in sys.modules:
        deferred._torch_imported(sys.modules["torch"])
    else:
        wrapt.register_post_import_hook(deferred._torch_imported, "torch")
    return deferred


def _unwatch_at_exit(deferred: DeferredWatch) -> None:
    deferred.closed = True
    if deferred.handle is not None:
        from gradguard._watchdog._install import unwatch

        unwatch()


def watch_from_environment() -> DeferredWatch | None:
    """``GRADGUARD_WATCH`` at ``import gradguard``: watch from the program's import of torch.

    A process that never imports torch (``gradguard lint``, the flake8 plugin) is not slowed
    down by the variable. Both variables are validated now, before anything runs.

    Raises:
        ValueError: ``GRADGUARD_WATCH`` or ``GRADGUARD_STRICT`` holds an invalid value.
    """
    level = _config.watch_level()
    if level is None:
        return None
    _config.is_strict()  # an invalid GRADGUARD_STRICT is refused here, not at torch's import
    deferred = watch_when_torch_imported(strict=None, deep=level == "deep")
    if deferred.error is not None:
        raise deferred.error
    atexit.register(_unwatch_at_exit, deferred)
    return deferred
