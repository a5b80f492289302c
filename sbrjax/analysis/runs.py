"""A finished run directory, read back: config, results, per-example rows, parameters.

Every job writes ``config.json`` (``sbrjax.pipeline``), ``results.json`` and,
per evaluated split, ``examples/<split>.parquet``
(``sbrjax.train.evaluate.save_split_examples``); checkpoints sit in one
directory per stage (``<stage>/best``). ``open_run`` reads the first two and
names what is missing; the rest is loaded on demand.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Tuple

import ml_collections
import numpy as np

from sbrjax.train import evaluate as evaluate_lib

JOBS = ("sbr", "llmgr", "llm4sbr")
LLMGR_LABELS = {"llmgr": "LLMGR", "llmgr_m": "LLMGR-M", "llmgr_o": "LLMGR-O",
                "llmgr_f": "LLMGR-F"}
BACKBONE_LABELS = {"srgnn": "SR-GNN", "gcsan": "GC-SAN", "niser": "NISER+", "tagnn": "TAGNN"}


class RunError(Exception):
  """A run directory cannot serve the request (message says what is missing)."""


@dataclasses.dataclass
class Run:
  """What a finished run directory holds.

  Attributes:
    workdir: absolute path.
    config: the run's config (``config.json``), unlocked.
    results: ``results.json``.
    job: "sbr" | "llmgr" | "llm4sbr".
  """
  workdir: str
  config: ml_collections.ConfigDict
  results: Dict[str, Any]
  job: str

  @property
  def label(self) -> str:
    """A short display name: GC-SAN, LLMGR-M, LLM4SBR(SR-GNN, f=5) ..."""
    backbone = BACKBONE_LABELS.get(self.config.sbr.backbone, self.config.sbr.backbone)
    if self.job == "sbr":
      return backbone
    if self.job == "llmgr":
      return LLMGR_LABELS.get(self.config.variant, self.config.variant)
    m = self.config.llm4sbr
    if m.variant == "backbone":
      return backbone
    extra = [f"f={int(m.f)}"]
    if m.intent_control != "none":
      extra.append(f"{m.intent_control} intents")
    return f"LLM4SBR({backbone}, {', '.join(extra)})"

  def examples(self, split: str = "test") -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """(columns, metadata) of ``examples/<split>.parquet``."""
    path = evaluate_lib.examples_path(self.workdir, split)
    if not os.path.isfile(path):
      raise RunError(f"{path} does not exist: this run finished before per-example results "
                     "were written (or is unfinished); rerun its command with the same "
                     "--workdir (finished stages are reused, only the evaluation reruns).")
    return evaluate_lib.load_examples(path)

  def data(self):
    """The prepared data the run trained on (LLM4SBR: after its restriction)."""
    if self.job == "llm4sbr":
      from sbrjax.llm4sbr import train as l4s_train  # pylint: disable=g-import-not-at-top
      return l4s_train.load_data(self.config)
    from sbrjax.data import prepared as prepared_lib  # pylint: disable=g-import-not-at-top
    return prepared_lib.load_prepared(self.config.data)

  def stage_best_dir(self) -> str:
    """``<workdir>/<last stage>/best``: the parameters the test metrics came from."""
    if self.job == "sbr":
      stage = "sbr"
    elif self.job == "llm4sbr":
      stage = "llm4sbr"
    else:
      stage = tuple(self.config.stage_order)[-1]
    return os.path.join(self.workdir, stage, "best")


def _read_json(path: str, what: str) -> Dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise RunError(f"{path} does not exist: {what}") from None
  except json.JSONDecodeError as e:
    raise RunError(f"{path} is not valid JSON ({e}).") from e


def open_run(workdir: str, require_results: bool = True) -> Run:
  """Reads ``config.json`` (and ``results.json``) of a run directory.

  Raises:
    RunError: the directory, its config or its results are missing, or the
      job is not one that trains a model.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise RunError(f"--workdir={workdir}: no such directory.")
  config_path = os.path.join(workdir, "config.json")
  results_path = os.path.join(workdir, "results.json")
  results = {}
  if require_results or not os.path.isfile(config_path) or os.path.isfile(results_path):
    results = _read_json(results_path, "the run has not finished; rerun its command with "
                         "the same --workdir to finish it.")
  if os.path.isfile(config_path):
    raw = _read_json(config_path, "")
  elif isinstance(results.get("config"), dict):
    # A backbone LLMGR pre-trained in <workdir>/sbr_pretrain has no config.json
    # of its own; its results.json records the config it ran with.
    raw = results["config"]
  else:
    raise RunError(f"{config_path} does not exist: give the --workdir of a python -m "
                   "sbrjax.main run.")
  config = ml_collections.ConfigDict(raw)
  job = raw.get("job")
  if job not in JOBS:
    raise RunError(f"{workdir}: config.job={job!r} trains no model; give the workdir of an "
                   f"{' / '.join(JOBS)} run.")
  return Run(workdir=workdir, config=config, results=results, job=job)


def restore_best_params(best_dir: str) -> Tuple[Any, Dict[str, Any]]:
  """(params as numpy arrays, metadata) of the newest step in a ``best/`` directory.

  Restores the tree as saved (no target structure), so no model has to be
  built first; callers check it against the model they build.

  Raises:
    RunError: no complete checkpoint there.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(best_dir):
    raise RunError(f"no checkpoint: {best_dir} does not exist (the run has not finished a "
                   "training epoch of its last stage).")
  mngr = ocp.CheckpointManager(best_dir)
  try:
    step = mngr.latest_step()
    if step is None:
      raise RunError(f"no checkpoint: {best_dir} holds no complete step; rerun the training "
                     "command with the same --workdir.")
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    tree = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore()))["params"]
  finally:
    mngr.close()
  return jax.tree_util.tree_map(np.asarray, tree), dict(meta)


def backbone_run_dir(run: Run) -> Optional[str]:
  """The sbr run an LLMGR run started from (its ``sbr_checkpoint`` or ``sbr_pretrain``)."""
  if run.job != "llmgr":
    return None
  source = run.config.llmgr.sbr_checkpoint or os.path.join(run.workdir, "sbr_pretrain")
  return os.path.abspath(source)
