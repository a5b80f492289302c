"""Test metrics of finished runs grouped by display name: mean ± sample SD over seeds.

Give several runs the same name (``--labels``) and they form one row: the
mean and the sample standard deviation (ddof = 1) of each metric, the number of
runs and their seeds. A row of one run shows its value alone. This is how the
README's multi-seed tables are read off run directories.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from sbrjax.analysis import runs as runs_lib


def groups(runs: Sequence[runs_lib.Run],
           labels: Sequence[str]) -> List[Tuple[str, List[runs_lib.Run]]]:
  """(label, runs) in order of each label's first appearance."""
  if len(labels) != len(runs):
    raise ValueError(f"{len(labels)} labels for {len(runs)} runs.")
  order: Dict[str, List[runs_lib.Run]] = {}
  for run, label in zip(runs, labels):
    order.setdefault(label, []).append(run)
  return list(order.items())


def _seed(run: runs_lib.Run) -> Any:
  try:
    return int(run.config.seed)
  except (AttributeError, KeyError, TypeError, ValueError):
    return None


def summarize(runs: Sequence[runs_lib.Run], labels: Sequence[str], keys: Sequence[str],
              split: str = "test") -> List[Dict[str, Any]]:
  """One record per label: n, seeds, workdirs, mean and sd of each key.

  Runs without ``results[split]`` are listed under "missing" and left out of
  the statistics; a key some runs lack is averaged over the runs that have it
  (its count is in "n_by_key").
  """
  records = []
  for label, group in groups(runs, labels):
    have = [r for r in group if isinstance(r.results.get(split), dict)]
    rec: Dict[str, Any] = {
        "label": label, "n": len(have), "seeds": [_seed(r) for r in have],
        "workdirs": [r.workdir for r in have],
        "missing": [r.workdir for r in group
                    if not isinstance(r.results.get(split), dict)],
        "mean": {}, "sd": {}, "n_by_key": {}}
    for key in keys:
      values = np.array([float(r.results[split][key]) for r in have
                         if key in r.results[split]], dtype=np.float64)
      if values.size == 0:
        continue
      rec["mean"][key] = float(values.mean())
      rec["sd"][key] = float(values.std(ddof=1)) if values.size > 1 else None
      rec["n_by_key"][key] = int(values.size)
    seeds = [s for s in rec["seeds"] if s is not None]
    rec["repeated_seeds"] = sorted({s for s in seeds if seeds.count(s) > 1})
    records.append(rec)
  return records


def cell(record: Dict[str, Any], key: str) -> str:
  """'0.3622 ± 0.0014' (several runs), '0.3622' (one run) or '–' (no value)."""
  if key not in record["mean"]:
    return "–"
  mean, sd = record["mean"][key], record["sd"][key]
  text = f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"
  if record["n_by_key"][key] != record["n"]:
    text += f" (n={record['n_by_key'][key]})"
  return text


def markdown(records: Sequence[Dict[str, Any]], keys: Sequence[str]) -> str:
  """The records as a Markdown table, one column per key, with notes below."""
  header = ["run", "runs", "seeds"] + list(keys)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  notes = []
  for rec in records:
    seeds = ", ".join("?" if s is None else str(s) for s in rec["seeds"]) or "–"
    lines.append("| " + " | ".join([rec["label"], str(rec["n"]), seeds]
                                    + [cell(rec, k) for k in keys]) + " |")
    if rec["missing"]:
      notes.append(f"{rec['label']}: no {len(rec['missing'])} result(s) "
                   f"({', '.join(rec['missing'])}).")
    if rec["repeated_seeds"]:
      notes.append(f"{rec['label']}: seed(s) {rec['repeated_seeds']} appear more than once; "
                   "check that no run was given twice.")
  text = "\n".join(lines)
  if len(records) and any(r["n"] > 1 for r in records):
    text += "\n\nMean ± sample standard deviation (ddof = 1) over the runs of a row."
  if notes:
    text += "\n\n" + "\n".join(f"- {n}" for n in notes)
  return text
