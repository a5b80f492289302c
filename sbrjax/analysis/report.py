"""``python -m sbrjax.analyze``: the papers' analyses of one or several runs.

  python -m sbrjax.analyze --workdir=workdirs/default/sbr_pretrain \\
      --workdir=workdirs/llmgr_m_ml100k --workdir=workdirs/default --out=analysis

writes into ``--out``:

* ``summary.md``: every table and links to the figures (also printed);
* ``groups.json``: the same group metrics, machine-readable;
* ``metrics.json``: the test metrics of the runs grouped by name, mean and
  sample SD over the runs that share a ``--labels`` name (seeds;
  ``sbrjax.analysis.seeds``), also the first table of ``summary.md``;
* ``pca_<run>.png``: for each LLMGR run, PCA of the pre-trained backbone's
  item table vs ``f_in`` of the tuned table (``sbrjax.analysis.pca``),
  coloured by item popularity;
* ``strategies.png``: LLMGR / -M / -O / -F side by side (when two or more
  LLMGR variants are given);
* ``llm4sbr_f.png`` / ``llm4sbr_tau.png``: P@K and MRR@K over the
  localization width f and the loss weight tau (when the fused LLM4SBR runs
  given vary it; runs with the same value are averaged, bars = std);
* ``scaling_<variant>.png``: LLMGR test NDCG@K over training prompts per
  task, one line per head and number of decoder blocks, the backbone alone
  dashed (when the LLMGR runs given span two or more of those settings;
  ``sbrjax.analysis.scaling``), with its table in ``summary.md``;
* LLM4SBR case studies (in ``summary.md``);
* ``residual_parts.json`` (with ``residual_parts=True``): each residual-head
  LLMGR run's validation and test NDCG@K with parts of its correction zeroed
  (``sbrjax.analysis.residual``; loads each run's LLM), its table in
  ``summary.md``.

Tables: metrics by session length and by cold / warm target item
(``sbrjax.analysis.groups``) of each run's per-example file
(``examples/<split>.parquet``), with every group's size.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from sbrjax import fileio
from sbrjax.analysis import cases as cases_lib
from sbrjax.analysis import groups as groups_lib
from sbrjax.analysis import pca as pca_lib
from sbrjax.analysis import plots
from sbrjax.analysis import residual as residual_lib
from sbrjax.analysis import runs as runs_lib
from sbrjax.analysis import scaling as scaling_lib
from sbrjax.analysis import seeds as seeds_lib


def _slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _write_text(path: str, text: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.write(text)
  fileio.publish(tmp, path)


def unique_labels(runs: Sequence[runs_lib.Run],
                  labels: Optional[Sequence[str]] = None) -> List[str]:
  """Display names: ``labels`` if given, else each run's label, made unique."""
  if labels:
    if len(labels) != len(runs):
      raise ValueError(f"--labels has {len(labels)} names for {len(runs)} --workdir values.")
    return list(labels)
  names = [r.label for r in runs]
  out = []
  for i, name in enumerate(names):
    if names.count(name) > 1:
      name = f"{name} [{os.path.basename(runs[i].workdir)}]"
    out.append(name)
  return out


def group_section(runs, labels, split, grouping_fn, threshold, ks, metrics, modes):
  """(markdown, json rows) of one grouping over every run."""
  rows, records, rule, sizes, missing = [], [], None, [], []
  for run, label in zip(runs, labels):
    try:
      columns, _ = run.examples(split)
    except runs_lib.RunError:
      missing.append(label)  # e.g. runs finished before per-example files existed
      continue
    grouping = grouping_fn(columns, threshold)
    rule = grouping.rule
    for name, values in groups_lib.group_metrics(columns, grouping, ks):
      rows.append((label, name, values))
      records.append({"model": label, "workdir": run.workdir, "group": name, **values})
    sizes.append(f"{label}: " + ", ".join(f"{name} {int(m.sum()):,}"
                                          for name, m in grouping.masks))
  note = (f"\n\nNot shown (no examples/{split}.parquet; rerun the run's command to write "
          f"it): {', '.join(missing)}." if missing else "")
  if not rows:
    return note.strip(), records
  table = groups_lib.markdown_table(rows, modes, metrics)
  text = f"Rule: {rule}.\n\nGroup sizes: " + "; ".join(sizes) + ".\n\n" + table + note
  return text, records


def pca_section(run, label: str, out_dir: str) -> str:
  """PCA figure of one LLMGR run; returns its Markdown (or why it was skipped)."""
  source = runs_lib.backbone_run_dir(run)
  try:
    before = pca_lib.backbone_table(source)
    params, _ = runs_lib.restore_best_params(run.stage_best_dir())
    _, after = pca_lib.llmgr_item_inputs(run, params)
  except Exception as e:  # pylint: disable=broad-except
    return f"PCA of {label} skipped: {e}"
  data = run.data()
  from sbrjax.train import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  popularity = evaluate_lib.train_counts(data.train.targets, data.num_items)
  c0, r0 = pca_lib.pca(before, 2)
  c1, r1 = pca_lib.pca(after, 2)
  name = f"pca_{_slug(label)}.png"
  plots.pca_figure(
      [(f"pre-trained {runs_lib.BACKBONE_LABELS.get(run.config.sbr.backbone, '')} item "
        f"table (d={before.shape[1]})", c0, r0),
       (f"{label}: f_in(tuned table), the LLM's input (d={after.shape[1]})", c1, r1)],
      popularity, f"Item embeddings before and after {label} ({data.name})",
      os.path.join(out_dir, name))
  return (f"![PCA {label}]({name})\n\nPCA of {before.shape[0]:,} items; backbone "
          f"table from `{source}`, PC1+PC2 explain {100 * r0.sum():.1f}% (before) and "
          f"{100 * r1.sum():.1f}% (after) of the variance.")


def strategy_section(runs, labels, out_dir: str, k: int) -> Optional[str]:
  """Bar chart of the LLMGR variants given (None with fewer than two)."""
  chosen = [(r, lab) for r, lab in zip(runs, labels) if r.job == "llmgr"]
  if len({r.config.variant for r, _ in chosen}) < 2:
    return None
  order = list(runs_lib.LLMGR_LABELS)
  chosen.sort(key=lambda x: order.index(x[0].config.variant)
              if x[0].config.variant in order else len(order))
  names = [f"HR@{k}", f"NDCG@{k}", f"MRR@{k}"]
  panels = []
  for mode in ("sampled", "full"):
    series = {lab: [float(r.results["test"].get(f"{mode}/{m}", np.nan)) for m in names]
              for r, lab in chosen}
    panels.append((f"{mode} ranking", names, series))
  plots.bar_chart(panels, "Tuning strategies (test split)", "metric",
                  os.path.join(out_dir, "strategies.png"))
  return "![tuning strategies](strategies.png)"


def sweep_section(runs, out_dir: str, ks: Sequence[int]) -> List[str]:
  out = []
  for key, group in cases_lib.sweeps(runs).items():
    metrics = [f"full/HR@{k}" for k in ks] + [f"full/MRR@{k}" for k in ks]
    points = cases_lib.sweep_points(group, key, metrics)
    curves = {m.replace("full/HR", "P").replace("full/", ""): plots.curve_points(v)
              for m, v in points.items() if v}
    name = f"llm4sbr_{key}.png"
    plots.curve_figure("localization width f" if key == "f" else "loss weight τ", curves,
                       f"LLM4SBR over {key} ({len(group)} runs)", os.path.join(out_dir, name))
    out.append(f"![LLM4SBR over {key}]({name})")
  return out


def analyze(workdirs: Sequence[str], out_dir: str, *, split: str = "test",
            length_threshold: int = groups_lib.DEFAULT_LENGTH_THRESHOLD,
            cold_threshold: int = groups_lib.DEFAULT_COLD_THRESHOLD,
            table_ks: Sequence[int] = (10, 20), cases: int = 3, case_seed: int = 0,
            labels: Optional[Sequence[str]] = None, pca: bool = True,
            residual_parts: bool = False) -> str:
  """Writes the analyses of ``workdirs`` into ``out_dir``; returns the summary text."""
  if not workdirs:
    raise ValueError("give at least one --workdir.")
  runs = [runs_lib.open_run(w) for w in workdirs]
  labels = unique_labels(runs, labels)
  os.makedirs(out_dir, exist_ok=True)
  metrics = [f"{m}@{k}" for k in table_ks for m in ("HR", "NDCG", "MRR")]
  modes = [m for m in ("sampled", "full")
           if all(f"{m}/HR@{table_ks[0]}" in r.results.get("test", {}) for r in runs)]
  md = ["# Analyses", "", "| run | workdir | model | test examples |", "|---|---|---|---|"]
  for run, label in zip(runs, labels):
    count = int(run.results.get("test", {}).get("count", 0))
    md.append(f"| {label} | `{run.workdir}` | {run.results.get('model', run.job)} | {count:,} |")
  metric_keys = [f"{mode}/{m}" for mode in modes for m in metrics]
  seed_records = seeds_lib.summarize(runs, labels, metric_keys, split)
  md += ["", f"## Metrics ({split} split; runs sharing a name: mean ± SD)", "",
         seeds_lib.markdown(seed_records, metric_keys)]
  fingerprints = set()
  for run in runs:
    try:
      fingerprints.add(run.examples(split)[1].get("data_fingerprint"))
    except runs_lib.RunError:
      pass
  if len(fingerprints) > 1:
    md += ["", "Note: the runs were prepared differently (data fingerprints differ); "
           "group sizes and training counts are each run's own."]
  record: Dict[str, Any] = {"split": split, "length_threshold": length_threshold,
                            "cold_threshold": cold_threshold, "groups": {}}
  for title, fn, threshold, key in (
      ("By session length", groups_lib.length_groups, length_threshold, "length"),
      ("By target item: cold / warm", groups_lib.item_groups, cold_threshold, "items")):
    text, rows = group_section(runs, labels, split, fn, threshold, table_ks, metrics, modes)
    md += ["", f"## {title} ({split} split)", "", text]
    record["groups"][key] = rows
  if pca:
    sections = [pca_section(r, lab, out_dir) for r, lab in zip(runs, labels)
                if r.job == "llmgr"]
    if sections:
      md += ["", "## Item embeddings (PCA)", ""] + sum(([s, ""] for s in sections), [])
  chart = strategy_section(runs, labels, out_dir, max(table_ks))
  if chart:
    md += ["", "## Tuning strategies", "", chart]
  for variant, points in scaling_lib.scaling_groups(runs).items():
    name = f"scaling_{_slug(variant)}.png"
    k = 10 if 10 in table_ks else max(table_ks)
    title = (f"{runs_lib.LLMGR_LABELS.get(variant, variant)} over training prompts and "
             f"decoder blocks ({len(points)} runs, test split)")
    scaling_lib.figure(points, title, os.path.join(out_dir, name), k=k)
    md += ["", f"## {runs_lib.LLMGR_LABELS.get(variant, variant)} over scale", "",
           scaling_lib.table(points, k), "", f"![scaling]({name})"]
  fused = [(r, lab) for r, lab in zip(runs, labels) if r.job == "llm4sbr"
           and r.config.llm4sbr.variant == "llm4sbr"]
  # Case studies of the first run that localizes (f = 0 keeps raw intents: no items).
  fused.sort(key=lambda x: int(x[0].config.llm4sbr.f) == 0)
  if fused and cases:
    md += ["", "## LLM4SBR case studies", ""]
    for run, label in fused[:1]:
      try:
        studies = cases_lib.case_studies(run, cases, split, case_seed)
        md += [f"{label} (`{run.workdir}`), {len(studies)} rows drawn with seed "
               f"{case_seed}:", ""] + sum(([s, ""] for s in studies), [])
      except (cases_lib.CaseStudyError, FileNotFoundError, ValueError) as e:
        md += [f"Case studies of {label} skipped: {e}"]
  if residual_parts:
    text, parts = residual_lib.section(runs, labels, table_ks)
    if text is None:
      raise ValueError("--residual_parts: none of the runs is an LLMGR run with "
                       "llmgr.head=residual.")
    md += ["", "## The residual head's correction, part by part", "",
           "Each run's best checkpoint re-evaluated with parts of the correction "
           "zeroed (`sbrjax.analysis.residual`; a post-hoc ablation).", "", text]
    _write_text(os.path.join(out_dir, "residual_parts.json"), json.dumps(parts, indent=2))
  curves = sweep_section(runs, out_dir, table_ks)
  if curves:
    md += ["", "## LLM4SBR sweeps", ""] + curves
  summary = "\n".join(md) + "\n"
  _write_text(os.path.join(out_dir, "summary.md"), summary)
  _write_text(os.path.join(out_dir, "groups.json"), json.dumps(record, indent=2))
  _write_text(os.path.join(out_dir, "metrics.json"),
              json.dumps({"split": split, "rows": seed_records}, indent=2))
  return summary
