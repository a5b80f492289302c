"""The shared evaluation loop against brute-force NumPy ranks and metrics."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from sbrjax import metrics
from sbrjax.train import evaluate as evaluate_lib


def _reference_metrics(ranks, ks):
  out = {}
  for k in ks:
    out[f"HR@{k}"] = np.array([1.0 if r <= k else 0.0 for r in ranks])
    out[f"NDCG@{k}"] = np.array([1.0 / math.log2(r + 1) if r <= k else 0.0 for r in ranks])
    out[f"MRR@{k}"] = np.array([1.0 / r if r <= k else 0.0 for r in ranks])
  return out


def _rank_fn(params, batch):
  scores, targets, mask, negatives = batch
  return {**evaluate_lib.ranks_from_scores(scores * params, targets, mask, negatives),
          "target": targets}


def test_batches_give_the_reference_means_and_per_example_rows():
  rng = np.random.default_rng(1)
  num_items, batch = 50, 40
  scores = rng.normal(size=(batch, num_items)).astype(np.float32)
  scores[:, :10] = np.round(scores[:, :10])  # some ties
  targets = rng.integers(0, num_items, size=batch).astype(np.int32)
  negatives = np.stack([
      rng.choice(np.setdiff1d(np.arange(num_items), [t]), 9, replace=False)
      for t in targets]).astype(np.int32)
  mask = np.ones(batch, bool)
  mask[-5:] = False
  evaluate = evaluate_lib.make_evaluator(_rank_fn, ks=(1, 5, 10))
  # Two batches of one shape (the second padded) accumulate to the means of the whole.
  batches = []
  for sl in (slice(0, 20), slice(20, batch)):
    m = mask[sl].copy()
    parts = [scores[sl], targets[sl], m, negatives[sl]]
    batches.append(tuple(x[:20] for x in parts))
  result, examples = evaluate(jnp.float32(1.0), batches, aliases=True, return_examples=True)

  real = mask
  full_ranks = metrics.numpy_reference_ranks(scores[real], targets[real])
  cand = np.concatenate([targets[:, None], negatives], 1)[real]
  samp_scores = np.take_along_axis(scores[real], cand, 1)
  samp_ranks = metrics.numpy_reference_ranks(samp_scores, np.zeros(real.sum(), int))
  np.testing.assert_array_equal(examples["rank/full"], full_ranks)
  np.testing.assert_array_equal(examples["rank/sampled"], samp_ranks)
  np.testing.assert_array_equal(examples["target"], targets[real])
  for mode, ranks in (("full", full_ranks), ("sampled", samp_ranks)):
    ref = _reference_metrics(ranks, (1, 5, 10))
    for name, values in ref.items():
      assert result[f"{mode}/{name}"] == pytest.approx(values.mean(), abs=1e-12), (mode, name)
    assert result[f"{mode}/P@5"] == result[f"{mode}/HR@5"]
  assert result["count"] == real.sum()


def test_all_masked_batches_raise():
  evaluate = evaluate_lib.make_evaluator(_rank_fn, ks=(5,))
  batch = (np.zeros((2, 4), np.float32), np.zeros(2, np.int32), np.zeros(2, bool), None)
  with pytest.raises(ValueError, match="No examples"):
    evaluate(jnp.float32(1.0), [batch])
