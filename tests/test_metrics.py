"""Metrics against a brute-force NumPy reference."""

import math

import jax
import numpy as np
import pytest

from sbrjax import metrics


def _reference_metrics(ranks, ks):
  out = {}
  for k in ks:
    out[f"HR@{k}"] = np.array([1.0 if r <= k else 0.0 for r in ranks])
    out[f"NDCG@{k}"] = np.array([1.0 / math.log2(r + 1) if r <= k else 0.0 for r in ranks])
    out[f"MRR@{k}"] = np.array([1.0 / r if r <= k else 0.0 for r in ranks])
  return out


@pytest.mark.parametrize("jit", [False, True])
def test_ranks_match_bruteforce_with_ties(jit):
  rng = np.random.default_rng(0)
  # Integer-valued scores make ties frequent.
  scores = rng.integers(0, 5, size=(64, 30)).astype(np.float32)
  targets = rng.integers(0, 30, size=64)
  fn = jax.jit(metrics.target_ranks) if jit else metrics.target_ranks
  got = np.asarray(fn(scores, targets))
  np.testing.assert_array_equal(got, metrics.numpy_reference_ranks(scores, targets))


def test_ties_rank_pessimistically():
  scores = np.zeros((1, 10), np.float32)
  assert int(metrics.target_ranks(scores, np.array([3]))[0]) == 10
  scores = np.array([[1.0, 2.0, 2.0, 0.5]], np.float32)
  assert int(metrics.target_ranks(scores, np.array([1]))[0]) == 2


def test_nan_target_ranks_last():
  scores = np.array([[np.nan, 1.0, 2.0]], np.float32)
  assert int(metrics.target_ranks(scores, np.array([0]))[0]) == 3


def test_one_candidate_is_rank_one():
  scores = np.array([[0.3], [-2.0]], np.float32)
  np.testing.assert_array_equal(metrics.target_ranks(scores, np.array([0, 0])), [1, 1])


def test_k_boundaries():
  ranks = np.array([1, 4, 5, 6, 10, 11, 20, 21, 100])
  got = metrics.metrics_from_ranks(ranks, ks=(5, 10, 20))
  ref = _reference_metrics(ranks, (5, 10, 20))
  for key in ref:
    np.testing.assert_allclose(np.asarray(got[key]), ref[key], rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("jit", [False, True])
def test_batch_sums_equal_reference_means(jit):
  rng = np.random.default_rng(1)
  num_items, batch = 50, 40
  scores = rng.normal(size=(batch, num_items)).astype(np.float32)
  scores[:, :10] = np.round(scores[:, :10])  # some ties
  targets = rng.integers(0, num_items, size=batch)
  negatives = np.stack([
      rng.choice(np.setdiff1d(np.arange(num_items), [t]), 9, replace=False)
      for t in targets])
  mask = np.ones(batch, bool)
  mask[-5:] = False
  fn = jax.jit(metrics.batch_metric_sums, static_argnames="ks") if jit else metrics.batch_metric_sums
  acc = metrics.MetricAccumulator()
  # Two halves accumulate to the same means as the whole.
  for sl in (slice(0, 17), slice(17, batch)):
    acc.add(fn(scores[sl], targets[sl], mask[sl], negatives[sl], ks=(1, 5, 10)))
  result = acc.result(aliases=True)

  real = mask
  full_ranks = metrics.numpy_reference_ranks(scores[real], targets[real])
  cand = np.concatenate([targets[:, None], negatives], 1)[real]
  samp_scores = np.take_along_axis(scores[real], cand, 1)
  samp_ranks = metrics.numpy_reference_ranks(samp_scores, np.zeros(real.sum(), int))
  for mode, ranks in (("full", full_ranks), ("sampled", samp_ranks)):
    ref = _reference_metrics(ranks, (1, 5, 10))
    for name, values in ref.items():
      assert result[f"{mode}/{name}"] == pytest.approx(values.mean(), abs=1e-6), (mode, name)
    assert result[f"{mode}/P@5"] == result[f"{mode}/HR@5"]
  assert result["count"] == real.sum()


def test_empty_accumulator_raises():
  with pytest.raises(ValueError, match="No examples"):
    metrics.MetricAccumulator().result()
