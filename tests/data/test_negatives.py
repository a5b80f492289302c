"""Fixed sampled negatives (sbrjax.data.negatives)."""

import numpy as np
import pytest

from sbrjax.data import negatives, preprocess


def _data(seed=0, n=400, num_items=300):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, 120, n)
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  values = rng.integers(0, num_items, offsets[-1])
  targets = rng.integers(0, num_items, n)
  return targets, values, offsets, num_items


def _check_valid(neg, targets, values, offsets, num_items, k, history=True):
  assert neg.shape == (len(targets), k) and neg.dtype == np.int32
  assert neg.min() >= 0 and neg.max() < num_items
  for r in range(len(targets)):
    row = neg[r]
    assert len(set(row.tolist())) == k, "duplicates in a row"
    assert targets[r] not in row
    if history:
      assert not set(row.tolist()) & set(values[offsets[r]:offsets[r + 1]]
                                         .tolist())


def test_sequence_mode_excludes_target_and_full_history():
  targets, values, offsets, m = _data()
  neg = negatives.sample_negatives(targets, m, 99, 0, "test", values, offsets)
  _check_valid(neg, targets, values, offsets, m, 99)


def test_target_mode_excludes_only_target_and_does_hit_history():
  targets, values, offsets, m = _data()
  neg = negatives.sample_negatives(targets, m, 99, 0, "test", values, offsets,
                                   mode="target")
  _check_valid(neg, targets, values, offsets, m, 99, history=False)
  overlap = sum(bool(set(neg[r].tolist()) &
                     set(values[offsets[r]:offsets[r + 1]].tolist()))
                for r in range(len(targets)))
  assert overlap > 0  # History items are allowed (and do occur) here.


def test_deterministic_per_seed_and_split():
  targets, values, offsets, m = _data()
  a = negatives.sample_negatives(targets, m, 99, 3, "valid", values, offsets)
  b = negatives.sample_negatives(targets, m, 99, 3, "valid", values, offsets)
  c = negatives.sample_negatives(targets, m, 99, 4, "valid", values, offsets)
  d = negatives.sample_negatives(targets, m, 99, 3, "test", values, offsets)
  np.testing.assert_array_equal(a, b)
  assert (a != c).mean() > 0.9
  assert (a != d).mean() > 0.9


def test_tight_catalog_uses_every_allowed_item():
  # 12 items, history {0, 1}, target 2: exactly 9 allowed -> each row is a
  # permutation of 3..11 (rejection must collect every allowed item).
  n = 50
  targets = np.full(n, 2)
  offsets = np.arange(0, 2 * n + 1, 2)
  values = np.tile([0, 1], n)
  neg = negatives.sample_negatives(targets, 12, 9, 1, "test", values, offsets)
  for row in neg:
    assert sorted(row.tolist()) == list(range(3, 12))
  assert len({tuple(r) for r in neg.tolist()}) > 1  # rows are shuffled


def test_too_small_catalog_raises_clearly():
  targets = np.array([0, 1])
  values = np.array([1, 2, 3, 0])
  offsets = np.array([0, 3, 4])
  with pytest.raises(ValueError, match=r"cannot draw 3 distinct negatives for "
                     r"example 0 .* only 2 of 6"):
    negatives.sample_negatives(targets, 6, 3, 0, "valid", values, offsets)
  with pytest.raises(ValueError, match="mode"):
    negatives.sample_negatives(targets, 6, 1, 0, "valid", values, offsets,
                               mode="bogus")
  with pytest.raises(ValueError, match="hist_values"):
    negatives.sample_negatives(targets, 6, 1, 0, "valid")


def test_uniform_over_allowed_items():
  n, m = 4000, 20
  targets = np.zeros(n, np.int64)
  neg = negatives.sample_negatives(targets, m, 5, 0, "test", mode="target")
  counts = np.bincount(neg.ravel(), minlength=m)
  assert counts[0] == 0
  expected = n * 5 / (m - 1)
  assert np.abs(counts[1:] - expected).max() < 5 * np.sqrt(expected)


def test_on_protocol_output_with_untruncated_histories():
  rng = np.random.default_rng(1)
  users = np.repeat(np.arange(40), 30)
  items = rng.integers(0, 150, len(users))
  out = preprocess.llmgr_protocol(users, items, np.arange(len(users)),
                                  max_len=3, min_count=1)
  h = out.histories["test"]
  neg = negatives.sample_negatives(out.test.targets, len(out.item_codes), 20,
                                   0, "test", h.values, h.offsets)
  _check_valid(neg, out.test.targets, h.values, h.offsets,
               len(out.item_codes), 20)
