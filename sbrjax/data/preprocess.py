"""Evaluation protocols as pure numpy functions over interaction arrays.

Inputs are parallel int64 arrays ``users``, ``items`` (integer codes of any
range) and ``times``; the row order is the "original order" used to break
timestamp ties.  Outputs are ``sbrjax.data.types.Split`` objects with dense
item ids.

Item ids: after filtering, items are numbered densely in order of first
appearance in the interaction stream sorted by (user, time, original order)
(``dense_item_ids``); the mapping is returned so texts can follow.

Two protocols:
  * LLMGR (``llmgr_protocol``): k-core filter on users and items iterated to
    a fixed point, leave-one-out per user, prefix augmentation of training.
  * LLM4SBR (``llm4sbr_protocol``): sessions (a 10-minute clock window or
    gap rule), item/session filters iterated to a fixed point, one example per
    session or every prefix, chronological train/valid/test.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from sbrjax.data.types import Split

# Leave-one-out needs, per user: 1 test target, 1 validation target and at
# least one training example (a 1-item input and its target): 4 items.
LOO_MIN_USER_ITEMS = 4


@dataclasses.dataclass(frozen=True)
class History:
  """Full (untruncated) input histories of a split, ragged like ``Split``."""
  values: np.ndarray  # int32 [total]
  offsets: np.ndarray  # int64 [N + 1]


@dataclasses.dataclass(frozen=True)
class ProtocolOutput:
  """What a protocol produces before negatives are drawn.

  Attributes:
    train, valid, test: splits (negatives unset).
    histories: split name -> untruncated inputs of "valid" and "test", for
      excluding a user's history from sampled negatives.
    item_codes: int64 [num_items] input item code of each dense id.
    num_users: users (llmgr) or sessions (llm4sbr) kept.
    filtered_users: int64 [n'] user/session index of each kept interaction.
    filtered_items: int32 [n'] dense item id of each kept interaction.
    filter_rounds: passes the fixed-point filter needed.
  """
  train: Split
  valid: Split
  test: Split
  histories: dict
  item_codes: np.ndarray
  num_users: int
  filtered_users: np.ndarray
  filtered_items: np.ndarray
  filter_rounds: int


def sort_by_user_time(users: np.ndarray, times: np.ndarray) -> np.ndarray:
  """Permutation sorting rows by (user, time); ties keep the input order."""
  return np.lexsort((np.arange(len(users)), times, users))


def k_core_mask(users: np.ndarray, items: np.ndarray, min_user: int,
                min_item: int) -> tuple[np.ndarray, int]:
  """Rows kept by the iterated k-core filter.

  Drops users with < ``min_user`` and items with < ``min_item`` kept
  interactions, repeating until nothing changes (one pass is not enough:
  dropping a user can push an item under the threshold and vice versa).

  Returns:
    (bool mask [n], number of passes until the fixed point).
  """
  keep = np.ones(len(users), bool)
  _, u = np.unique(users, return_inverse=True)
  _, i = np.unique(items, return_inverse=True)
  rounds = 0
  while True:
    rounds += 1
    u_count = np.bincount(u[keep], minlength=u.max(initial=-1) + 1)
    i_count = np.bincount(i[keep], minlength=i.max(initial=-1) + 1)
    new_keep = keep & (u_count[u] >= min_user) & (i_count[i] >= min_item)
    if np.array_equal(new_keep, keep):
      return keep, rounds
    keep = new_keep


def dense_item_ids(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Numbers items 0.. in order of first appearance.

  Returns:
    (dense int32 [n], codes int64 [num_items] with codes[dense] == items).
  """
  codes, first, inverse = np.unique(items, return_index=True,
                                    return_inverse=True)
  order = np.argsort(first, kind="stable")
  rank = np.empty(len(codes), np.int64)
  rank[order] = np.arange(len(codes))
  return rank[inverse].astype(np.int32), codes[order].astype(np.int64)


def ragged_ranges(values: np.ndarray, starts: np.ndarray,
                  ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Concatenates ``values[starts[k]:ends[k]]`` for all k (vectorised).

  Returns:
    (int32 [sum(ends - starts)] values, int64 [K + 1] offsets).
  """
  lengths = (ends - starts).astype(np.int64)
  offsets = np.zeros(len(lengths) + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  idx = np.repeat(starts.astype(np.int64) - offsets[:-1], lengths) + \
      np.arange(offsets[-1], dtype=np.int64)
  return values[idx].astype(np.int32), offsets


def _examples(seq: np.ndarray, ends: np.ndarray, group_start: np.ndarray,
              owner: np.ndarray, max_len: int) -> tuple[Split, History]:
  """Examples whose target is ``seq[ends[k]]`` and input the ``max_len``
  most recent items of ``seq[group_start[k]:ends[k]]``."""
  starts = np.maximum(group_start, ends - max_len)
  values, offsets = ragged_ranges(seq, starts, ends)
  full_values, full_offsets = ragged_ranges(seq, group_start, ends)
  split = Split(values, offsets, seq[ends].astype(np.int32),
                owner.astype(np.int32))
  return split, History(full_values, full_offsets)


def _prefix_positions(group_start: np.ndarray, group_end: np.ndarray,
                      first_target: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Target positions ``start + first_target .. end - 1`` of every group.

  Returns:
    (positions int64 [K], group index int64 [K]).
  """
  counts = np.maximum(group_end - group_start - first_target, 0)
  group = np.repeat(np.arange(len(counts)), counts)
  offsets = np.zeros(len(counts) + 1, np.int64)
  np.cumsum(counts, out=offsets[1:])
  within = np.arange(offsets[-1]) - offsets[group]
  return group_start[group] + first_target + within, group


def llmgr_protocol(users: np.ndarray, items: np.ndarray, times: np.ndarray,
                   max_len: int = 50, min_count: int = 5) -> ProtocolOutput:
  """LLMGR: k-core, leave-one-out, prefix-augmented training examples.

  Rules:
    * Users with < max(min_count, 4) and items with < min_count interactions
      are dropped, iterated to a fixed point.  The 4 is what leave-one-out
      needs (test target, validation target, one training example); with the
      default min_count=5 it never binds.
    * Each user's interactions are sorted by time, ties in input order.
    * Test: input = everything but the last item, target = the last.
      Validation: input = everything but the last two, target = second-last.
      Train: every prefix [i1..ik] -> i(k+1) of the rest (k >= 1).
    * Inputs keep their ``max_len`` most recent items.

  Args:
    users, items, times: [n] parallel arrays (codes and unix times).
    max_len: input truncation length (>= 1).
    min_count: k of the k-core (>= 1).

  Returns:
    ProtocolOutput; ``users`` of every split index users 0.. in the order of
    their input codes.
  """
  if max_len < 1:
    raise ValueError(f"max_len must be >= 1, got {max_len}")
  users, items, times = (np.asarray(a, np.int64) for a in (users, items, times))
  keep, rounds = k_core_mask(users, items,
                             max(min_count, LOO_MIN_USER_ITEMS), min_count)
  order = sort_by_user_time(users, times)
  order = order[keep[order]]
  if len(order) == 0:
    raise ValueError("no interaction survives the k-core filter "
                     f"(min_count={min_count})")
  seq, codes = dense_item_ids(items[order])
  _, user_idx = np.unique(users[order], return_inverse=True)
  bounds = np.flatnonzero(np.diff(user_idx)) + 1
  g_start = np.concatenate([[0], bounds]).astype(np.int64)
  g_end = np.concatenate([bounds, [len(seq)]]).astype(np.int64)
  g_users = np.arange(len(g_start))

  test, test_hist = _examples(seq, g_end - 1, g_start, g_users, max_len)
  valid, valid_hist = _examples(seq, g_end - 2, g_start, g_users, max_len)
  pos, grp = _prefix_positions(g_start, g_end - 2)
  train, _ = _examples(seq, pos, g_start[grp], grp, max_len)
  return ProtocolOutput(train, valid, test,
                        {"valid": valid_hist, "test": test_hist}, codes,
                        len(g_start), user_idx.astype(np.int64), seq, rounds)


SESSION_RULES = ("window", "gap")
AUGMENTATIONS = ("last", "prefixes")


def session_ids(users: np.ndarray, times: np.ndarray, gap_s: Optional[int],
                rule: str = "gap") -> np.ndarray:
  """Session index of each row of data sorted by (user, time).

  A new session starts at each new user and, when ``gap_s`` is not None:

  * ``rule="gap"``: wherever the time since the user's previous interaction
    exceeds ``gap_s`` seconds (the paper's wording, "a 10-minute interval as
    the splitting point");
  * ``rule="window"``: wherever the clock window ``time // gap_s`` changes,
    i.e. fixed windows aligned to the Unix epoch (what the released LLM4SBR
    code does with ``Timestamp.dt.floor("10T")``): two clicks a minute apart
    on either side of 12:10:00 fall in two sessions, and a user who clicks
    every 5 minutes for an hour has six.

  Returns:
    int64 [n] session ids 0.. in row order.
  """
  if rule not in SESSION_RULES:
    raise ValueError(f"session rule {rule!r}; choose one of {SESSION_RULES}")
  n = len(users)
  if n == 0:
    return np.zeros(0, np.int64)
  new = np.ones(n, bool)
  new[1:] = users[1:] != users[:-1]
  if gap_s is not None:
    if rule == "gap":
      new[1:] |= (times[1:] - times[:-1]) > gap_s
    else:
      window = times // gap_s
      new[1:] |= window[1:] != window[:-1]
  return np.cumsum(new) - 1


def split_counts(n: int, fraction: float) -> int:
  """How many of ``n`` ordered groups go to the held-out (later) side.

  ``n - int((1 - fraction) * n)`` as in the released LLM4SBR code (the kept
  side is ``int(0.9 * n)``: 53,121 ML-1M sessions -> 47,808 + 5,313, the
  paper's Table 1), at least 1 and leaving at least 1 on the other side.
  """
  if n < 2:
    raise ValueError(f"need >= 2 sessions to split, got {n}")
  held = n - int((1.0 - fraction) * n)
  return int(min(max(held, 1), n - 1))


def llm4sbr_protocol(users: np.ndarray, items: np.ndarray, times: np.ndarray,
                     session_gap_s: Optional[int] = 600, max_len: int = 50,
                     min_count: int = 5, test_fraction: float = 0.1,
                     valid_fraction: float = 0.1, session_rule: str = "window",
                     augmentation: str = "last") -> ProtocolOutput:
  """LLM4SBR: sessions, filters, examples per session, chronological splits.

  Rules:
    * Rows are sorted by (user, time, input order) and cut into sessions
      (``session_ids`` with ``session_rule``); ``session_gap_s=None`` gives
      one session per user.
    * Items clicked < ``min_count`` times and sessions of length 1 are
      dropped, iterated to a fixed point.
    * Sessions are ordered by end time (ties: session order); the last
      ``test_fraction`` are test (``split_counts``), then the last
      ``valid_fraction`` of the remaining (training) sessions are
      validation: with 0.1 / 0.1 that is 81% / 9% / 10% of the sessions.
    * Examples (every split alike): ``augmentation="last"`` gives one per
      session, [v1..v(n-1)] -> vn (the paper's ML-1M: Table 1's clicks /
      sessions = average length + 1); ``"prefixes"`` gives every prefix
      [v1..vk] -> v(k+1), k >= 1 (its Beauty: "sequence segmentation").
      Inputs keep their ``max_len`` most recent clicks.

  Returns:
    ProtocolOutput; ``users`` hold the session index (0.. in (user, start)
    order over kept sessions).
  """
  if max_len < 1:
    raise ValueError(f"max_len must be >= 1, got {max_len}")
  if augmentation not in AUGMENTATIONS:
    raise ValueError(f"augmentation {augmentation!r}; choose one of {AUGMENTATIONS}")
  users, items, times = (np.asarray(a, np.int64) for a in (users, items, times))
  order = sort_by_user_time(users, times)
  sess = session_ids(users[order], times[order], session_gap_s, session_rule)
  it = items[order]
  ts = times[order]
  # Sessions must have >= 2 clicks; items >= min_count clicks.
  keep, rounds = k_core_mask(sess, it, 2, min_count)
  if not keep.any():
    raise ValueError("no session survives the filters (min_count="
                     f"{min_count}, sessions of length >= 2)")
  sess, it, ts = sess[keep], it[keep], ts[keep]
  _, sess = np.unique(sess, return_inverse=True)
  seq, codes = dense_item_ids(it)
  bounds = np.flatnonzero(np.diff(sess)) + 1
  g_start = np.concatenate([[0], bounds]).astype(np.int64)
  g_end = np.concatenate([bounds, [len(seq)]]).astype(np.int64)
  num_sessions = len(g_start)
  end_time = ts[g_end - 1]
  chrono = np.lexsort((np.arange(num_sessions), end_time))
  n_test = split_counts(num_sessions, test_fraction)
  train_pool, test_ids = chrono[:-n_test], chrono[-n_test:]
  n_valid = split_counts(len(train_pool), valid_fraction)
  train_ids, valid_ids = train_pool[:-n_valid], train_pool[-n_valid:]

  def make(ids):
    ids = np.sort(ids)
    if augmentation == "last":
      return _examples(seq, g_end[ids] - 1, g_start[ids], ids, max_len)
    pos, grp = _prefix_positions(g_start[ids], g_end[ids])
    return _examples(seq, pos, g_start[ids][grp], ids[grp], max_len)

  train, _ = make(train_ids)
  valid, valid_hist = make(valid_ids)
  test, test_hist = make(test_ids)
  return ProtocolOutput(train, valid, test,
                        {"valid": valid_hist, "test": test_hist}, codes,
                        num_sessions, sess.astype(np.int64), seq, rounds)
