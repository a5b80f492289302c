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


def _one_line_error(proc, *parts):
  """Exit code 2 and one line on stderr holding ``parts``, no traceback."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith("sbrjax: "), proc.stderr[-3000:]
  for part in parts:
    assert part in line, (part, line)
  return line


def test_misspelled_override_names_the_section_and_closest_keys(tmp_path):
  proc = _run("--config=configs/data_ml100k.py", "--config.data.max_lenn=20",
              f"--workdir={tmp_path}", cwd=REPO)
  _one_line_error(proc, "ConfigError", "--config.data.max_lenn", "config.data has no key "
                  "'max_lenn'", "Did you mean 'max_len'?")


def test_misspelled_key_in_a_config_file_names_file_line_and_section(tmp_path):
  path = tmp_path / "typo.py"
  path.write_text("from sbrjax.llmgr.config import llmgr_config\n\n"
                  "def get_config():\n  config = llmgr_config()\n"
                  "  config.llmgr.max_node = 5\n  return config\n")
  proc = _run(f"--config={path}", f"--workdir={tmp_path / 'w'}", cwd=REPO)
  _one_line_error(proc, f"{path}:5", "config.llmgr has no key 'max_node'",
                  "Did you mean 'max_nodes'")
  verbose = _run(f"--config={path}", f"--workdir={tmp_path / 'w'}", "--verbose", cwd=REPO)
  assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_bad_values_are_one_line_errors_naming_the_key(tmp_path):
  proc = _run("--config=configs/data_ml100k.py", "--config.data.max_len=0",
              f"--workdir={tmp_path}", cwd=REPO)
  _one_line_error(proc, "config.data.max_len must be an integer >= 1")
  proc = _run("--config=configs/data_ml100k.py", "--config.data.max_len=abc",
              f"--workdir={tmp_path}", cwd=REPO)
  _one_line_error(proc, "--config.data.max_len=abc")


def test_a_data_error_is_one_line_and_its_traceback_goes_to_the_log(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  (raw / "u.data").write_text("")
  (raw / "u.item").write_text("1|A (1990)|01-Jan-1995||http://x/1|" + "|".join(["0"] * 19) + "\n")
  wd = tmp_path / "w"
  proc = _run("--config=configs/data_ml100k.py", f"--config.data.manual_dir={raw}",
              "--config.data.download=False", f"--config.data.data_dir={tmp_path / 'd'}",
              f"--workdir={wd}", cwd=REPO)
  _one_line_error(proc, "RawDataError", f"{raw / 'u.data'}: no interactions")
  assert "Traceback" in (wd / "error.log").read_text()


def test_a_second_run_on_a_held_workdir_is_refused(tmp_path):
  from sbrjax.train import workdir  # pylint: disable=g-import-not-at-top
  with workdir.WorkdirLock(str(tmp_path)):
    proc = _run("--config=configs/data_ml100k.py", f"--workdir={tmp_path}", cwd=REPO)
  _one_line_error(proc, "WorkdirLocked", f"pid {os.getpid()}")


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
