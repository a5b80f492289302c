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

from tests import conftest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_two_process_run_of_tiny_llmgr_matches_one_process(tiny_raw_dir, tiny_llmgr_run,
                                                          tmp_path):
  # The one-process reference is the shared tiny LLMGR run; the two processes
  # restore the backbone it pre-trained, as a multi-process run must.
  one_dir, one_cfg = tiny_llmgr_run
  llmgr = [f"--config.data.manual_dir={tiny_raw_dir}",
           f"--config.data.data_dir={one_cfg.data.data_dir}",
           f"--config.llmgr.sbr_checkpoint={os.path.join(one_dir, 'sbr_pretrain')}"]
  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS="1")
  env.pop("XLA_FLAGS", None)
  env["EXTRA_XLA_FLAGS"] = conftest.SUBPROCESS_XLA_FLAGS
  two = subprocess.run(["bash", "launch/two_process_cpu.sh", "configs/llmgr_tiny.py",
                        str(tmp_path / "two"), *llmgr], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
  logs = "".join(open(tmp_path / "two" / f"process_{i}.log").read()[-2000:] for i in (0, 1))
  assert two.returncode == 0, logs

  one = json.load(open(os.path.join(one_dir, "results.json")))["test"]
  got = json.load(open(tmp_path / "two" / "results.json"))["test"]
  # Sharded reductions may reorder float sums (and the subprocesses' -O0 build
  # round differently); a metric may move by at most one example's worth if
  # that flips a near-tie.
  slack = 1.0 / one["count"] + 1e-6
  for key, value in one.items():
    assert abs(got[key] - value) <= slack, (key, got[key], value)
  assert got["count"] == one["count"]
