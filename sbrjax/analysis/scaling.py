"""LLMGR over scale: test metrics vs training prompts per task and decoder blocks.

Reads finished LLMGR runs of one variant that differ in
``llmgr.train_limit`` (prompts per task and stage; 0 = every training prefix)
and ``llm.num_layers`` (decoder blocks kept), with ``llmgr.control =
"no_decoder"`` counted as 0 blocks. Each (head, blocks) pair is one curve over
the prompts; the backbone alone (``results["sbr_alone"]``) is the reference
line. Runs with the same point are averaged (several seeds).
"""

from __future__ import annotations

import collections
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sbrjax.analysis import runs as runs_lib

# (mode, metric) panels of the figure.
PANELS = (("sampled", "NDCG"), ("full", "NDCG"))


def _blocks(run: runs_lib.Run) -> int:
  if run.config.llmgr.get("control", "none") == "no_decoder":
    return 0
  layers = run.results.get("llm", {}).get("layers")
  if layers is None:
    layers = int(run.config.llm.num_layers)
  return int(layers)


def _head(run: runs_lib.Run) -> str:
  g = run.config.llmgr
  head = str(g.get("head", "paper"))
  if g.get("head_init", "random") != "random":
    head += f", init={g.head_init}"
  return head


def point_of(run: runs_lib.Run) -> Dict[str, Any]:
  """The scaling coordinates and figures of one finished LLMGR run."""
  if run.job != "llmgr":
    raise runs_lib.RunError(f"{run.workdir}: not an LLMGR run (job={run.job!r}).")
  if "test" not in run.results:
    raise runs_lib.RunError(f"{run.workdir}/results.json has no test metrics.")
  stages = run.results.get("stages", {})
  return {
      "workdir": run.workdir,
      "variant": run.config.variant,
      "head": _head(run),
      "control": str(run.config.llmgr.get("control", "none")),
      "blocks": _blocks(run),
      "limit": int(run.config.llmgr.train_limit),
      "seed": int(run.config.get("seed", 0)),
      "prompts": {name: int(s.get("prompts", 0)) for name, s in stages.items()},
      "train_seconds": float(sum(s.get("train_seconds", 0.0) for s in stages.values())),
      "test": dict(run.results["test"]),
      "alone": dict(run.results.get("sbr_alone") or {}),
  }


def scaling_groups(runs: Sequence[runs_lib.Run]) -> Dict[str, List[Dict[str, Any]]]:
  """variant -> points of its LLMGR runs, for each variant whose runs span two
  or more (prompts, blocks) settings; controls other than no_decoder are left out."""
  by_variant: Dict[str, List[Dict[str, Any]]] = collections.defaultdict(list)
  for run in runs:
    if run.job != "llmgr" or "test" not in run.results:
      continue
    if run.config.llmgr.get("control", "none") not in ("none", "no_decoder"):
      continue
    by_variant[run.config.variant].append(point_of(run))
  return {v: pts for v, pts in by_variant.items()
          if len({(p["limit"], p["blocks"]) for p in pts}) >= 2}


def _limit_label(limit: int) -> str:
  return "every prefix" if limit == 0 else f"{limit:,}"


def curves(points: Sequence[Dict[str, Any]], key: str
           ) -> Dict[Tuple[str, int], Dict[int, List[float]]]:
  """(head, blocks) -> {limit: [metric of each run at that point]}."""
  out: Dict[Tuple[str, int], Dict[int, List[float]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for p in points:
    if key in p["test"]:
      out[(p["head"], p["blocks"])][p["limit"]].append(float(p["test"][key]))
  return out


def table(points: Sequence[Dict[str, Any]], k: int = 10) -> str:
  """Markdown: one row per (head, blocks, prompts), mean (± sd over seeds)."""
  keys = [f"{mode}/{metric}@{k}" for mode, metric in PANELS]
  rows: Dict[Tuple[str, int, int], List[Dict[str, Any]]] = collections.defaultdict(list)
  for p in points:
    rows[(p["head"], p["blocks"], p["limit"])].append(p)

  def fmt(values):
    if not values:
      return "-"
    if len(values) == 1:
      return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"

  header = ["head", "decoder blocks", "prompts per task", "runs", "train s (mean)"]
  header += [f"{m.split('/')[0]} {m.split('/')[1]}" for m in keys]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  order = sorted(rows, key=lambda r: (r[0], r[1], r[2] == 0, r[2]))
  for head, blocks, limit in order:
    group = rows[(head, blocks, limit)]
    cells = [head, "0 (no decoder)" if blocks == 0 else str(blocks), _limit_label(limit),
             str(len(group)), f"{np.mean([p['train_seconds'] for p in group]):.0f}"]
    cells += [fmt([float(p["test"][m]) for p in group if m in p["test"]]) for m in keys]
    lines.append("| " + " | ".join(cells) + " |")
  alone = {}
  for p in points:
    for m in keys:
      if m in p["alone"]:
        alone.setdefault(m, set()).add(round(float(p["alone"][m]), 12))
  if alone:
    lines.append("| backbone alone | - | - | " + str(len(alone.get(keys[0], ()))) +
                 " checkpoint(s) | - | " +
                 " | ".join(fmt(sorted(alone.get(m, ()))) for m in keys) + " |")
  return "\n".join(lines)


def figure(points: Sequence[Dict[str, Any]], title: str, path: str, k: int = 10,
           every_prefix_x: Optional[int] = None) -> str:
  """Writes the scaling PNG: a row per head, a column per entry of PANELS;
  x = prompts per task (log scale; "every prefix" drawn at ``every_prefix_x``,
  default 4x the largest limit), a line per number of decoder blocks, the
  backbone alone as a dashed line. One row per head keeps each row's y-axis
  readable when heads score far apart."""
  from sbrjax.analysis import plots  # pylint: disable=g-import-not-at-top
  plt = plots._pyplot()  # pylint: disable=protected-access
  heads = sorted({p["head"] for p in points})
  fig, axes = plt.subplots(len(heads), len(PANELS),
                           figsize=(5.6 * len(PANELS), 3.6 * len(heads) + 0.6), squeeze=False)
  xs_all = sorted({p["limit"] for p in points if p["limit"] > 0})
  has_all = any(p["limit"] == 0 for p in points)
  full_x = every_prefix_x or (max(xs_all) * 4 if xs_all else 1)
  colors = {b: f"C{i}" for i, b in enumerate(sorted({p["blocks"] for p in points}))}
  for row, head in zip(axes, heads):
    mine = [p for p in points if p["head"] == head]
    for ax, (mode, metric) in zip(row, PANELS):
      key = f"{mode}/{metric}@{k}"
      for (_, blocks), by_limit in sorted(curves(mine, key).items()):
        xs = sorted(by_limit, key=lambda x: (x == 0, x))
        mean = [float(np.mean(by_limit[x])) for x in xs]
        std = [float(np.std(by_limit[x], ddof=1)) if len(by_limit[x]) > 1 else 0.0
               for x in xs]
        ax.errorbar([full_x if x == 0 else x for x in xs], mean, yerr=std, marker="o",
                    capsize=3, linestyle=":" if blocks == 0 else "-", color=colors[blocks],
                    label="no decoder (control)" if blocks == 0 else f"{blocks} blocks")
      alone = sorted({float(p["alone"][key]) for p in mine if key in p["alone"]})
      if alone:
        ax.axhline(float(np.mean(alone)), color="black", linestyle="--", linewidth=1,
                   label="backbone alone" + (f" (mean of {len(alone)})" if len(alone) > 1
                                             else ""))
      ax.set_xscale("log", base=2)
      ticks = xs_all + ([full_x] if has_all else [])
      ax.set_xticks(ticks, [("all" if has_all and x == full_x else f"{x:,}") for x in ticks],
                    fontsize=8)
      ax.minorticks_off()
      ax.set_xlabel("training prompts per task and stage")
      ax.set_ylabel(f"test {mode} {metric}@{k}")
      ax.set_title(f"{head} head", fontsize=9)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  return plots.save_figure(fig, path)
