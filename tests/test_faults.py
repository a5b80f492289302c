"""Fault injection: a run killed (SIGKILL) during data preparation or during a
checkpoint save completes when rerun, with the results of an uninterrupted run.

The kill comes from a wrapper around ``python -m sbrjax.main`` that patches one
library call to SIGKILL its own process right after the call: ``np.savez``
(the prepared arrays are in a temporary folder, not yet moved into place) or
Orbax's ``CheckpointManager.save`` (an asynchronous save is in flight, not
committed). Nothing in sbrjax knows about the wrapper.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_KILLER = r"""
import os, runpy, signal, sys
point, n = sys.argv[1], int(sys.argv[2])
calls = [0]

def after(real):
  def wrapped(*args, **kwargs):
    out = real(*args, **kwargs)
    calls[0] += 1
    if calls[0] == n:
      os.kill(os.getpid(), signal.SIGKILL)
    return out
  return wrapped

if point == "prepare":
  import numpy as np
  np.savez = after(np.savez)
else:
  import orbax.checkpoint as ocp
  ocp.CheckpointManager.save = after(ocp.CheckpointManager.save)
sys.argv = ["sbrjax.main"] + sys.argv[3:]
runpy.run_module("sbrjax.main", run_name="__main__")
"""


def _main(args, killer=None):
  cmd = [sys.executable, "-m", "sbrjax.main", *args]
  if killer:
    cmd = [sys.executable, "-c", _KILLER, *killer, *args]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def _args(raw, data_dir, workdir):
  return ["--config=configs/sbr_tiny.py", f"--config.data.manual_dir={raw}",
          f"--config.data.data_dir={data_dir}", f"--workdir={workdir}",
          "--config.train.epochs=2"]


@pytest.fixture(scope="module")
def reference(tiny_raw_dir, tmp_path_factory):
  tmp = tmp_path_factory.mktemp("faults_ref")
  ref = _main(_args(tiny_raw_dir, tmp / "d", tmp / "ref"))
  assert ref.returncode == 0, ref.stderr[-3000:]
  return json.load(open(tmp / "ref" / "results.json"))


@pytest.mark.slow
@pytest.mark.parametrize("point,nth", [("prepare", 1), ("checkpoint", 3)])
def test_killed_run_completes_like_an_uninterrupted_one(tiny_raw_dir, tmp_path, reference,
                                                        point, nth):
  args = _args(tiny_raw_dir, tmp_path / "d", tmp_path / "run")
  killed = _main(args, killer=[point, str(nth)])
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not (tmp_path / "run" / "results.json").exists()
  if point == "prepare":  # the half-written preparation is only a temporary folder
    assert [p.parent.name[:5] for p in (tmp_path / "d").glob("prepared/*/arrays.npz")] == [".tmp-"]
  again = _main(args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Taking over the lock" in again.stderr  # the dead run's lock file
  assert not list((tmp_path / "d").glob("prepared/.tmp-*"))  # leftovers cleared
  want = reference
  got = json.load(open(tmp_path / "run" / "results.json"))
  assert got["test"] == want["test"] and got["valid"] == want["valid"]
  assert got["data_fingerprint"] == want["data_fingerprint"]
