"""Plain containers that every stage after data preparation reads.

Conventions (shared by data, models, metrics and trainers):
  * Item ids are dense integers in ``[0, num_items)``; there is no padding id.
    Padded views carry an explicit ``lengths``/``mask`` array instead.
  * A split stores its input sequences ragged: ``seq_values`` is the
    concatenation of every example's (already ``max_len``-truncated) input
    sequence, oldest click first, and ``seq_offsets[i]:seq_offsets[i+1]``
    selects example ``i``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  """Examples of one split: input sequence -> next item.

  Attributes:
    seq_values: int32 [total] concatenated input sequences (item ids).
    seq_offsets: int64 [N + 1] example boundaries into ``seq_values``.
    targets: int32 [N] the next item of each example.
    users: int32 [N] user index (LLMGR protocol) or session index (LLM4SBR).
    negatives: int32 [N, num_negatives] fixed sampled negatives, or None
      for splits that are not evaluated with the sampled protocol.
  """

  seq_values: np.ndarray
  seq_offsets: np.ndarray
  targets: np.ndarray
  users: np.ndarray
  negatives: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return int(self.targets.shape[0])

  @property
  def lengths(self) -> np.ndarray:
    """int32 [N] length of each input sequence."""
    return np.diff(self.seq_offsets).astype(np.int32)

  def sequence(self, i: int) -> np.ndarray:
    """The input sequence of example ``i`` (oldest first)."""
    return self.seq_values[self.seq_offsets[i]:self.seq_offsets[i + 1]]

  def padded(self, max_len: int, align: str = "left"):
    """Dense view of the inputs.

    Args:
      max_len: width of the result; longer sequences keep their most recent
        ``max_len`` items.
      align: "left" puts the oldest kept item in column 0 and pads on the
        right; "right" pads on the left so the last click is column -1.

    Returns:
      (items int32 [N, max_len] padded with 0, lengths int32 [N]); use
      ``lengths`` (not the pad value) to mask.
    """
    if max_len < 1:
      raise ValueError(f"max_len must be >= 1, got {max_len}")
    n = len(self)
    lengths = np.minimum(self.lengths, max_len).astype(np.int32)
    out = np.zeros((n, max_len), np.int32)
    ends = self.seq_offsets[1:]
    # Column j of a left-aligned row holds item ends - lengths + j.
    cols = np.arange(max_len)[None, :]
    valid = cols < lengths[:, None]
    if align == "left":
      src = (ends - lengths)[:, None] + cols
      out[valid] = self.seq_values[src[valid]]
    elif align == "right":
      shift = max_len - lengths
      valid_r = cols >= shift[:, None]
      src = (ends - max_len)[:, None] + cols
      out[valid_r] = self.seq_values[src[valid_r]]
    else:
      raise ValueError(f"align must be 'left' or 'right', got {align!r}")
    return out, lengths

  def select(self, idx: np.ndarray) -> "Split":
    """A new Split holding examples ``idx`` (in that order)."""
    idx = np.asarray(idx, np.int64)
    lengths = self.lengths[idx]
    offsets = np.zeros(len(idx) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = (np.concatenate([self.sequence(i) for i in idx]).astype(np.int32)
              if len(idx) else np.zeros(0, np.int32))
    return Split(values, offsets, self.targets[idx], self.users[idx],
                 None if self.negatives is None else self.negatives[idx])


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """A dataset prepared under one protocol, ready for every model.

  Attributes:
    name: e.g. "movielens/ml-100k".
    protocol: "llmgr" (leave-one-out) or "llm4sbr" (sessions, 90/10).
    num_items: size of the item catalog after filtering.
    num_users: number of users (llmgr) or sessions (llm4sbr).
    item_raw_ids: [num_items] original ids (asin / movie id) as str.
    item_texts: [num_items] text of each item (title, else description,
      else a stable placeholder).
    train, valid, test: the splits.
    fingerprint: hex digest of the prepared arrays and the preparation
      settings; downstream artifacts (checkpoints, intent arrays) record it.
    stats: Table-1 statistics of the filtered interactions.
  """

  name: str
  protocol: str
  num_items: int
  num_users: int
  item_raw_ids: list
  item_texts: list
  train: Split
  valid: Split
  test: Split
  fingerprint: str
  stats: dict = dataclasses.field(default_factory=dict)
