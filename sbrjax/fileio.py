"""Moving a finished temporary file or folder into place.

Every writer in sbrjax writes into a temporary name made by ``tempfile``
and renames it when complete, so a killed run never leaves a half-written
file that looks valid. ``tempfile.mkstemp`` creates files with mode 0600 and
``mkdtemp`` folders with 0700, which would make results, caches and figures
unreadable to the rest of a group sharing a cluster; ``publish`` first gives
the temporary the mode a plain ``open()`` / ``os.mkdir()`` would have under
the process's umask, then renames it (``os.replace``, atomic on one file
system).
"""

from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def current_umask() -> int:
  """The process's umask, read without changing it where Linux reports it."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)  # elsewhere: set and restore (a brief process-wide change)
  os.umask(mask)
  return mask


def publish(tmp: PathLike, dest: PathLike) -> None:
  """Gives ``tmp`` the default mode of a new file / folder and renames it to ``dest``."""
  mode = 0o777 if os.path.isdir(tmp) else 0o666
  os.chmod(tmp, mode & ~current_umask())
  os.replace(tmp, dest)
