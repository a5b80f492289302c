"""LLM4SBR case studies (Qiao et al., Fig. 3) and metric curves over f and tau.

A case study shows, for one test example row: the session (item titles,
oldest click first), its target, the LLM's intent text per perspective, and
the top-f items each intent localized to, with their softmax weights
(eqs. 3-4), plus the model's own top items.

Files read (all written by an LLM4SBR run):

* the intent array of a split, ``<split>.npy`` (``results.json`` ->
  ``stage1.arrays.<split>``), whose JSON sidecar names the localized items:
  ``"localized": {"ids": "<split>.topf_ids.npy", "weights":
  "<split>.topf_weights.npy"}`` (paths relative to the array's folder, or
  absolute): int32 / float32 [rows, P, f], axis 1 in the sidecar's
  ``perspectives`` order;
* the intent texts, ``<stage1.texts_dir>/<split>.jsonl``: one JSON object per
  row, ``{"session": "<row>", "<perspective>": text, ...}``
  (``sbrjax.llm4sbr.inference.write_texts_jsonl``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


class CaseStudyError(Exception):
  """The files a case study needs are missing or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Localized:
  """Top-f localized items of every row of a split."""
  perspectives: Tuple[str, ...]
  ids: np.ndarray      # int32 [rows, P, f]
  weights: np.ndarray  # float32 [rows, P, f]


def load_localized(array_path: str) -> Localized:
  """The top-f item ids and weights named in an intent array's sidecar."""
  from sbrjax.llm4sbr import intents  # pylint: disable=g-import-not-at-top
  side = intents.sidecar_path(array_path)
  if not side.is_file():
    raise CaseStudyError(f"{side}: the intent array's sidecar is missing.")
  with open(side) as f:
    meta = json.load(f)
  loc = meta.get("localized")
  if not isinstance(loc, dict) or "ids" not in loc or "weights" not in loc:
    raise CaseStudyError(
        f"{side} names no localized item ids (\"localized\": {{\"ids\", \"weights\"}}): "
        "the array was built with f = 0 or by a version that did not keep them; "
        "rebuild the intent arrays.")
  base = os.path.dirname(os.path.abspath(array_path))
  arrays = []
  for key in ("ids", "weights"):
    path = loc[key] if os.path.isabs(loc[key]) else os.path.join(base, loc[key])
    if not os.path.isfile(path):
      raise CaseStudyError(f"{path} (named in {side} under localized.{key}) does not exist.")
    arrays.append(np.load(path, mmap_mode="r"))
  ids, weights = arrays
  perspectives = tuple(meta.get("perspectives", ()))
  rows = meta.get("shape", [None])[0]
  if ids.ndim != 3 or ids.shape != weights.shape:
    raise CaseStudyError(f"{side}: localized ids {ids.shape} and weights {weights.shape} "
                         "must both be [rows, P, f].")
  if ids.shape[1] != len(perspectives) or (rows is not None and ids.shape[0] != rows):
    raise CaseStudyError(f"{side}: localized arrays {ids.shape} do not match the sidecar's "
                         f"{rows} rows x {len(perspectives)} perspectives.")
  return Localized(perspectives, np.asarray(ids), np.asarray(weights))


def load_texts(texts_dir: str, split: str) -> Dict[str, Dict[str, str]]:
  """row (str) -> {perspective: text} from ``<texts_dir>/<split>.jsonl``."""
  path = os.path.join(texts_dir, f"{split}.jsonl")
  if not os.path.isfile(path):
    raise CaseStudyError(f"{path}: no intent texts (the run imported its intents, or the "
                         "stage-1 cache was moved).")
  out = {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      try:
        rec = json.loads(line)
        row = str(rec.pop("session"))
        out[row] = {k: str(v) for k, v in rec.items()}
      except (json.JSONDecodeError, KeyError, AttributeError) as e:
        raise CaseStudyError(f"{path}:{lineno}: not a {{\"session\": ...}} record ({e}).") from e
  return out


def choose_rows(num_rows: int, count: int, seed: int = 0) -> np.ndarray:
  """``count`` distinct rows drawn with ``seed``, in ascending order."""
  count = min(count, num_rows)
  return np.sort(np.random.default_rng(seed).choice(num_rows, count, replace=False))


def _title(texts: Sequence[str], item: int) -> str:
  return f"{texts[item]} (#{item})"


def case_markdown(row: int, session: Sequence[int], target: int, item_texts: Sequence[str],
                  texts: Dict[str, str], localized: Localized,
                  top_items: Optional[Sequence[int]] = None, rank: Optional[int] = None,
                  max_clicks: int = 10) -> str:
  """One case study as Markdown (a heading, the session, then one block per perspective)."""
  clicks = [int(i) for i in session]
  shown = clicks[-max_clicks:]
  lines = [f"#### Test row {row}", ""]
  more = f" (last {len(shown)} of {len(clicks)})" if len(shown) < len(clicks) else ""
  lines.append(f"Session{more}, oldest first: " + " → ".join(_title(item_texts, i)
                                                              for i in shown))
  target_line = f"Target: **{_title(item_texts, target)}**"
  if rank is not None:
    target_line += f", ranked {rank} by the model"
  lines += ["", target_line, ""]
  lines += ["| perspective | intent text (LLM) | localized items (weight) |", "|---|---|---|"]
  for p, name in enumerate(localized.perspectives):
    text = texts.get(name, "").replace("|", "\\|").replace("\n", " ").strip() or "(empty)"
    items = ", ".join(f"{_title(item_texts, int(i))} ({float(w):.2f})"
                      for i, w in zip(localized.ids[row, p], localized.weights[row, p]))
    items = items.replace("|", "\\|")
    lines.append(f"| {name} | {text} | {items} |")
  if top_items is not None:
    lines += ["", "Model's top 5: " + ", ".join(
        ("**" + _title(item_texts, int(i)) + "**") if int(i) == target else
        _title(item_texts, int(i)) for i in list(top_items)[:5])]
  return "\n".join(lines)


def case_studies(run, count: int = 3, split: str = "test", seed: int = 0) -> List[str]:
  """Markdown case studies of ``count`` rows of an LLM4SBR run's ``split``."""
  stage1 = run.results.get("stage1") or {}
  array_path = (stage1.get("arrays") or {}).get(split)
  if not array_path:
    raise CaseStudyError(f"{run.workdir}/results.json has no stage1.arrays.{split}: not an "
                         "LLM4SBR run with intents (variant=backbone runs have none).")
  texts_dir = stage1.get("texts_dir")
  if not texts_dir:
    raise CaseStudyError(f"{run.workdir}/results.json has no stage1.texts_dir.")
  localized = load_localized(array_path)
  texts = load_texts(texts_dir, split)
  data = run.data()
  sp = getattr(data, split)
  if localized.ids.shape[0] != len(sp):
    raise CaseStudyError(f"{array_path}: {localized.ids.shape[0]} rows, the run's {split} "
                         f"split has {len(sp)}.")
  columns = None
  try:
    columns, _ = run.examples(split)
  except Exception:  # pylint: disable=broad-except
    columns = None  # the case study still shows intents without the model's ranking
  by_row = {}
  if columns is not None:
    by_row = {int(r): i for i, r in enumerate(columns["index"])}
  out = []
  for row in choose_rows(len(sp), count, seed):
    i = by_row.get(int(row))
    out.append(case_markdown(
        int(row), sp.sequence(int(row)), int(sp.targets[row]), data.item_texts,
        texts.get(str(int(row)), {}), localized,
        top_items=None if i is None else columns["top/items"][i],
        rank=None if i is None else int(columns["rank/full"][i])))
  return out


def sweep_points(runs, key: str, metrics: Sequence[str]) -> Dict[str, Dict[float, List[float]]]:
  """metric -> {value of ``llm4sbr.<key>``: [test metric of each run]} over fused runs."""
  out: Dict[str, Dict[float, List[float]]] = {m: {} for m in metrics}
  for run in runs:
    if run.job != "llm4sbr" or run.config.llm4sbr.variant != "llm4sbr" or \
        run.config.llm4sbr.intent_control != "none":
      continue
    x = float(run.config.llm4sbr[key])
    for m in metrics:
      if m in run.results.get("test", {}):
        out[m].setdefault(x, []).append(float(run.results["test"][m]))
  return out


def sweeps(runs) -> Dict[str, List]:
  """Which of f and tau vary among the fused LLM4SBR runs (the other and the perspectives fixed)."""
  fused = [r for r in runs if r.job == "llm4sbr" and r.config.llm4sbr.variant == "llm4sbr"
           and r.config.llm4sbr.intent_control == "none"]
  out = {}
  for key, other in (("f", "tau"), ("tau", "f")):
    by_other: Dict[Tuple[float, Tuple[str, ...]], List] = {}
    for r in fused:
      fixed = (float(r.config.llm4sbr[other]), tuple(r.config.llm4sbr.perspectives))
      by_other.setdefault(fixed, []).append(r)
    for group in by_other.values():
      if len({float(r.config.llm4sbr[key]) for r in group}) >= 2:
        out[key] = group
        break
  return out
