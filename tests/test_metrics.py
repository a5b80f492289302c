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


def test_summarize_means_every_metric_per_mode():
  ranks = {"full": np.array([1, 3, 30]), "sampled": np.array([1, 2, 5])}
  got = metrics.summarize(ranks, ks=(5, 10), aliases=True)
  for mode, r in ranks.items():
    for name, values in _reference_metrics(r, (5, 10)).items():
      assert got[f"{mode}/{name}"] == pytest.approx(values.mean(), abs=1e-12)
    assert got[f"{mode}/P@5"] == got[f"{mode}/HR@5"]
  assert got["count"] == 3


def test_summarize_refuses_empty_or_mismatched_modes():
  with pytest.raises(ValueError, match="No examples"):
    metrics.summarize({"full": np.zeros(0, int)})
  with pytest.raises(ValueError, match="disagree"):
    metrics.summarize({"full": np.ones(2, int), "sampled": np.ones(3, int)})
