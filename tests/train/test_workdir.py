"""One writer per workdir: a held lock refuses a second run; a dead holder's lock is taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest
from absl import logging as absl_logging

from sbrjax import errors
from sbrjax.train import workdir


def test_second_lock_on_the_same_workdir_is_refused_naming_the_holder(tmp_path):
  with workdir.WorkdirLock(str(tmp_path)):
    record = json.load(open(tmp_path / ".lock"))
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    # Another process tries: flock belongs to the open file, so a child is refused.
    code = ("import sys; from sbrjax.train import workdir\n"
            f"try:\n  workdir.WorkdirLock({str(tmp_path)!r}).__enter__()\n"
            "except Exception as e:\n  print(type(e).__name__, e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 3, proc.stderr
    assert "WorkdirLocked" in proc.stdout and f"pid {os.getpid()}" in proc.stdout
  assert not (tmp_path / ".lock").exists()  # released and removed


def test_a_dead_holders_lock_is_taken_over_with_a_warning(tmp_path, monkeypatch):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / ".lock").write_text(json.dumps(
      {"host": socket.gethostname(), "pid": dead.pid, "started": "earlier"}))
  warnings = []
  monkeypatch.setattr(absl_logging, "warning", lambda msg, *a: warnings.append(msg % a))
  with workdir.WorkdirLock(str(tmp_path)):
    assert json.load(open(tmp_path / ".lock"))["pid"] == os.getpid()
  assert len(warnings) == 1 and f"pid {dead.pid}, dead" in warnings[0]


def test_a_lock_recorded_by_another_host_is_refused_with_the_file_to_delete(tmp_path):
  (tmp_path / ".lock").write_text(json.dumps(
      {"host": "some-other-node", "pid": 12345, "started": "earlier"}))
  with pytest.raises(errors.WorkdirLocked, match=r"another host \(some-other-node.*delete"):
    with workdir.WorkdirLock(str(tmp_path)):
      pass
