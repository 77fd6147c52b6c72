"""The chart of ``gradguard bench --plot FILE``: peak memory and median latency per mode.

One column per model family: peak memory per mode on top, median latency per mode below with the
spread of the timed runs (first to third quartile) as error bars; the machine in the title.
matplotlib is an optional dependency (``pip install "gradguard[plot]"``), imported only here and
only when a chart is drawn; the figure is drawn without pyplot, so no GUI backend is touched.
"""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path

from gradguard._measure import Measurement

#: The file types --plot writes, by suffix.
FORMATS = (".png", ".svg")
INSTALL_HINT = 'pip install "gradguard[plot]" (or pip install matplotlib)'
# Inches per family column and for the whole height; 100 dots per inch for PNG.
COLUMN_WIDTH = 4.0
HEIGHT = 6.5
DPI = 100
# One colour per mode, the baseline in grey, so a chart reads the same for every family.
COLOURS = {
    "grad": "#9e9e9e",
    "no_grad": "#1f77b4",
    "inference": "#2ca02c",
    "evaluating": "#ff7f0e",
}
MIN_WIDTH = 6.0
UNITS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024), ("B", 1))


class PlotError(Exception):
    """The chart cannot be drawn: matplotlib is missing, or the file type is not supported."""


def check_plot_target(path: str) -> None:
    """Refuse, before anything is measured, a file type --plot cannot write or a missing matplotlib.

    Raises:
        PlotError: the suffix is not ``.png``/``.svg``, or matplotlib is not installed (the message
            says how to install it).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise PlotError(f"--plot takes a file ending in {' or '.join(FORMATS)}, got {path!r}")
    try:
        import matplotlib  # noqa: F401  # only whether it imports
    except ImportError as error:
        message = f"--plot needs matplotlib, which is not installed: {INSTALL_HINT}"
        raise PlotError(message) from error


def _quartiles(samples: Sequence[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return (samples[0], samples[0]) if samples else (0.0, 0.0)
    low, _, high = statistics.quantiles(samples, n=4, method="inclusive")
    return low, high


# Characters of the 10-point title per inch of figure: a long title line is wrapped to fit, or a
# one-family chart (6 inches wide) would cut off both of its ends.
TITLE_CHARACTERS_PER_INCH = 12


def _wrapped(title: str, width: float) -> str:
    """``title`` with every line wrapped to fit a figure ``width`` inches wide."""
    limit = max(int(width * TITLE_CHARACTERS_PER_INCH), 20)
    return "\n".join(
        "\n".join(textwrap.wrap(line, limit, break_on_hyphens=False) or [""])
        for line in title.splitlines()
    )


def plot_results(
    results: Sequence[tuple[str, int, Measurement]], path: str, title: str
) -> tuple[int, int]:
    """Draw the chart of ``results`` (family name, batch size, measurement) into ``path``.

    Returns:
        The figure's size in pixels at :data:`DPI` (SVG sizes are in points, 72 per inch).

    Raises:
        PlotError: as :func:`check_plot_target`.
    """
    check_plot_target(path)
    import matplotlib
    from matplotlib.figure import Figure

    columns = max(len(results), 1)
    width = max(COLUMN_WIDTH * columns, MIN_WIDTH)
    figure = Figure(figsize=(width, HEIGHT), dpi=DPI, layout="constrained")
    figure.suptitle(_wrapped(title, width), fontsize=10)
    axes = figure.subplots(2, columns, squeeze=False)
    for column, (name, batch_size, measurement) in enumerate(results):
        modes = list(measurement.modes)
        colours = [COLOURS.get(mode, "#7f7f7f") for mode in modes]
        positions = list(range(len(modes)))
        memory_axes, latency_axes = axes[0][column], axes[1][column]

        largest = max((measurement.modes[mode].peak_bytes for mode in modes), default=0)
        unit, size = next((u for u in UNITS if largest >= u[1]), UNITS[-1])
        peaks = [measurement.modes[mode].peak_bytes / size for mode in modes]
        memory_axes.bar(positions, peaks, color=colours)
        memory_axes.set_title(f"{name}, batch {batch_size}", fontsize=10)
        memory_axes.set_ylabel(f"peak memory ({unit})")
        for position, peak in zip(positions, peaks):
            memory_axes.annotate(
                f"{peak:.1f}", (position, peak), ha="center", va="bottom", fontsize=8
            )

        medians = [measurement.modes[mode].median_ms for mode in modes]
        spreads = [_quartiles(measurement.modes[mode].latencies_ms) for mode in modes]
        below = [max(median - low, 0.0) for median, (low, _) in zip(medians, spreads)]
        above = [max(high - median, 0.0) for median, (_, high) in zip(medians, spreads)]
        latency_axes.bar(positions, medians, color=colours, yerr=[below, above], capsize=4)
        latency_axes.set_ylabel("median latency (ms), runs' quartiles")
        for chart in (memory_axes, latency_axes):
            chart.set_xticks(positions, modes, fontsize=8)
            chart.set_ylim(bottom=0)
    # Text stays text in SVG (searchable, readable by screen readers), not glyph outlines.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(path, dpi=DPI)
    width, height = figure.get_size_inches()
    return round(width * DPI), round(height * DPI)
