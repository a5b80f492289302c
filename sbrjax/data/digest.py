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
from typing import Any, Dict, Tuple

_CHUNK = 1 << 20
_MEMO: Dict[Tuple[str, int, int], str] = {}


def file_digest(path: "os.PathLike[str] | str") -> str:
  """sha256 hex digest of a file's bytes (a directory: of its files, by relative path)."""
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    parts = {}
    for root, _, files in os.walk(path):
      for name in sorted(files):
        full = os.path.join(root, name)
        parts[os.path.relpath(full, path)] = file_digest(full)
    return tree_digest(parts, length=64)
  st = os.stat(path)
  key = (path, st.st_size, st.st_mtime_ns)
  if key not in _MEMO:
    h = hashlib.sha256()
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(_CHUNK), b""):
        h.update(block)
    _MEMO[key] = h.hexdigest()
  return _MEMO[key]


def tree_digest(obj: Any, length: int = 16) -> str:
  """Hex digest (``length`` characters) of a JSON-able object, key order ignored."""
  text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:length]
