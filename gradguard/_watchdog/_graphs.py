"""GG001: a graph built in eval mode with gradients on, freed without being used by backward."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from gradguard import _findings
from gradguard._watchdog._common import fail_open, model_name, report, status

_METADATA_KEY = "gradguard.graph_use"

# Graphs freed unused, reported at the next safe point: a finalizer must not raise or warn.
pending: list[tuple[str, str, tuple[str, int], str]] = []


class _GraphUse:
    """Lives in the metadata of a forward's output nodes: dies with the graph, knows if used."""

    __slots__ = ("__weakref__", "armed", "inside", "model", "site", "used")
    # Reached through the class, so a finalizer run at interpreter exit still finds it.
    sink: ClassVar[list[tuple[str, str, tuple[str, int], str]]] = pending

    def __init__(self, model: str, site: tuple[str, int], inside: str) -> None:
        self.model = model
        self.site = site
        self.inside = inside
        self.used = False
        self.armed = True

    def mark_used(self, _grad_outputs: Any) -> None:
        self.used = True

    def __del__(self) -> None:
        if self.armed and not self.used:
            self.armed = False
            # No warning or exception from a finalizer: queue it for the next safe point.
            self.sink.append(("graph-in-inference", self.model, self.site, self.inside))


graphs: weakref.WeakSet[_GraphUse] = weakref.WeakSet()


def _output_nodes(output: Any) -> Iterator[Any]:
    if isinstance(output, torch.Tensor):
        if output.grad_fn is not None:
            yield output.grad_fn
        return
    if isinstance(output, dict):
        output = output.values()
    elif not isinstance(output, (tuple, list)):
        return
    for item in output:
        if isinstance(item, torch.Tensor) and item.grad_fn is not None:
            yield item.grad_fn


@fail_open("graph-in-inference")
def track_graph(module: nn.Module, output: Any) -> None:
    """Mark the graph of an eval-mode forward's output, to report it if it dies unused."""
    if not status.installed:
        return  # a forward that was in flight in another thread when the watchdog was removed
    nodes = [node for node in _output_nodes(output) if _METADATA_KEY not in node.metadata]
    if not nodes or _findings.is_allowed("graph-in-inference"):
        return
    site, inside = _findings.user_site_inside(sys._getframe(1))
    use = _GraphUse(model_name(module), site, inside)
    for node in nodes:
        node.metadata[_METADATA_KEY] = use
        node.register_prehook(use.mark_used)
    graphs.add(use)


def _graph_message(
    model: str, site: tuple[str, int], inside: str, still_alive: bool
) -> tuple[str, str]:
    fate = (
        "was still alive and unused when the watchdog was removed"
        if still_alive
        else "was freed without being used by backward or torch.autograd.grad"
    )
    return (
        f"{model} is in eval mode and ran forward at {site[0]}:{site[1]}{inside} with gradients "
        f"enabled; the autograd graph it built {fate}, so it only cost memory and time "
        "(a forgotten torch.no_grad(), or an eval output accumulated into a running total)",
        "wrap the evaluation in `with torch.no_grad():` (or `with gradguard.evaluating(model):`), "
        "or accumulate loss.item() instead of the loss tensor; if you need the graph "
        "(saliency, adversarial inputs) use evaluating(model, mode='grad') or "
        "gradguard.allow('graph-in-inference')",
    )


def flush_pending() -> None:
    """Report the graphs found freed unused since the last safe point."""
    while pending:
        try:
            check, model, site, inside = pending.pop(0)
        except IndexError:  # another thread took it
            return
        message, fix = _graph_message(model, site, inside, still_alive=False)
        report(check, message, fix, site)


def forget_all() -> None:
    """Disarm every graph and drop every finding waiting (at installation: none are its own)."""
    for use in list(graphs):
        use.armed = False
    graphs.clear()
    pending.clear()


def report_unused_graphs(strict: bool | None) -> None:
    """At removal: report every graph freed unused or still alive and unused, then forget all."""
    alive = [use for use in list(graphs) if use.armed and not use.used]
    for use in list(graphs):
        use.armed = False
    graphs.clear()
    reports: list[tuple[str, tuple[str, int], str, bool]] = []
    while pending:
        _check, model, site, inside = pending.pop(0)
        reports.append((model, site, inside, False))
    reports.extend((use.model, use.site, use.inside, True) for use in alive)
    for model, site, inside, still_alive in reports:
        message, fix = _graph_message(model, site, inside, still_alive)
        _findings.report("graph-in-inference", message, fix, site=site, strict=strict)
