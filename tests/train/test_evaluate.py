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


# ---------------------------------------------------------------- per-example files


def test_top_items_match_a_stable_numpy_sort_with_ties():
  rng = np.random.default_rng(3)
  scores = np.round(rng.normal(size=(6, 40)), 1).astype(np.float32)  # many ties
  out = evaluate_lib.top_items(jnp.asarray(scores), 7)
  # Best first; equal scores keep the lower id first.
  ref = np.argsort(-scores, axis=1, kind="stable")[:, :7]
  np.testing.assert_array_equal(np.asarray(out["top/items"]), ref)
  np.testing.assert_array_equal(np.asarray(out["top/scores"]),
                                np.take_along_axis(scores, ref, 1))
  assert evaluate_lib.top_items(jnp.asarray(scores), 100)["top/items"].shape == (6, 40)


def test_example_files_round_trip_with_metadata(tmp_path):
  cols = {"index": np.arange(5, dtype=np.int32), "rank/full": np.array([1, 3, 2, 9, 4], np.int32),
          "top/items": np.arange(15, dtype=np.int32).reshape(5, 3),
          "top/scores": np.linspace(0, 1, 15, dtype=np.float32).reshape(5, 3)}
  path = str(tmp_path / "examples" / "test.parquet")
  evaluate_lib.save_examples(path, cols, {"model": "m", "ks": [5]})
  got, meta = evaluate_lib.load_examples(path)
  assert meta == {"model": "m", "ks": [5]}
  for k, v in cols.items():
    np.testing.assert_array_equal(got[k], v)
    assert got[k].dtype == v.dtype
  assert [p.name for p in (tmp_path / "examples").iterdir()] == ["test.parquet"]  # no temp left
  with pytest.raises(ValueError, match="rows"):
    evaluate_lib.save_examples(path, {"a": np.zeros(2), "b": np.zeros(3)}, {})
  with pytest.raises(FileNotFoundError, match="per-example"):
    evaluate_lib.load_examples(str(tmp_path / "missing.parquet"))


def test_sbr_run_writes_examples_that_agree_with_its_metrics(tiny_config, tmp_path):
  import json
  import os
  import jax
  from sbrjax import metrics
  from sbrjax.data import graphs as graphs_lib
  from sbrjax.data import prepared
  from sbrjax import pipeline
  from sbrjax.sbr import export
  wd = str(tmp_path / "run")
  pipeline.run(tiny_config, wd)
  results = json.load(open(os.path.join(wd, "results.json")))
  data = prepared.load_prepared(tiny_config.data)
  ks = tuple(tiny_config.eval.ks)
  counts = np.bincount(data.train.targets, minlength=data.num_items)
  model, params, _, _ = export.load_backbone(wd)
  score = jax.jit(lambda p, b: model.apply({"params": p["sbr"]}, b, deterministic=True).logits)
  for split in ("test", "valid"):
    cols, meta = evaluate_lib.load_examples(evaluate_lib.examples_path(wd, split))
    assert meta["split"] == split and meta["ks"] == list(ks)
    sp = getattr(data, split)
    np.testing.assert_array_equal(np.sort(cols["index"]), np.arange(len(sp)))
    idx = cols["index"]
    np.testing.assert_array_equal(cols["target"], sp.targets[idx])
    np.testing.assert_array_equal(cols["session_length"], sp.lengths[idx])
    np.testing.assert_array_equal(cols["target_train_count"], counts[sp.targets[idx]])
    # The aggregate metrics, recomputed from the file's ranks with NumPy.
    for mode in ("full", "sampled"):
      r = cols[f"rank/{mode}"].astype(np.float64)
      for k in ks:
        hit = r <= k
        ref = {"HR": hit.mean(), "NDCG": np.where(hit, 1 / np.log2(r + 1), 0).mean(),
               "MRR": np.where(hit, 1 / r, 0).mean()}
        for name, value in ref.items():
          assert abs(results[split][f"{mode}/{name}@{k}"] - value) <= 1e-6, (split, mode, name)
    # Top items and ranks against brute force over the best parameters' scores.
    graphs = graphs_lib.build_graphs(sp, tiny_config.data.max_len)
    logits = np.asarray(score(params, graphs_lib.make_batch(graphs, np.arange(len(sp)),
                                                            len(sp))))
    ref_top = np.argsort(-logits, axis=1, kind="stable")[:, :max(ks)]
    np.testing.assert_array_equal(cols["top/items"], ref_top[idx])
    np.testing.assert_allclose(cols["top/scores"], np.take_along_axis(logits, ref_top, 1)[idx],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cols["rank/full"],
                                  metrics.numpy_reference_ranks(logits, sp.targets)[idx])
