"""Fixed sampled negatives for the "1 positive + 99 negatives" evaluation.

Negatives are drawn once per (split, seed) with numpy's ``Generator`` and
stored with the prepared data, so every model is ranked against the same
candidates.  Sampling is uniform over the catalog without replacement within
a row, excluding:
  * "sequence" mode (default): the target and every item of the example's
    full (untruncated) input history;
  * "target" mode: only the target.

Implementation: bulk rejection sampling.  Each round draws a block of
candidates for all unfinished rows, rejects excluded items and in-row
duplicates with sorted-key lookups, and accepts rows that got enough valid
candidates; rows still short after a few rounds (tiny catalogs) fall back to
an exact per-row choice from their complement.  Everything derives from one
seeded generator, so results are deterministic.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

MODES = ("sequence", "target")
SPLIT_STREAMS = {"train": 0, "valid": 1, "test": 2}
_ROUNDS = 8
_CHUNK = 16384


def _exclusion_keys(targets: np.ndarray, hist_values: Optional[np.ndarray],
                    hist_offsets: Optional[np.ndarray],
                    num_items: int) -> np.ndarray:
  """Sorted unique int64 keys row * num_items + item of excluded pairs."""
  n = len(targets)
  rows = [np.arange(n, dtype=np.int64)]
  items = [targets.astype(np.int64)]
  if hist_values is not None:
    lengths = np.diff(hist_offsets)
    rows.append(np.repeat(np.arange(n, dtype=np.int64), lengths))
    items.append(hist_values.astype(np.int64))
  keys = np.sort(np.concatenate(rows) * num_items + np.concatenate(items))
  # Sort + neighbour test: much faster here than np.unique's hash path.
  return keys[np.concatenate([[True], keys[1:] != keys[:-1]])]


def sample_negatives(targets: np.ndarray, num_items: int, num_negatives: int,
                     seed: int, split: str,
                     hist_values: Optional[np.ndarray] = None,
                     hist_offsets: Optional[np.ndarray] = None,
                     mode: str = "sequence") -> np.ndarray:
  """Draws ``num_negatives`` distinct negatives per example.

  Args:
    targets: int [N] target item of each example.
    num_items: catalog size; items are [0, num_items).
    num_negatives: negatives per example (>= 1).
    seed: base seed; the stream also depends on ``split``.
    split: "valid" or "test" (or "train"): selects an independent stream.
    hist_values, hist_offsets: full input histories (ragged), required in
      "sequence" mode.
    mode: "sequence" or "target" (see module docstring).

  Returns:
    int32 [N, num_negatives], each row in sampling order.

  Raises:
    ValueError: bad mode/split, or some example has fewer than
      ``num_negatives`` allowed items.
  """
  if mode not in MODES:
    raise ValueError(f"negatives mode must be one of {MODES}, got {mode!r}")
  if split not in SPLIT_STREAMS:
    raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got "
                     f"{split!r}")
  if num_negatives < 1:
    raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
  targets = np.asarray(targets, np.int64)
  n = len(targets)
  if mode == "sequence":
    if hist_values is None or hist_offsets is None:
      raise ValueError("mode='sequence' needs hist_values and hist_offsets")
  else:
    hist_values = hist_offsets = None
  keys = _exclusion_keys(targets, hist_values, hist_offsets, num_items)
  excluded = np.bincount(keys // num_items, minlength=n)
  available = num_items - excluded
  if n and available.min() < num_negatives:
    bad = int(np.argmin(available))
    raise ValueError(
        f"cannot draw {num_negatives} distinct negatives for example {bad} of "
        f"the {split} split: only {int(available[bad])} of {num_items} items "
        f"are allowed (mode={mode!r}). Lower config.data.num_negatives or use "
        f"config.data.negatives_exclude='target'.")
  rng = np.random.default_rng([int(seed), SPLIT_STREAMS[split]])
  out = np.zeros((n, num_negatives), np.int64)
  for lo in range(0, n, _CHUNK):  # Chunks bound the candidate block's memory.
    rows = np.arange(lo, min(lo + _CHUNK, n))
    out[rows] = _sample_rows(rng, rows, keys, available, num_items,
                             num_negatives)
  return out.astype(np.int32)


def _sample_rows(rng: np.random.Generator, rows: np.ndarray, keys: np.ndarray,
                 available: np.ndarray, num_items: int,
                 num_negatives: int) -> np.ndarray:
  """Negatives int64 [len(rows), num_negatives] for example indices rows."""
  out = np.zeros((len(rows), num_negatives), np.int64)
  pending = np.arange(len(rows))  # positions into rows
  for _ in range(_ROUNDS):
    if len(pending) == 0:
      break
    frac = available[rows[pending]].min() / num_items
    width = int(min(np.ceil(num_negatives / frac * 1.5) + 8,
                    4 * num_items + num_negatives))
    cand = rng.integers(0, num_items, size=(len(pending), width))
    ckeys = rows[pending][:, None] * num_items + cand
    pos = np.searchsorted(keys, ckeys)
    hit = keys[np.minimum(pos, len(keys) - 1)] == ckeys
    # In-row duplicates: after a stable sort of the row, equal items follow
    # their first occurrence, so every later copy is rejected.
    srt = np.argsort(cand, axis=1, kind="stable")
    vals = np.take_along_axis(cand, srt, axis=1)
    dup_sorted = np.zeros(cand.shape, bool)
    dup_sorted[:, 1:] = vals[:, 1:] == vals[:, :-1]
    dup = np.empty(cand.shape, bool)
    np.put_along_axis(dup, srt, dup_sorted, axis=1)
    valid = ~hit & ~dup
    enough = valid.sum(1) >= num_negatives
    done = np.flatnonzero(enough)
    if len(done):
      # Keep the first num_negatives valid candidates of each row, in order.
      take = valid[done] & (np.cumsum(valid[done], axis=1) <= num_negatives)
      out[pending[done]] = cand[done][take].reshape(len(done), num_negatives)
    pending = pending[~enough]
  for p in pending:  # Exact fallback for rows rejection sampling left short.
    r = rows[p]
    lo, hi = np.searchsorted(keys, [r * num_items, (r + 1) * num_items])
    allowed = np.setdiff1d(np.arange(num_items), keys[lo:hi] - r * num_items)
    out[p] = rng.choice(allowed, size=num_negatives, replace=False)
  return out
