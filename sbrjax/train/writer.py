"""TensorBoard event files and JSON results, written by process 0 only.

Uses tensorboardX, which needs no TensorFlow. Keys are prefixed ``train/``
and ``eval/`` (``eval/valid/sampled/NDCG@10``...).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping

import jax
import numpy as np

from sbrjax import fileio


class MetricWriter:
  """Scalars to TensorBoard; a no-op on processes other than 0."""

  def __init__(self, logdir: str):
    self._writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      os.makedirs(logdir, exist_ok=True)
      self._writer = SummaryWriter(logdir=logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if self._writer is None:
      return
    for key, value in scalars.items():
      # TensorBoard tags allow no "@": HR@10 is written as HR_10.
      self._writer.add_scalar(key.replace("@", "_"), float(np.asarray(value)),
                              global_step=int(step))

  def write_text(self, tag: str, text: str) -> None:
    if self._writer is not None:
      self._writer.add_text(tag, text, global_step=0)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def write_json_atomic(path: str, payload: Mapping[str, Any]) -> None:
  """Writes JSON through a temporary file so readers never see half a file."""
  write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))


def write_text_atomic(path: str, text: str) -> None:
  """Writes ``text`` (process 0 only) through a temporary file and a rename."""
  if jax.process_index() != 0:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    fileio.publish(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _jsonable(x):
  if isinstance(x, (np.generic,)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)
