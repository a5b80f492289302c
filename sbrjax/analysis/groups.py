"""Metrics over groups of test examples: session length and cold / warm targets.

LLMGR (Guo et al.) splits its test sets by session length (Fig. 5: short
sessions have at most 7 items) and by target item group (Fig. 6: cold vs
warm items). Here:

* **length**: ``short`` = ``session_length <= length_threshold`` (default 7),
  ``long`` = the rest; ``session_length`` is the number of clicks the model
  sees (after the ``data.max_len`` truncation, which only matters for
  thresholds >= max_len).
* **items**: ``cold`` = the target has fewer than ``cold_threshold``
  (default 10) training examples (``target_train_count``: its training
  interactions other than a session's first click), ``warm`` = the rest.

Each grouping partitions the examples; the metrics of a group are the same
means ``sbrjax.metrics.summarize`` computes over the whole split.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from sbrjax import metrics as metrics_lib

DEFAULT_LENGTH_THRESHOLD = 7
DEFAULT_COLD_THRESHOLD = 10


@dataclasses.dataclass(frozen=True)
class Grouping:
  """A named partition of a split's examples."""
  name: str
  rule: str                                 # human-readable rule
  masks: Tuple[Tuple[str, np.ndarray], ...]  # (group name, bool [N]) in display order


def length_groups(columns: Mapping[str, np.ndarray],
                  threshold: int = DEFAULT_LENGTH_THRESHOLD) -> Grouping:
  """short (<= threshold clicks) / long (> threshold)."""
  if threshold < 1:
    raise ValueError(f"--length_threshold must be >= 1, got {threshold}.")
  n = np.asarray(columns["session_length"])
  short = n <= threshold
  return Grouping("session length",
                  f"short: at most {threshold} clicks in the input; long: more",
                  (("short", short), ("long", ~short)))


def item_groups(columns: Mapping[str, np.ndarray],
                threshold: int = DEFAULT_COLD_THRESHOLD) -> Grouping:
  """cold (target seen in fewer than ``threshold`` training examples) / warm."""
  if threshold < 1:
    raise ValueError(f"--cold_threshold must be >= 1, got {threshold}.")
  c = np.asarray(columns["target_train_count"])
  cold = c < threshold
  return Grouping("target item",
                  f"cold: target item in fewer than {threshold} training examples; "
                  "warm: the rest",
                  (("cold", cold), ("warm", ~cold)))


def group_metrics(columns: Mapping[str, np.ndarray], grouping: Grouping,
                  ks: Sequence[int]) -> List[Tuple[str, Dict[str, float]]]:
  """[(group, metrics)] with ``count``; an empty group gets only ``count`` 0."""
  ranks = {k.split("/", 1)[1]: np.asarray(v) for k, v in columns.items()
           if k.startswith("rank/")}
  out = []
  for name, mask in grouping.masks:
    if not mask.any():
      out.append((name, {"count": 0.0}))
      continue
    out.append((name, metrics_lib.summarize({m: r[mask] for m, r in ranks.items()}, ks)))
  return out


def markdown_table(rows: Sequence[Tuple[str, str, Dict[str, float]]], modes: Sequence[str],
                   metrics: Sequence[str]) -> str:
  """Rows (model, group, metrics) as a Markdown table, one block per mode."""
  header = ["model", "group", "n"] + [f"{mode} {m}" for mode in modes for m in metrics]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for model, group, values in rows:
    cells = [model, group, f"{int(values.get('count', 0)):,}"]
    for mode in modes:
      for m in metrics:
        v = values.get(f"{mode}/{m}")
        cells.append("–" if v is None else f"{v:.4f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
