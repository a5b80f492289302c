"""launch/two_process_cpu.sh: a whole LLMGR config over two jax.distributed processes.

Two local CPU processes (one device each, loopback coordinator) run the tiny
LLMGR config through ``python -m sbrjax.main`` — both stages, checkpoints and
evaluation on a 2-device mesh — and must report the test metrics of a
single-process run with the same pre-trained backbone.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _main(*args, env=None, timeout=600):
  return subprocess.run([sys.executable, "-m", "sbrjax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_process_run_of_tiny_llmgr_matches_one_process(tiny_raw_dir, tmp_path):
  common = [f"--config.data.manual_dir={tiny_raw_dir}",
            f"--config.data.data_dir={tmp_path / 'data'}"]
  sbr = _main("--config=configs/sbr_tiny.py", *common, "--config.sbr.backbone=gcsan",
              "--config.train.epochs=1", f"--workdir={tmp_path / 'sbr'}")
  assert sbr.returncode == 0, sbr.stderr[-3000:]
  llmgr = common + [f"--config.llmgr.sbr_checkpoint={tmp_path / 'sbr'}"]
  single = _main("--config=configs/llmgr_tiny.py", *llmgr, f"--workdir={tmp_path / 'one'}")
  assert single.returncode == 0, single.stderr[-3000:]

  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS="1")
  env.pop("XLA_FLAGS", None)
  two = subprocess.run(["bash", "launch/two_process_cpu.sh", "configs/llmgr_tiny.py",
                        str(tmp_path / "two"), *llmgr], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
  logs = "".join(open(tmp_path / "two" / f"process_{i}.log").read()[-2000:] for i in (0, 1))
  assert two.returncode == 0, logs

  one = json.load(open(tmp_path / "one" / "results.json"))["test"]
  got = json.load(open(tmp_path / "two" / "results.json"))["test"]
  # Sharded reductions may reorder float sums; a metric may move by at most one
  # example's worth if that flips a near-tie.
  slack = 1.0 / one["count"] + 1e-6
  for key, value in one.items():
    assert abs(got[key] - value) <= slack, (key, got[key], value)
  assert got["count"] == one["count"]
