"""Learning curves from Lightning ``CSVLogger`` logs: return vs env steps and vs wall time.

Every ``metrics.csv`` under the given directories is one run (labelled by its path); runs are
overlaid, one colour each, in a grid with one row per metric (training return, evaluation
return by default) and two columns (env steps, wall-clock seconds). Lightning writes
evaluation metrics in rows of their own, so x values are looked up by iteration (``epoch``)
from the training rows, which carry ``num_env_steps_sampled_lifetime`` and ``time_total_s``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightning_rl.errors import ConfigError
from lightning_rl.optional import require

__all__ = ["DEFAULT_METRICS", "RunCurves", "find_metric_files", "plot_learning_curves", "read_run"]

DEFAULT_METRICS = ("env_runners/episode_return_mean", "evaluation/episode_return_mean")
X_AXES = {"num_env_steps_sampled_lifetime": "env steps", "time_total_s": "wall time [s]"}


@dataclass
class RunCurves:
    """One run's metric values per iteration and the x values of each iteration."""

    label: str
    path: Path
    x_by_epoch: dict[str, dict[int, float]] = field(default_factory=dict)  # x axis -> epoch -> x
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name -> [(epoch, y)]

    def points(self, metric: str, x_axis: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        lookup = self.x_by_epoch.get(x_axis, {})
        for epoch, value in self.metrics.get(metric, []):
            if epoch in lookup:
                xs.append(lookup[epoch])
                ys.append(value)
        return xs, ys


def find_metric_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Every ``metrics.csv`` in or under ``paths`` (a path may also be the file itself)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("metrics.csv")))
        else:
            raise ConfigError(f"Log directory {str(path)!r} does not exist.")
    if not found:
        raise ConfigError(
            f"No metrics.csv found under {', '.join(map(str, paths))}; plot reads the logs of Lightning's "
            "CSVLogger (the default logger of the lightning-rl CLI and of config.build_algo())."
        )
    return found


def read_run(path: Path, label: str) -> RunCurves:
    """Parse one ``metrics.csv``; x values of an iteration are the largest seen in its rows."""
    run = RunCurves(label=label, path=path)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            epoch_text = row.get("epoch") or ""
            if not epoch_text:
                continue
            epoch = int(float(epoch_text))
            for key, text in row.items():
                if not text or key is None:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if key in X_AXES:
                    by_epoch = run.x_by_epoch.setdefault(key, {})
                    by_epoch[epoch] = max(value, by_epoch.get(epoch, value))
                elif key not in ("epoch", "step"):
                    run.metrics.setdefault(key, []).append((epoch, value))
    return run


def _labels(files: list[Path]) -> list[str]:
    """Shortest distinguishing labels: paths relative to the runs' common parent."""
    parents = [f.parent for f in files]
    if len(parents) == 1:
        return [parents[0].name or str(parents[0])]
    common = Path(os.path.commonpath([str(p.resolve()) for p in parents]))
    return [str(p.resolve().relative_to(common)) or p.name for p in parents]


def plot_learning_curves(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike = "learning_curves.png",
    metrics: Sequence[str] = DEFAULT_METRICS,
    title: str | None = None,
) -> Path:
    """Draw ``metrics`` of every run under ``paths`` vs env steps and vs wall time into a PNG."""
    matplotlib = require("matplotlib", purpose="lightning-rl plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = find_metric_files(paths)
    runs = [read_run(f, label) for f, label in zip(files, _labels(files), strict=True)]
    present = [m for m in metrics if any(run.metrics.get(m) for run in runs)]
    if not present:
        available = sorted({m for run in runs for m in run.metrics})
        raise ConfigError(
            f"None of the metrics {list(metrics)} was logged in {', '.join(map(str, files))}. "
            f"Logged metrics: {', '.join(available) or 'none'}."
        )
    height = 3.8 * len(present)
    figure, axes = plt.subplots(len(present), 2, figsize=(12, height), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, metric in enumerate(present):
        for col, (x_axis, x_label) in enumerate(X_AXES.items()):
            ax = axes[row][col]
            drawn = False
            for i, run in enumerate(runs):
                xs, ys = run.points(metric, x_axis)
                if xs:
                    marker = "o" if len(xs) < 30 else None
                    ax.plot(xs, ys, color=colours[i % len(colours)], label=run.label, marker=marker, ms=3)
                    drawn = True
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric)
            ax.grid(True, alpha=0.3)
            if not drawn:
                ax.text(0.5, 0.5, f"no {x_axis} logged", ha="center", va="center", transform=ax.transAxes)
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    # Title, then the legend of runs, above the panels (heights in inches, as figure fractions).
    top = 1.0
    if title:
        figure.suptitle(title, y=top - 0.05 / height, va="top", fontsize="large")
        top -= 0.35 / height
    if handles:
        rows_of_labels = -(-len(labels) // 4)
        figure.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, top),
            ncol=min(4, len(labels)),
            frameon=False,
        )
        top -= (0.1 + 0.25 * rows_of_labels) / height
    figure.tight_layout(rect=(0, 0, 1, top))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output
