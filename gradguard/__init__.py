"""gradguard: evaluation and inference scopes for PyTorch that restore every flag exactly.

Public names only; everything lives in private modules. Importing gradguard patches nothing and
does not import torch: the names that need it are loaded on first use, so the pytest plugin costs
nothing in a test run that does not ask for it. ``GRADGUARD_WATCH`` installs the watchdog at import.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from gradguard._config import configure
from gradguard._findings import (
    CHECKS,
    EvalModeTrainingWarning,
    Finding,
    GradGuardError,
    GradGuardWarning,
    GraphInInferenceWarning,
    InternalCheckWarning,
    ScopeStateChangedWarning,
    StepWithoutGradientsWarning,
    TrainModeWithoutGradWarning,
    clear_findings,
    findings,
)

if TYPE_CHECKING:
    from gradguard._inference import inference_fn
    from gradguard._measure import Measurement, ModeResult, measure
    from gradguard._scopes import allow, evaluating, frozen
    from gradguard._watchdog import WatchHandle, unwatch, watch

__version__ = "0.2.0"

# Public name -> the private module that defines it (each one imports torch).
_LAZY = {
    "allow": "gradguard._scopes",
    "evaluating": "gradguard._scopes",
    "frozen": "gradguard._scopes",
    "inference_fn": "gradguard._inference",
    "Measurement": "gradguard._measure",
    "ModeResult": "gradguard._measure",
    "measure": "gradguard._measure",
    "WatchHandle": "gradguard._watchdog",
    "unwatch": "gradguard._watchdog",
    "watch": "gradguard._watchdog",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'gradguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CHECKS",
    "EvalModeTrainingWarning",
    "Finding",
    "GradGuardError",
    "GradGuardWarning",
    "GraphInInferenceWarning",
    "InternalCheckWarning",
    "Measurement",
    "ModeResult",
    "ScopeStateChangedWarning",
    "StepWithoutGradientsWarning",
    "TrainModeWithoutGradWarning",
    "WatchHandle",
    "__version__",
    "allow",
    "clear_findings",
    "configure",
    "evaluating",
    "findings",
    "frozen",
    "inference_fn",
    "measure",
    "unwatch",
    "watch",
]


def _started_as_the_command() -> bool:
    """Whether this process is the ``gradguard`` command (console script or ``python -m``)."""
    import sys

    argv = getattr(sys, "orig_argv", sys.argv)
    return os.path.basename(sys.argv[0]) == "gradguard" or argv[1:3] == ["-m", "gradguard"]


if os.environ.get("GRADGUARD_WATCH", "").strip():
    # Asked for explicitly: install the watchdog now (an invalid value is a ValueError here).
    try:
        # Installed when the program imports torch: a process that never does (gradguard lint,
        # the flake8 plugin) pays nothing.
        importlib.import_module("gradguard._watchdog._deferred").watch_from_environment()
    except ValueError as _error:
        if not _started_as_the_command():
            raise
        # The command reports bad input as one line with status 2, not as a traceback.
        import sys

        print(f"gradguard: error: {_error}", file=sys.stderr)
        raise SystemExit(2) from None
