"""Protocols (sbrjax.data.preprocess) on hand-worked examples."""

import numpy as np
import pytest

from sbrjax.data import preprocess


def _seqs(split):
  return [split.sequence(i).tolist() for i in range(len(split))]


def test_k_core_needs_several_passes_to_reach_fixed_point():
  # Items c(2), d(3) are rare; dropping them leaves users 1 and 2 with one
  # interaction, and only dropping those users makes a and b exactly 2-core.
  users = np.array([0, 0, 3, 3, 1, 1, 2, 2])
  items = np.array([0, 1, 0, 1, 0, 2, 1, 3])
  keep, rounds = preprocess.k_core_mask(users, items, 2, 2)
  np.testing.assert_array_equal(keep, [1, 1, 1, 1, 0, 0, 0, 0])
  assert rounds == 3  # two passes that change something + the check
  # A single pass would have kept (1, a) and (2, b).
  once = np.bincount(items, minlength=4)[items] >= 2
  assert once[4] and once[6]


def test_k_core_result_is_a_fixed_point_on_random_data():
  rng = np.random.default_rng(0)
  users = rng.integers(0, 60, 800)
  items = rng.zipf(1.6, 800) % 200
  keep, _ = preprocess.k_core_mask(users, items, 5, 5)
  u, i = users[keep], items[keep]
  assert keep.any()
  assert np.bincount(u)[np.unique(u)].min() >= 5
  assert np.bincount(i)[np.unique(i)].min() >= 5


def test_leave_one_out_and_prefix_augmentation_hand_example():
  # User 7 (raw order first) clicks a..f; times out of order with a tie
  # (c and d at t=30 keep their input order). User 5 has 3 clicks (< 4):
  # dropped by the leave-one-out rule even with min_count=1.
  users = np.array([7, 7, 5, 7, 7, 5, 7, 7, 5])
  items = np.array([100, 103, 200, 101, 102, 201, 105, 104, 202])
  times = np.array([10, 30, 1, 20, 30, 2, 60, 50, 3])
  # Sorted user 7: 100(10) 101(20) 103(30) 102(30) 104(50) 105(60)
  out = preprocess.llmgr_protocol(users, items, times, max_len=2,
                                  min_count=1)
  # Dense ids by first appearance: 100->0 101->1 103->2 102->3 104->4 105->5
  np.testing.assert_array_equal(out.item_codes, [100, 101, 103, 102, 104, 105])
  assert out.num_users == 1
  assert _seqs(out.test) == [[3, 4]] and out.test.targets.tolist() == [5]
  assert _seqs(out.valid) == [[2, 3]] and out.valid.targets.tolist() == [4]
  assert _seqs(out.train) == [[0], [0, 1], [1, 2]]
  assert out.train.targets.tolist() == [1, 2, 3]
  assert out.train.users.tolist() == [0, 0, 0]
  # Histories for negatives are the untruncated inputs.
  h = out.histories["test"]
  assert h.values.tolist() == [0, 1, 2, 3, 4] and h.offsets.tolist() == [0, 5]
  assert out.histories["valid"].values.tolist() == [0, 1, 2, 3]


def test_leave_one_out_two_users_and_truncation_boundaries():
  users = np.repeat([0, 1], [4, 5])
  items = np.array([1, 2, 3, 4, 1, 2, 3, 4, 5])
  times = np.arange(9)
  out = preprocess.llmgr_protocol(users, items, times, max_len=50,
                                  min_count=1)
  assert _seqs(out.test) == [[0, 1, 2], [0, 1, 2, 3]]
  assert _seqs(out.valid) == [[0, 1], [0, 1, 2]]
  assert _seqs(out.train) == [[0], [0], [0, 1]]
  assert out.train.users.tolist() == [0, 1, 1]
  with pytest.raises(ValueError, match="max_len"):
    preprocess.llmgr_protocol(users, items, times, max_len=0)


def test_empty_after_k_core_raises():
  with pytest.raises(ValueError, match="k-core"):
    preprocess.llmgr_protocol(np.zeros(3), np.arange(3), np.arange(3),
                              min_count=5)


def test_sessions_split_on_gaps_over_ten_minutes():
  users = np.array([0, 0, 0, 0, 0, 1, 1])
  times = np.array([0, 600, 1201, 1500, 5000, 5001, 5002])
  # 600 s is not a gap (> 600 needed); 601 s is; a new user always is.
  np.testing.assert_array_equal(
      preprocess.session_ids(users, times, 600), [0, 0, 1, 1, 2, 3, 3])
  np.testing.assert_array_equal(
      preprocess.session_ids(users, times, None), [0, 0, 0, 0, 0, 1, 1])


def test_sessions_by_clock_window_versus_gap():
  # Clicks 60 s apart straddling 12:10:00 (t = 600): one gap-session, two
  # windows; clicks every 300 s for 1,200 s: one gap-session, windows
  # [0,600) [600,1200) [1200,1800) -> three.
  users = np.zeros(8, np.int64)
  times = np.array([540, 600, 3000, 3300, 3600, 3900, 4200, 10_000])
  np.testing.assert_array_equal(preprocess.session_ids(users, times, 600, "gap"),
                                [0, 0, 1, 1, 1, 1, 1, 2])
  np.testing.assert_array_equal(preprocess.session_ids(users, times, 600, "window"),
                                [0, 1, 2, 2, 3, 3, 4, 5])
  # A window never spans two users.
  np.testing.assert_array_equal(
      preprocess.session_ids(np.array([0, 1]), np.array([5, 6]), 600, "window"), [0, 1])
  with pytest.raises(ValueError, match="session rule 'hourly'"):
    preprocess.session_ids(users, times, 600, "hourly")


def test_split_counts_keep_int_of_the_kept_side():
  # The released LLM4SBR code keeps int(0.9 n) for training: 53,121 ML-1M
  # sessions -> 47,808 + 5,313 (the paper's Table 1).
  assert preprocess.split_counts(53_121, 0.1) == 5_313
  assert preprocess.split_counts(10, 0.1) == 1
  assert preprocess.split_counts(2, 0.9) == 1  # at least one on each side


def test_llm4sbr_one_example_per_session_versus_every_prefix():
  # Two users, one session each (gap rule, no gaps): u0 [1,2,3,4], u1 [1,2,3].
  users = np.array([0, 0, 0, 0, 1, 1, 1])
  items = np.array([1, 2, 3, 4, 1, 2, 3])
  times = np.array([0, 1, 2, 3, 10, 11, 12])
  kw = dict(session_gap_s=600, session_rule="gap", min_count=1, test_fraction=0.1,
            valid_fraction=0.5)
  with pytest.raises(ValueError, match="need >= 2 sessions"):  # 1 left for train+valid
    preprocess.llm4sbr_protocol(users, items, times, augmentation="last", **kw)
  users3 = np.concatenate([users, [2, 2]])
  items3 = np.concatenate([items, [2, 4]])
  times3 = np.concatenate([times, [20, 21]])
  last = preprocess.llm4sbr_protocol(users3, items3, times3, augmentation="last", **kw)
  every = preprocess.llm4sbr_protocol(users3, items3, times3, augmentation="prefixes",
                                      **kw)
  # Sessions by end time: s0 (3), s1 (12), s2 (21): test = {s2}, valid = {s1}.
  assert _seqs(last.train) == [[0, 1, 2]] and last.train.targets.tolist() == [3]
  assert _seqs(last.valid) == [[0, 1]] and last.valid.targets.tolist() == [2]
  assert _seqs(last.test) == [[1]] and last.test.targets.tolist() == [3]
  assert _seqs(every.train) == [[0], [0, 1], [0, 1, 2]]
  assert every.train.targets.tolist() == [1, 2, 3]
  assert _seqs(every.valid) == [[0], [0, 1]]
  # One example per session is the longest prefix of each.
  for name in ("train", "valid", "test"):
    a, b = getattr(last, name), getattr(every, name)
    longest = [int(np.flatnonzero(b.users == u)[-1]) for u in np.unique(b.users)]
    assert _seqs(a) == [_seqs(b)[i] for i in longest]
    assert a.targets.tolist() == b.targets[longest].tolist()


def test_llm4sbr_hand_example():
  # Sessions (gap 600): s0 = u0 [1,2,3] ends 120; s1 = u0 [9] alone (dropped,
  # length 1); s2 = u1 [2,3] ends 50; s3 = u2 [1,2] ends 300;
  # s4 = u3 [3,1,2] ends 400.  min_count=2 drops item 9 too.
  users = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3])
  items = np.array([1, 2, 3, 9, 2, 3, 1, 2, 3, 1, 2])
  times = np.array([0, 60, 120, 5000, 40, 50, 290, 300, 380, 390, 400])
  out = preprocess.llm4sbr_protocol(users, items, times, session_gap_s=600,
                                    max_len=50, min_count=2,
                                    test_fraction=0.25, valid_fraction=0.25,
                                    session_rule="gap", augmentation="prefixes")
  # Kept sessions in (user, start) order: 0:[1,2,3] 1:[2,3] 2:[1,2] 3:[3,1,2]
  # Chronological by end: 1(50) 0(120) 2(300) 3(400) -> test = {3},
  # valid = 3 - int(0.75 * 3) = 1 of the rest = {2}, train = {0, 1}.
  assert out.num_users == 4
  np.testing.assert_array_equal(out.item_codes, [1, 2, 3])  # dense 0,1,2
  assert _seqs(out.train) == [[0], [0, 1], [1]]
  assert out.train.targets.tolist() == [1, 2, 2]
  assert out.train.users.tolist() == [0, 0, 1]
  assert _seqs(out.valid) == [[0]] and out.valid.targets.tolist() == [1]
  assert _seqs(out.test) == [[2], [2, 0]]
  assert out.test.targets.tolist() == [0, 1]
  assert out.test.users.tolist() == [3, 3]
  assert out.filtered_items.tolist() == [0, 1, 2, 1, 2, 0, 1, 2, 0, 1]


def test_llm4sbr_filter_iterates_sessions_and_items():
  # Item 5 appears twice (min_count=2) but once in a session that becomes
  # length 1 after item 8 (rare) is dropped -> 5 falls to 1 click -> dropped
  # -> its other session [5, 6] shrinks to length 1 too.
  users = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4])
  items = np.array([5, 8, 5, 6, 6, 7, 7, 6, 7, 6, 6, 7])
  times = np.arange(12)
  out = preprocess.llm4sbr_protocol(users, items, times, session_gap_s=None,
                                    min_count=2, test_fraction=0.2,
                                    valid_fraction=0.5, augmentation="prefixes")
  assert out.filter_rounds == 5  # 4 passes that drop something + the check
  np.testing.assert_array_equal(out.item_codes, [6, 7])
  assert out.num_users == 3
  assert (len(out.train), len(out.valid), len(out.test)) == (2, 2, 1)


def test_ragged_ranges_matches_python():
  v = np.arange(100, 110)
  vals, offs = preprocess.ragged_ranges(v, np.array([0, 3, 5, 9]),
                                        np.array([2, 3, 9, 10]))
  assert vals.tolist() == [100, 101, 105, 106, 107, 108, 109]
  assert offs.tolist() == [0, 2, 2, 6, 7]
