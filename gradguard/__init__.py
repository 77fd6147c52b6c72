"""gradguard: evaluation and inference scopes for PyTorch that restore every flag exactly.

Public names only; everything lives in private modules. Importing gradguard patches nothing.
"""

from gradguard import _watchdog
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
from gradguard._scopes import allow, evaluating, frozen
from gradguard._watchdog import WatchHandle, unwatch, watch

__version__ = "0.1.0"

__all__ = [
    "CHECKS",
    "EvalModeTrainingWarning",
    "Finding",
    "GradGuardError",
    "GradGuardWarning",
    "GraphInInferenceWarning",
    "InternalCheckWarning",
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
    "unwatch",
    "watch",
]

# GRADGUARD_WATCH installs the watchdog once every public name above exists.
_watchdog._watch_from_environment()
