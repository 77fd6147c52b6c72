"""``gradguard bench --plot FILE``: a real chart from a small run; without matplotlib, a hint."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from torch import nn

import gradguard
from gradguard import _plot, cli
from gradguard._measure import MODES, describe_device

TINY = """
from torch import nn


def build():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 4))
"""


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def svg_texts(path: Path) -> tuple[ET.Element, str]:
    """The SVG's root element and all of its text, joined."""
    root = ET.parse(path).getroot()
    texts = " ".join(
        "".join(element.itertext()) for element in root.iter() if element.tag.endswith("text")
    )
    return root, texts


def test_bench_plot_svg_has_every_mode_label_and_the_machine_in_the_title(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A small `gradguard bench --plot out.svg` run: a valid SVG of the one-family size with the
    family, the four modes, both axes and the machine in it."""
    (tmp_path / "tinymodels.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "chart.svg"
    args = ["--model", "tinymodels:build", "--input-shape", "8", "--batch-size", "4"]
    status = cli.main(["bench", *args, "--repeats", "3", "--warmup", "0", "--plot", str(out)])
    err = capsys.readouterr().err
    assert status == 0, err
    assert err.splitlines()[-1] == f"gradguard bench: wrote {out}"
    root, texts = svg_texts(out)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert (root.get("width"), root.get("height")) == ("432pt", "468pt")  # 6 x 6.5 inches
    for label in ("tinymodels:build, batch 4", "peak memory", "median latency (ms)", *MODES):
        assert label in texts, label
    assert describe_device(torch.device("cpu")) in texts
    assert f"torch {torch.__version__}" in texts


def test_png_of_three_families_is_a_valid_image_one_column_each(tmp_path: Path) -> None:
    """Three families from a real measurement give a PNG 1200 x 650 pixels (4 inches a column)."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    measurement = gradguard.measure(model, torch.randn(4, 8), repeats=3, warmup=0)
    out = tmp_path / "chart.png"
    rows = [(name, 4, measurement) for name in ("CNN family", "Transformer family", "RNN family")]
    assert _plot.plot_results(rows, str(out), "machine") == (1200, 650)
    assert png_size(out) == (1200, 650)


def test_a_long_title_fits_a_one_family_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The title `gradguard bench` writes is wrapped to the figure's width, not cut at its edges."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn: list[Figure] = []
    save = Figure.savefig

    def keep(figure: Figure, *args: object, **kwargs: object) -> None:
        drawn.append(figure)
        save(figure, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Figure, "savefig", keep)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    measurement = gradguard.measure(model, torch.randn(4, 8), repeats=3, warmup=0)
    title = (
        f"gradguard bench on {describe_device(torch.device('cpu'))}\n"
        f"torch {torch.__version__}, 2 threads, 5 timed runs per mode after 1 warm-up; "
        "load average 1.4 before, 1.5 after"
    )
    _plot.plot_results([("mymodels:build", 32, measurement)], str(tmp_path / "c.png"), title)
    (figure,) = drawn
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    suptitle = figure._suptitle
    assert suptitle is not None
    box = suptitle.get_window_extent(canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= figure.bbox.x1, (box, figure.bbox)
    assert suptitle.get_text().replace("\n", " ").split() == title.split()


def run_bench(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "tinymodels.py").write_text(TINY)
    return subprocess.run(
        [sys.executable, "-m", "gradguard", "bench", "--model", "tinymodels:build",
         "--input-shape", "8", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_without_matplotlib_plot_says_how_to_install_it_before_measuring(tmp_path: Path) -> None:
    """With matplotlib not importable, --plot exits 2 naming the extra, and measures nothing."""
    blocker = tmp_path / "blocked" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "blocked"), str(tmp_path)]))
    done = run_bench(tmp_path, "--plot", "chart.png", env=env)
    assert done.returncode == 2
    assert done.stderr == (
        "gradguard bench: error: --plot needs matplotlib, which is not installed: "
        'pip install "gradguard[plot]" (or pip install matplotlib)\n'
    )
    assert not (tmp_path / "chart.png").exists()


def test_plot_refuses_other_file_types_before_measuring(tmp_path: Path) -> None:
    """A .pdf (or no suffix) exits 2, listing the two types --plot writes."""
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = run_bench(tmp_path, "--plot", "chart.pdf", env=env)
    assert done.returncode == 2
    assert "--plot takes a file ending in .png or .svg, got 'chart.pdf'" in done.stderr
    assert "measuring" not in done.stderr
