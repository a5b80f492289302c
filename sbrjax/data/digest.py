"""Digests that key caches by what they were computed from.

``file_digest`` hashes a file's bytes (memoised per path, size and mtime, so
a multi-gigabyte weights file is read once per process); ``tree_digest``
hashes a JSON-able description (settings, other digests). A cache records the
description it was keyed by beside its data, so a changed input rebuilds it
and a reader can see why.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Dict, Tuple

from sbrjax import fileio

_CHUNK = 1 << 20
_MEMO: Dict[Tuple[str, int, int], str] = {}


def file_digest(path: "os.PathLike[str] | str",
                memo_path: "os.PathLike[str] | str | None" = None) -> str:
  """sha256 hex digest of a file's bytes (a directory: of its files, by relative path).

  ``memo_path``: a JSON file remembering digests by path, size and mtime
  across processes, so an unchanged large file is not read again.
  """
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    parts = {}
    for root, _, files in os.walk(path):
      for name in sorted(files):
        full = os.path.join(root, name)
        parts[os.path.relpath(full, path)] = file_digest(full, memo_path)
    return tree_digest(parts, length=64)
  st = os.stat(path)
  key = (path, st.st_size, st.st_mtime_ns)
  if key in _MEMO:
    return _MEMO[key]
  stored = _read_memo(memo_path) if memo_path else {}
  entry = stored.get(path)
  if entry and entry[:2] == [st.st_size, st.st_mtime_ns]:
    _MEMO[key] = entry[2]
    return entry[2]
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_CHUNK), b""):
      h.update(block)
  _MEMO[key] = h.hexdigest()
  if memo_path:
    stored = _read_memo(memo_path)
    stored[path] = [st.st_size, st.st_mtime_ns, _MEMO[key]]
    _write_memo(memo_path, stored)
  return _MEMO[key]


def _read_memo(memo_path) -> dict:
  try:
    with open(memo_path) as f:
      memo = json.load(f)
    return memo if isinstance(memo, dict) else {}
  except (OSError, ValueError):
    return {}


def _write_memo(memo_path, memo: dict) -> None:
  directory = os.path.dirname(os.path.abspath(memo_path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    json.dump(memo, f)
  fileio.publish(tmp, memo_path)


def tree_digest(obj: Any, length: int = 16) -> str:
  """Hex digest (``length`` characters) of a JSON-able object, key order ignored."""
  text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:length]
