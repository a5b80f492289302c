"""Tests for sbrjax.llm4sbr.localize (LLM4SBR eqs. 3-4)."""

import jax
import numpy as np
import pytest

from sbrjax.llm4sbr import localize as loc


def _reference(intents, items, f):
  """Brute-force NumPy eqs. 3-4 in float64; ties -> lower item index."""
  intents = np.asarray(intents, np.float64)
  items = np.asarray(items, np.float64)
  if f == 0:
    return intents, None
  f = min(f, items.shape[0])
  qn = intents / np.maximum(np.linalg.norm(intents, axis=1, keepdims=True),
                            1e-12)
  en = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
  sims = qn @ en.T  # [n, m]
  out = np.zeros_like(intents)
  chosen = []
  for r in range(intents.shape[0]):
    # lexsort: last key is primary -> descending sim, then ascending index.
    order = np.lexsort((np.arange(items.shape[0]), -sims[r]))[:f]
    s = sims[r, order]
    w = np.exp(s - s.max())
    w /= w.sum()
    out[r] = w @ items[order]
    chosen.append(order)
  return out, np.array(chosen)


def _random(n, m, d, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32),
          rng.normal(size=(m, d)).astype(np.float32))


@pytest.mark.parametrize("chunk", [1, 7, 16, 50, 64, 1000])
def test_matches_bruteforce_for_every_chunk_size(chunk):
  q, items = _random(9, 50, 12)
  ref, ref_idx = _reference(q, items, 5)
  got = loc.localize(q, items, 5, chunk_size=chunk, query_block=4)
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
  _, idx = loc.top_f_cosine(q, items, f=5, chunk_size=chunk)
  np.testing.assert_array_equal(np.asarray(idx), ref_idx)


@pytest.mark.parametrize("f,chunk", [(1, 4), (5, 7), (12, 64), (40, 9)])
def test_localized_ids_and_weights_equal_numpy_top_f(f, chunk):
  # The ids kept beside an intent array: the top-f items of a brute-force
  # NumPy cosine ranking (ties -> lower id) and the softmax of their cosines.
  q, items = _random(11, 37, 6, seed=f)
  items[5] = items[3] * 2.0  # an exact tie in cosine: id 3 ranks first
  q[0] = items[3]
  ref, ref_idx = _reference(q, items, f)
  got, ids, weights = loc.localize(q, items, f, chunk_size=chunk, query_block=4,
                                   return_ids=True)
  f = min(f, 37)
  assert ids.shape == weights.shape == (11, f) and ids.dtype == np.int32
  np.testing.assert_array_equal(ids, ref_idx)
  assert list(ids[0, :2]) == [3, 5] if f >= 2 else ids[0, 0] == 3
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  en = items / np.linalg.norm(items, axis=1, keepdims=True)
  sims = np.take_along_axis(qn.astype(np.float64) @ en.T.astype(np.float64), ref_idx, 1)
  want_w = np.exp(sims - sims.max(1, keepdims=True))
  want_w /= want_w.sum(1, keepdims=True)
  np.testing.assert_allclose(weights, want_w, rtol=0, atol=1e-6)
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
  # The localized vector is exactly their weighted sum of item embeddings.
  np.testing.assert_allclose(got, np.einsum("nf,nfd->nd", weights, items[ids]),
                             rtol=0, atol=1e-5)
  raw, none_ids, none_w = loc.localize(q, items, 0, return_ids=True)
  assert none_ids.shape == none_w.shape == (11, 0)
  np.testing.assert_array_equal(raw, q)


def test_chunk_sizes_agree_with_each_other_exactly_on_indices():
  q, items = _random(5, 333, 8, seed=3)
  idxs = [np.asarray(loc.top_f_cosine(q, items, f=20, chunk_size=c)[1])
          for c in (1, 10, 64, 100, 333)]
  for other in idxs[1:]:
    np.testing.assert_array_equal(other, idxs[0])


def test_ties_broken_by_lower_item_index_across_chunks():
  # Items are exact scaled basis vectors; several share a direction, so their
  # cosine with any query is bit-identical (scale by a power of two, no
  # rounding). Duplicates straddle chunk boundaries.
  d, m = 6, 30
  dirs = np.array([(5 * j) % d for j in range(m)])
  scales = np.array([1.0, 2.0, 4.0])[np.arange(m) % 3]
  items = np.zeros((m, d), np.float32)
  items[np.arange(m), dirs] = scales
  rng = np.random.default_rng(1)
  q = (rng.integers(1, 8, size=(4, d)) * rng.choice([-1, 1], size=(4, d))
       ).astype(np.float32) / 8  # dyadic, no zeros
  for f in (1, 3, 7, 12):
    ref, ref_idx = _reference(q, items, f)
    for chunk in (1, 4, 7, 30):
      sims, idx = loc.top_f_cosine(q, items, f=f, chunk_size=chunk)
      np.testing.assert_array_equal(np.asarray(idx), ref_idx,
                                    err_msg=f"f={f} chunk={chunk}")
      got = loc.localize(q, items, f, chunk_size=chunk)
      np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
  # Sanity: the data really has ties inside the selected set.
  sims = np.asarray(loc.top_f_cosine(q, items, f=12, chunk_size=5)[0])
  assert (np.diff(sims, axis=1) == 0).any()


def test_f_larger_than_catalog_uses_every_item():
  q, items = _random(3, 6, 4, seed=2)
  ref, _ = _reference(q, items, 6)
  for f in (6, 7, 100):
    got = loc.localize(q, items, f, chunk_size=4)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_f_zero_returns_raw_intent_embedding():
  q, items = _random(3, 6, 4)
  got = loc.localize(q, items, 0)
  np.testing.assert_array_equal(got, q)
  assert got.dtype == np.float32
  # f = 0 needs no catalog at all.
  np.testing.assert_array_equal(loc.localize(q, np.zeros((0, 4)), 0), q)


def test_f_one_returns_nearest_item_embedding():
  q, items = _random(4, 20, 5, seed=4)
  _, idx = _reference(q, items, 1)
  got = loc.localize(q, items, 1, chunk_size=6)
  np.testing.assert_allclose(got, items[idx[:, 0]], rtol=0, atol=1e-6)


def test_not_jitted_matches_jitted():
  q, items = _random(4, 23, 6, seed=5)
  jitted = np.asarray(loc.localize_block(q, items, f=4, chunk_size=5)[0])
  with jax.disable_jit():
    eager = np.asarray(loc.localize_block(q, items, f=4, chunk_size=5)[0])
  np.testing.assert_allclose(eager, jitted, rtol=0, atol=1e-6)
  ref, _ = _reference(q, items, 4)
  np.testing.assert_allclose(eager, ref, rtol=0, atol=1e-5)


def test_query_blocks_pad_without_changing_results():
  q, items = _random(10, 40, 8, seed=6)
  a = loc.localize(q, items, 3, query_block=3)
  b = loc.localize(q, items, 3, query_block=64)
  np.testing.assert_array_equal(a, b)


def test_zero_item_vector_has_zero_similarity():
  q = np.array([[1.0, -1.0]], np.float32)
  items = np.array([[0.0, 0.0], [-1.0, 1.0]], np.float32)
  # Cosine: 0 for the zero vector, -1 for the opposite one -> zero wins.
  _, idx = loc.top_f_cosine(q, items, f=1, chunk_size=2)
  assert int(idx[0, 0]) == 0


def test_bad_inputs_are_refused():
  q, items = _random(2, 5, 3)
  with pytest.raises(ValueError, match="f must be >= 0"):
    loc.localize(q, items, -1)
  with pytest.raises(ValueError, match="does not match intents dim"):
    loc.localize(q, items[:, :2], 2)
  bad = q.copy()
  bad[1, 0] = np.nan
  with pytest.raises(ValueError, match="intents row 1"):
    loc.localize(bad, items, 2)
  bad_items = items.copy()
  bad_items[3, 2] = np.inf
  with pytest.raises(ValueError, match="item embedding row 3"):
    loc.localize(q, bad_items, 2)
  with pytest.raises(ValueError, match="catalog is empty"):
    loc.localize(q, np.zeros((0, 3), np.float32), 2)
