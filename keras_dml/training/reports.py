"""What a run leaves behind for people: results.json and accuracy curves."""

import platform
import sys

import keras_dml
from keras_dml.backends import runtime
from keras_dml.figures import save_figure
from keras_dml.files import atomic_write_text, write_json

__all__ = [
    "atomic_write_text",
    "plot_curves",
    "plot_differences",
    "save_figure",
    "versions",
    "write_json",
]


def versions():
    import keras
    import numpy
    import tensorflow as tf

    found = {
        "keras_dml": keras_dml.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "tensorflow": tf.__version__,  # The data pipelines are tf.data.
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    found.update(runtime().versions())
    return found


def accuracy_series(history, metric="accuracy", prefix="val_"):
    """{"peer0": [...], ..., "ensemble": [...]} from per-epoch logs."""
    series = {}
    for row in history:
        for key, value in row.items():
            if key.startswith(prefix) and key.endswith(f"_{metric}"):
                name = key[len(prefix) : -len(metric) - 1]
                if name.startswith("peer") or name == "ensemble":
                    series.setdefault(name, []).append((row["epoch"], value))
    return series


def plot_differences(path, differences, title, baseline, names=None, split="test"):
    """Saves a PNG with one panel per peer and the ensemble: each variant's
    per-epoch top-1 on `split` (what was evaluated each epoch: "test" or
    "validation") minus the baseline's, in points.

    Args:
        differences: `{variant: {"peer0" | ... | "ensemble": [(epoch,
            difference in [−1, 1]), ...]}}`.
        baseline: the baseline's label (the zero line).
        names: optional display names of the panels, e.g. `{"peer0": "resnet32"}`.
    """
    names = names or {}
    import matplotlib

    matplotlib.use("Agg")  # No display needed: files only.
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = sorted(
        {s for per_series in differences.values() for s in per_series},
        key=lambda name: (name == "ensemble", name),  # The peers, then the ensemble.
    )
    figure, panels = plt.subplots(
        1, len(series), figsize=(4 * len(series), 3.8), sharey=True, squeeze=False
    )
    for axes, name in zip(panels[0], series):
        axes.axhline(0.0, color="black", linewidth=0.8)
        for i, (label, per_series) in enumerate(differences.items()):
            epochs, values = zip(*per_series[name])
            axes.plot(epochs, [100 * v for v in values], color=f"C{i}", label=label)
        axes.set_title(names.get(name, name))
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    panels[0][0].set_ylabel(f"{split} top-1 − {baseline} (points)")
    panels[0][-1].legend(fontsize=8)
    figure.suptitle(title)
    save_figure(figure, path)


def plot_curves(
    path,
    runs,
    title,
    metric="accuracy",
    ylabel="top-1 (%), evaluated each epoch",
    names=None,
):
    """Saves a PNG of per-epoch accuracy: one panel per peer and one for the
    ensemble, one line per run in each, every run with its own color and
    line style, the legend below the panels (never over the data).

    Args:
        path: the PNG to write.
        runs: `[(label, history, linestyle), ...]`; each history a list of
            per-epoch log dicts with an "epoch" key.
        title: the figure title.
        names: optional display names, e.g. `{"peer0": "resnet32"}`.
    """
    names = names or {}
    import matplotlib

    matplotlib.use("Agg")  # No display needed: files only.
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    per_run = [(label, accuracy_series(h, metric), style) for label, h, style in runs]
    series = sorted(
        {name for _, found, _ in per_run for name in found},
        key=lambda name: (name == "ensemble", len(name), name),  # peer2 < peer10.
    )
    columns = max(1, len(series))
    figure, panels = plt.subplots(
        1, columns, figsize=(3.6 * columns + 0.6, 3.9), sharey=True, squeeze=False
    )
    handles = {}
    for axes, name in zip(panels[0], series):
        for i, (label, found, style) in enumerate(per_run):
            if name not in found:
                continue
            epochs, values = zip(*found[name])
            (line,) = axes.plot(
                epochs,
                [100 * v for v in values],
                color=f"C{i}",
                linestyle=style,
                marker="." if len(epochs) < 30 else None,
                label=label,
            )
            handles.setdefault(label, line)
        axes.set_title(names.get(name, name))
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    panels[0][0].set_ylabel(ylabel)
    figure.suptitle(title)
    figure.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncol=min(len(handles), 6),
        fontsize=8,
        frameon=False,
    )
    # Room for the legend under the panels.
    figure.tight_layout(rect=(0, 0.1 + 0.05 * ((len(handles) - 1) // 6), 1, 1))
    save_figure(figure, path, tight=False)
