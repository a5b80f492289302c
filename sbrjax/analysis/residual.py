"""What each part of the residual head's correction does (``sbrjax.analyze --residual_parts``).

The residual head (``llmgr.head="residual"``, beyond the paper) scores a
behavior prompt as ``backbone(session) + proj_behavior(h) · E^T + bias_behavior``:
the backbone's own scores, a correction that depends on the LLM's state ``h``
(the projection) and one that does not (a learned bias per item). This module
re-evaluates a finished run's best checkpoint with each part of the correction
zeroed, on the same prompts its evaluation scored:

* ``all``: the run as trained (equal to its ``results.json``);
* ``item bias only``: the projection zeroed;
* ``projection only``: the item bias zeroed;
* ``neither``: both zeroed, i.e. the backbone as the major stage left it (with a
  frozen backbone, the pre-trained backbone itself).

It is a post-hoc ablation: the parts were trained together, so a part's row
says what it does beside the others, not what training it alone would give.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sbrjax.analysis import runs as runs_lib
from sbrjax.analysis import seeds as seeds_lib

# (name, keep the item bias, keep the LLM-dependent projection)
PARTS: Tuple[Tuple[str, bool, bool], ...] = (
    ("all", True, True),
    ("item bias only", True, False),
    ("projection only", False, True),
    ("neither", False, False),
)


def without_parts(params: Dict[str, Any], bias: bool, projection: bool) -> Dict[str, Any]:
  """``params`` with the residual correction's item bias and/or projection zeroed
  (a new tree; every other leaf is the same object)."""
  f_out = params.get("f_out", {})
  if "bias_behavior" not in f_out or "proj_behavior" not in f_out:
    raise ValueError("the parameters hold no residual head (f_out/bias_behavior and "
                     "f_out/proj_behavior); --residual_parts reads llmgr.head=residual runs.")
  f_out = dict(f_out)
  if not bias:
    f_out["bias_behavior"] = np.zeros_like(f_out["bias_behavior"])
  if not projection:
    f_out["proj_behavior"] = {k: np.zeros_like(v) for k, v in f_out["proj_behavior"].items()}
  return {**params, "f_out": f_out}


def residual_parts(run: runs_lib.Run, splits: Sequence[str] = ("valid", "test"),
                   ks: Sequence[int] = (10,)) -> Dict[str, Dict[str, Dict[str, float]]]:
  """``{split: {part: metrics}}`` of one residual-head LLMGR run (see the module docstring).

  Raises:
    runs_lib.RunError: not a residual-head LLMGR run, or its checkpoint / LLM
      cannot be loaded.
  """
  if run.job != "llmgr" or str(run.config.llmgr.head) != "residual":
    raise runs_lib.RunError(
        f"{run.workdir}: --residual_parts needs an LLMGR run with llmgr.head=residual "
        f"(this one: job={run.job}"
        + (f", head={run.config.llmgr.head}" if run.job == "llmgr" else "") + ").")
  # Imported here: the other analyses do not load the LLM stack.
  from sbrjax.analysis import recommend as rec_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.llmgr import train as llmgr_train  # pylint: disable=g-import-not-at-top
  params, _ = runs_lib.restore_best_params(run.stage_best_dir())
  data = run.data()
  try:
    model, encoder, pad_id = rec_lib.llmgr_model(run, data, params)
  except rec_lib.RecommendError as e:
    raise runs_lib.RunError(f"{run.workdir}: {e}") from e
  evaluate = llmgr_train.make_evaluator(model, tuple(ks), top_k=0)
  out: Dict[str, Dict[str, Dict[str, float]]] = {}
  for split in splits:
    batcher, _ = llmgr_train.eval_batcher(run.config, getattr(data, split), encoder, pad_id)
    out[split] = {name: {k: float(v) for k, v in evaluate(
        without_parts(params, bias, proj), batcher).items()} for name, bias, proj in PARTS}
  return out


def markdown(rows: Sequence[Tuple[str, Dict[str, Dict[str, Dict[str, float]]]]],
             k: int = 10) -> str:
  """One table: label, split, then NDCG@k sampled / full of each part. Runs
  sharing a label are averaged (mean ± SD over them, "runs" column); a
  missing metric shows as "–"."""
  by_label: Dict[str, List[Dict[str, Dict[str, Dict[str, float]]]]] = {}
  for label, parts in rows:
    by_label.setdefault(label, []).append(parts)
  names = [name for name, _, _ in PARTS]
  head = ["run", "runs", "split"] + [f"{n} (NDCG@{k} sampled / full)" for n in names]
  md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

  def cell(group, split: str, name: str, key: str) -> str:
    values = np.array([g[split][name][key] for g in group if key in g[split][name]])
    rec = {"n": len(group), "mean": {}, "sd": {}, "n_by_key": {}}
    if values.size:  # the statistics and format of the seed table (seeds_lib.cell)
      rec["mean"][key] = float(values.mean())
      rec["sd"][key] = float(values.std(ddof=1)) if values.size > 1 else None
      rec["n_by_key"][key] = int(values.size)
    return seeds_lib.cell(rec, key)

  for label, group in by_label.items():
    for split in group[0]:
      cells = [f"{cell(group, split, n, f'sampled/NDCG@{k}')} / "
               f"{cell(group, split, n, f'full/NDCG@{k}')}" for n in names]
      md.append(f"| {label} | {len(group)} | {split} | " + " | ".join(cells) + " |")
  return "\n".join(md)


def section(runs: Sequence[runs_lib.Run], labels: Sequence[str], ks: Sequence[int]
            ) -> Tuple[Optional[str], List[Dict[str, Any]]]:
  """(markdown, JSON records) for the residual-head runs among ``runs``; (None, [])
  when there are none."""
  chosen = [(r, lab) for r, lab in zip(runs, labels)
            if r.job == "llmgr" and str(r.config.llmgr.head) == "residual"]
  if not chosen:
    return None, []
  k = 10 if 10 in ks else max(ks)
  rows, records = [], []
  for run, label in chosen:
    parts = residual_parts(run, ks=(k,))
    rows.append((label, parts))
    records.append({"label": label, "workdir": run.workdir, "parts": parts})
  return markdown(rows, k), records
