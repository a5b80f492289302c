"""Figures of the analyses: matplotlib with the headless Agg backend.

Every figure is written to a temporary file in the target folder and moved
into place (``os.replace``), so a reader never sees half a PNG.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from sbrjax import fileio


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig, path: str, dpi: int = 110) -> str:
  """Writes ``fig`` as PNG atomically and closes it."""
  plt = _pyplot()
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=dpi, format="png")
    fileio.publish(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  finally:
    plt.close(fig)
  return path


def pca_figure(panels: Sequence[Tuple[str, np.ndarray, np.ndarray]], popularity: np.ndarray,
               title: str, path: str) -> str:
  """Side-by-side scatter plots of 2-D PCA coordinates coloured by popularity.

  Args:
    panels: (panel title, coords [I, 2], explained variance ratio [2]).
    popularity: [I] training examples per item (log colour scale).
    title: figure title.
    path: output PNG.
  """
  plt = _pyplot()
  from matplotlib.colors import LogNorm  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + 1.0, 4.2),
                           squeeze=False, layout="constrained")
  pop = np.asarray(popularity, np.float64) + 1.0  # +1: items never a target stay plottable
  order = np.argsort(pop)  # popular items drawn last, on top
  norm = LogNorm(vmin=pop.min(), vmax=max(pop.max(), pop.min() + 1))
  sc = None
  for ax, (name, coords, ratio) in zip(axes[0], panels):
    sc = ax.scatter(coords[order, 0], coords[order, 1], c=pop[order], s=6, cmap="viridis",
                    norm=norm, linewidths=0)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% of variance)")
  cbar = fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.9, pad=0.02)
  cbar.set_label("training examples of the item + 1")
  fig.suptitle(title, fontsize=11)
  return save_figure(fig, path, dpi=90)


def bar_chart(panels: Sequence[Tuple[str, Sequence[str], Mapping[str, Sequence[float]]]],
              title: str, ylabel: str, path: str) -> str:
  """Grouped bars, one panel per entry: (panel title, metric names, model -> values)."""
  plt = _pyplot()
  width_in = max(4.0, max(len(g) * max(1, len(s)) for _, g, s in panels) * 0.45 + 1.5)
  fig, axes = plt.subplots(1, len(panels), figsize=(width_in * len(panels), 3.9),
                           squeeze=False)
  for ax, (name, groups, series) in zip(axes[0], panels):
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (model, values) in enumerate(series.items()):
      bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=model)
      ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(name, fontsize=10)
    ax.legend(fontsize=7)
    ax.margins(y=0.15)
  fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  return save_figure(fig, path)


def curve_figure(xlabel: str, curves: Mapping[str, Tuple[np.ndarray, np.ndarray, np.ndarray]],
                 title: str, path: str) -> str:
  """Metric curves over a hyper-parameter: name -> (x, mean, std) with error bars."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for name, (xs, mean, std) in curves.items():
    ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("test metric (mean ± std over runs)")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return save_figure(fig, path)


def curve_points(values: Dict[float, Sequence[float]]) -> Tuple[np.ndarray, ...]:
  """{x: [runs' values]} -> (x sorted, mean, std) arrays."""
  xs = np.array(sorted(values), np.float64)
  mean = np.array([np.mean(values[x]) for x in xs])
  std = np.array([np.std(values[x]) for x in xs])
  return xs, mean, std
