"""The command line: config loading, overrides and their errors."""

import json
import os
import subprocess
import sys

import pytest

from sbrjax import config as config_lib
from sbrjax import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd):
  return subprocess.run([sys.executable, "-m", "sbrjax.main", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=600)


def test_unknown_config_key_fails_with_its_name(tmp_path):
  proc = _run("--config=configs/data_ml100k.py", "--config.data.typo=1",
              f"--workdir={tmp_path}", cwd=REPO)
  assert proc.returncode != 0
  assert "typo" in proc.stderr


def test_max_len_below_one_is_refused(tmp_path):
  proc = _run("--config=configs/data_ml100k.py", "--config.data.max_len=0",
              f"--workdir={tmp_path}", cwd=REPO)
  assert proc.returncode != 0
  assert "max_len" in proc.stderr


def test_unknown_job_is_refused(tmp_path):
  cfg = config_lib.base_config()
  cfg.job = "nope"
  with pytest.raises(ValueError, match="config.job='nope'"):
    pipeline.run(cfg, str(tmp_path))


def test_data_job_prints_table1_and_writes_results(tmp_path):
  proc = _run("--config=configs/data_ml100k.py", "--config.data.max_len=20",
              f"--workdir={tmp_path}", cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "#users" in proc.stdout and "sparsity" in proc.stdout
  results = json.load(open(tmp_path / "results.json"))
  assert results["dataset"] == "movielens/ml-100k"
  assert results["stats"]["num_users"] == 943


def test_default_workdir_is_named_after_the_config():
  assert pipeline.default_workdir("configs/srgnn_ml100k.py", None) == os.path.join(
      "workdirs", "srgnn_ml100k")


def test_every_config_file_loads():
  for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
    if name.endswith(".py") and not name.startswith("_"):
      cfg = config_lib.load_config_file(os.path.join(REPO, "configs", name))
      assert cfg.job in config_lib.JOBS, name
