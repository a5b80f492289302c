"""Runs the job a config names. The only place that joins data, models and trainers."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

import ml_collections
from absl import logging

from sbrjax import config as config_lib
from sbrjax import writer as writer_lib


def default_workdir(config_path: str, config: ml_collections.ConfigDict) -> str:
  """workdirs/<config file name> under the current directory."""
  del config
  name = os.path.splitext(os.path.basename(config_path or "default"))[0]
  return os.path.join("workdirs", name)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Dispatches on ``config.job``."""
  config_lib.validate_choice(config, "job", config_lib.JOBS)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  if config.job == "data":
    return run_data_job(config, workdir)
  if config.job == "sbr":
    from sbrjax import train_sbr  # pylint: disable=g-import-not-at-top
    return train_sbr.train_and_evaluate(config, workdir)
  if config.job == "llmgr":
    from sbrjax import train_llmgr  # pylint: disable=g-import-not-at-top
    return train_llmgr.train_and_evaluate(config, workdir)
  raise AssertionError(config.job)


def run_data_job(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Prepares the configured dataset and prints its Table 1 statistics."""
  from sbrjax.data import prepared as prepared_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.data import stats as stats_lib  # pylint: disable=g-import-not-at-top
  data = prepared_lib.load_prepared(config.data)
  text = stats_lib.format_stats(f"{data.name} ({data.protocol} protocol)", data.stats)
  print(text, flush=True)
  summary = {"dataset": data.name, "protocol": data.protocol, "stats": data.stats,
             "fingerprint": data.fingerprint,
             "examples": {"train": len(data.train), "valid": len(data.valid),
                          "test": len(data.test)}}
  writer_lib.write_json_atomic(os.path.join(workdir, "results.json"), summary)
  logging.info("%s", json.dumps(summary))
  return summary
