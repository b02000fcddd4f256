"""PNG plots of the probe and the benchmark table (matplotlib, Agg backend: no display needed).

One colour per run (e.g. base and trained), overlaid in each histogram and side by side in
each bar group, so before / after training reads at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - the eval extra installs it
        raise RuntimeError("plots need matplotlib: pip install 'mfpo[eval]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out ``fig``, write it as PNG to ``path`` (folders made) and close it; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_probe(runs: Mapping[str, Sequence[Mapping[str, Any]]], out_path: Path) -> Path:
    """Text-margin and image-margin histograms and the preference rates (true image vs full noise) per run."""
    plt = pyplot()
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key in zip(axes[:2], ("text_margin", "image_margin"), strict=True):
        values = {name: [float(r[key]) for r in rows] for name, rows in runs.items()}
        edges = np.histogram_bin_edges([v for vs in values.values() for v in vs], bins=30)  # shared by the runs
        for name, vs in values.items():
            ax.hist(vs, bins=edges, alpha=0.55, label=name)
    axes[0].set_title("text margin  log p(y_w|m) - log p(y_l|m)")
    axes[1].set_title("image margin  log p(y_w|m) - log p(y_w|m')")
    for ax in axes[:2]:
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel("items")
        ax.legend()
    groups = ("prefers_chosen", "prefers_chosen_noise", "prefers_original_image")
    labels = ("y_w over y_l\n(true image)", "y_w over y_l\n(full noise)", "m over m'\n(for y_w)")
    width = 0.8 / max(len(runs), 1)
    for k, (name, rows) in enumerate(runs.items()):
        rates = [100.0 * sum(bool(r[g]) for r in rows) / max(len(rows), 1) for g in groups]
        axes[2].bar([g + k * width for g in range(len(groups))], rates, width=width, label=name)
    axes[2].set_xticks([g + width * (len(runs) - 1) / 2 for g in range(len(groups))], labels)
    axes[2].set_ylim(0, 100)
    axes[2].set_ylabel("% of items")
    axes[2].set_title("preferences")
    axes[2].legend()
    return save_figure(fig, out_path)


def plot_metrics(table: Mapping[str, Mapping[str, float]], out_path: Path) -> Path:
    """Grouped bars: one group per metric (column of the report table), one bar per run."""
    plt = pyplot()
    metrics = list(dict.fromkeys(m for row in table.values() for m in row))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(metrics) + 2), 4.2))
    width = 0.8 / max(len(table), 1)
    for k, (run, row) in enumerate(table.items()):
        ax.bar([i + k * width for i in range(len(metrics))], [row.get(m, 0.0) for m in metrics], width=width,
               label=run)
    ax.set_xticks([i + width * (len(table) - 1) / 2 for i in range(len(metrics))], metrics, rotation=30,
                  ha="right")
    ax.legend()
    ax.set_title("benchmarks")
    return save_figure(fig, out_path)
