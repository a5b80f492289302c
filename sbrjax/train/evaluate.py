"""The one evaluation loop: per-example target ranks -> HR / NDCG / MRR @ K.

Every method supplies a ``rank_fn(params, batch) -> dict`` of per-example
arrays (leading dimension = batch rows) with at least

* ``mask``: bool [B], the real rows (padding rows are dropped on the host);
* ``rank/full``: int [B], the target's rank among all items;
* ``rank/sampled``: int [B], its rank among itself and the fixed negatives
  (absent when the split has no negatives);

and any other per-example fields it wants kept (``index``, ``target``,
``top/items`` and ``top/scores`` from :func:`top_items` ...).
:func:`make_evaluator` jits it, runs it over batches, keeps the real rows and
computes the metrics on the host from the ranks (``sbrjax.metrics``), so the
aggregate numbers and the per-example rows come from one computation.

Per-example files: :func:`save_split_examples` writes those rows, with each
example's input length and its target's training count, as one Parquet file
per split, ``<workdir>/examples/<split>.parquet`` (a dataframe reads it
directly; ``sbrjax.analyze`` reads it with :func:`load_examples`). Columns:

* ``index``: int32, the example's row in its split;
* ``target``: int32 item id;
* ``rank/full``, ``rank/sampled``: int32 ranks (pessimistic ties, 1-based);
* ``top/items``: int32 [K] the K best-scored item ids, best first (equal
  scores: lower id first, as ``jax.lax.top_k``); ``top/scores`` float32 [K];
* ``session_length``: int32, clicks in the model's input (after the
  ``data.max_len`` truncation);
* ``target_train_count``: int32, how many training examples have this
  target (its training interactions other than a session's first click,
  which no example predicts).

The file's metadata (key ``sbrjax``) is a JSON object with at least
``split``, ``model``, ``num_items`` and ``ks``.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from sbrjax import fileio
from sbrjax import metrics as metrics_lib

RankFn = Callable[[Any, Any], Dict[str, jax.Array]]


def make_evaluator(rank_fn: RankFn, ks: Sequence[int], *,
                   place: Optional[Callable[[Any], Any]] = None, **jit_kwargs):
  """``evaluate(params, batches, aliases=False, return_examples=False)``.

  Args:
    rank_fn: per-example ranks of one batch (see the module docstring).
    ks: metric cut-offs.
    place: applied to each host batch before the step (mesh placement).
    **jit_kwargs: passed to ``jax.jit`` (e.g. ``out_shardings``).

  Returns:
    ``evaluate`` giving the metrics dict (``"{mode}/{metric}@{k}"`` means and
    ``count``); with ``return_examples`` also the dict of per-example arrays
    of the real rows, in batch order.
  """
  step = jax.jit(rank_fn, **jit_kwargs)
  ks = tuple(ks)

  def evaluate(params, batches: Iterable[Any], aliases: bool = False,
               return_examples: bool = False):
    columns: Dict[str, list] = {}
    for batch in batches:
      out = jax.device_get(step(params, place(batch) if place else batch))
      real = np.asarray(out["mask"], bool)
      for key, value in out.items():
        if key != "mask":
          columns.setdefault(key, []).append(np.asarray(value)[real])
    examples = {k: np.concatenate(v) for k, v in columns.items()}
    if not examples or len(examples["rank/full"]) == 0:
      raise ValueError("No examples were evaluated (empty split or all rows masked).")
    ranks = {k.split("/", 1)[1]: v for k, v in examples.items() if k.startswith("rank/")}
    result = metrics_lib.summarize(ranks, ks, aliases=aliases)
    return (result, examples) if return_examples else result

  return evaluate


def top_items(scores: jax.Array, k: int) -> Dict[str, jax.Array]:
  """``top/items`` int32 [B, k] and ``top/scores`` float32 [B, k], best first.

  Equal scores keep the lower item id first (``jax.lax.top_k``); ``k`` is
  clamped to the catalog size.
  """
  values, ids = jax.lax.top_k(scores.astype(jax.numpy.float32), min(int(k), scores.shape[-1]))
  return {"top/items": ids.astype(jax.numpy.int32), "top/scores": values}


def ranks_from_scores(scores: jax.Array, targets: jax.Array, mask: jax.Array,
                      negatives: Optional[jax.Array] = None,
                      top_k: int = 0) -> Dict[str, jax.Array]:
  """The ``rank_fn`` output for dense scores [B, I] (full and sampled ranks;
  with ``top_k`` > 0 also the top-k items of :func:`top_items`)."""
  out = {"mask": mask, "rank/full": metrics_lib.target_ranks(scores, targets)}
  if negatives is not None:
    out["rank/sampled"] = metrics_lib.sampled_ranks(scores, targets, negatives)
  if top_k:
    out.update(top_items(scores, top_k))
  return out


# ---------------------------------------------------------------------------
# Per-example files.

EXAMPLES_DIR = "examples"
_META_KEY = b"sbrjax"


def examples_path(workdir: str, split: str) -> str:
  """``<workdir>/examples/<split>.parquet``."""
  return os.path.join(workdir, EXAMPLES_DIR, f"{split}.parquet")


def example_columns(examples: Mapping[str, np.ndarray], *, lengths: np.ndarray,
                    train_counts: np.ndarray) -> Dict[str, np.ndarray]:
  """The evaluator's per-example arrays plus ``session_length`` and
  ``target_train_count``.

  Args:
    examples: from ``evaluate(..., return_examples=True)``; needs ``index``
      (row in the split) and ``target``.
    lengths: int [N] input length of every row of the split.
    train_counts: int [num_items] training examples per target item.
  """
  for key in ("index", "target"):
    if key not in examples:
      raise KeyError(f"per-example results lack {key!r}: the rank_fn must return it.")
  index = np.asarray(examples["index"], np.int64)
  target = np.asarray(examples["target"], np.int64)
  out = {k: np.asarray(v) for k, v in examples.items()}
  out["session_length"] = np.asarray(lengths, np.int32)[index]
  out["target_train_count"] = np.asarray(train_counts, np.int32)[target]
  return out


def save_examples(path: str, columns: Mapping[str, np.ndarray],
                  metadata: Mapping[str, Any]) -> str:
  """Writes per-example columns as one Parquet file, atomically.

  1-D arrays become plain columns, [N, K] arrays fixed-size list columns.
  The file appears under its name only when complete (temporary file +
  ``os.replace``). Process 0 only; returns ``path``.
  """
  if jax.process_index() != 0:
    return path
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  arrays, names = [], []
  n = None
  for name, value in columns.items():
    value = np.ascontiguousarray(value)
    if n is None:
      n = len(value)
    if len(value) != n:
      raise ValueError(f"save_examples: column {name!r} has {len(value)} rows, not {n}.")
    if value.ndim == 1:
      arrays.append(pa.array(value))
    elif value.ndim == 2:
      arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(value.reshape(-1)),
                                                      value.shape[1]))
    else:
      raise ValueError(f"save_examples: column {name!r} has shape {value.shape}; "
                       "1-D or 2-D only.")
    names.append(name)
  table = pa.Table.from_arrays(arrays, names=names)
  table = table.replace_schema_metadata(
      {_META_KEY: json.dumps(dict(metadata), default=str).encode()})
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".parquet")
  os.close(fd)
  try:
    pq.write_table(table, tmp)
    fileio.publish(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def load_examples(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
  """(columns as numpy arrays, metadata) of a file written by :func:`save_examples`."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path!r} does not exist: per-example results are written at the end of a "
        "run (sbr, llmgr and llm4sbr jobs); rerun the job in that --workdir.")
  table = pq.read_table(path)
  meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
  out = {}
  for name in table.column_names:
    col = table.column(name).combine_chunks()
    if hasattr(col.type, "list_size"):  # fixed-size list -> [N, K]
      out[name] = np.asarray(col.flatten()).reshape(len(col), col.type.list_size)
    else:
      out[name] = np.asarray(col)
  return out, meta


def save_split_examples(workdir: str, split: str, examples: Mapping[str, np.ndarray], *,
                        lengths: np.ndarray, train_counts: np.ndarray,
                        metadata: Mapping[str, Any]) -> str:
  """:func:`example_columns` written to :func:`examples_path` (``split`` in the metadata)."""
  columns = example_columns(examples, lengths=lengths, train_counts=train_counts)
  return save_examples(examples_path(workdir, split), columns,
                       {**dict(metadata), "split": split})


def train_counts(train_targets: np.ndarray, num_items: int) -> np.ndarray:
  """int64 [num_items]: training examples per target item."""
  return np.bincount(np.asarray(train_targets, np.int64), minlength=int(num_items))

