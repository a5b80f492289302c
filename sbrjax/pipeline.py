"""Runs the job a config names. The only place that joins data, models and trainers."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

import jax
import ml_collections
from absl import logging

from sbrjax import config as config_lib
from sbrjax.train import workdir as workdir_lib
from sbrjax.train import writer as writer_lib


def default_workdir(config_path: str, config: ml_collections.ConfigDict) -> str:
  """workdirs/<config file name> under the current directory."""
  del config
  name = os.path.splitext(os.path.basename(config_path or "default"))[0]
  return os.path.join("workdirs", name)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Dispatches on ``config.job``."""
  config_lib.validate_choice(config, "job", config_lib.JOBS)
  # Orbax wants absolute paths; the default workdir (workdirs/NAME) is relative.
  workdir = os.path.abspath(workdir)
  if config.job == "llmgr":  # config.json records the backbone settings actually used
    from sbrjax.llmgr import config as llmgr_config  # pylint: disable=g-import-not-at-top
    llmgr_config.adopt_checkpoint_sbr(config)
  with workdir_lib.WorkdirLock(workdir, enabled=jax.process_index() == 0):
    if jax.process_index() == 0:
      writer_lib.write_text_atomic(os.path.join(workdir, "config.json"),
                                   config.to_json_best_effort(indent=2))
    if config.job == "data":
      return run_data_job(config, workdir)
    return _run_job(config, workdir)


def _run_job(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  print_statistics(config)
  if config.job == "sbr":
    from sbrjax.sbr import train as sbr_train  # pylint: disable=g-import-not-at-top
    summary = sbr_train.train_and_evaluate(config, workdir)
  elif config.job == "llmgr":
    from sbrjax.llmgr import train as llmgr_train  # pylint: disable=g-import-not-at-top
    summary = llmgr_train.train_and_evaluate(config, workdir)
  elif config.job == "llm4sbr":
    from sbrjax.llm4sbr import train as llm4sbr_train  # pylint: disable=g-import-not-at-top
    summary = llm4sbr_train.train_and_evaluate(config, workdir)
  else:
    raise AssertionError(config.job)
  print(format_results(summary, config), flush=True)
  print(f"Results: {os.path.join(workdir, 'results.json')}", flush=True)
  return summary


def format_results(summary: Dict[str, Any], config: ml_collections.ConfigDict) -> str:
  """Test metrics as a table: one row per metric, one column per model."""
  ks = tuple(config.eval.ks)
  models = [(str(summary.get("model", config.job)), summary["test"])]
  if summary.get("sbr_alone"):
    models.insert(0, (f"{config.sbr.backbone} alone", summary["sbr_alone"]))
  width = max(12, *(len(name) for name, _ in models))
  lines = ["test metric      " + "  ".join(f"{name:>{width}}" for name, _ in models)]
  for mode in ("sampled", "full"):
    for metric in ("HR", "NDCG", "MRR"):
      for k in ks:
        key = f"{mode}/{metric}@{k}"
        lines.append(f"{key:<17}" + "  ".join(f"{m[key]:>{width}.4f}" for _, m in models))
  return "\n".join(lines)


def print_statistics(config: ml_collections.ConfigDict):
  """Prepares (or loads) the configured data and prints its Table 1 row."""
  from sbrjax.data import prepared as prepared_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.data import stats as stats_lib  # pylint: disable=g-import-not-at-top
  data = prepared_lib.load_prepared(config.data)
  print(stats_lib.format_stats(f"{data.name} ({data.protocol} protocol)", data.stats),
        flush=True)
  return data


def run_data_job(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Prepares the configured dataset and prints its Table 1 statistics."""
  data = print_statistics(config)
  summary = {"dataset": data.name, "protocol": data.protocol, "stats": data.stats,
             "fingerprint": data.fingerprint,
             "examples": {"train": len(data.train), "valid": len(data.valid),
                          "test": len(data.test)}}
  writer_lib.write_json_atomic(os.path.join(workdir, "results.json"), summary)
  logging.info("%s", json.dumps(summary))
  return summary
