"""One writer per run directory: a lock file naming its holder.

``WorkdirLock(workdir)`` takes ``<workdir>/.lock`` with ``fcntl.flock`` (the
kernel drops the lock when its process dies, however it dies) and writes the
holder's host, pid and start time into it. A second run on the same workdir
stops with ``errors.WorkdirLocked`` naming the holder. A lock file left by a
dead process (the file remains, the flock does not) is taken over with a
warning. A lock recorded by another host cannot be checked from here (flock
is not reliable across network file systems), so it is refused with the file
to delete if that run is gone. In a multi-process run only process 0 locks.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from typing import Optional

from absl import logging

from sbrjax import errors

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """Context manager holding ``<workdir>/.lock`` for the duration of a run."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
    self.enabled = enabled
    self._fd: Optional[int] = None

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def __enter__(self) -> "WorkdirLock":
    if not self.enabled:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      holder = self._read()
      raise errors.WorkdirLocked(
          f"{os.path.dirname(self.path)} is in use by another run (pid "
          f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started "
          f"{holder.get('started', '?')}). Wait for it to finish or give another "
          "--workdir.") from None
    previous = self._read()
    host = socket.gethostname()
    if previous.get("pid") and previous.get("pid") != os.getpid():
      if previous.get("host") not in (None, host):
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise errors.WorkdirLocked(
            f"{self.path} names a run on another host ({previous.get('host')}, pid "
            f"{previous.get('pid')}, started {previous.get('started')}), whose state "
            f"cannot be checked from {host}. If that run is over, delete {self.path}.")
      state = "still running but not holding it" if _alive(int(previous["pid"])) else "dead"
      logging.warning("Taking over the lock of an earlier run in %s (pid %s, %s, started "
                      "%s).", os.path.dirname(self.path), previous["pid"], state,
                      previous.get("started"))
    record = {"host": host, "pid": os.getpid(),
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> bool:
    if self._fd is not None:
      try:
        os.unlink(self.path)
      except OSError:
        pass
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
    return False
