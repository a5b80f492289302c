"""Global item graphs from the training split: brute-force references, no leakage, cache."""

import json
import os

import numpy as np
import pytest

from sbrjax.data import item_graphs as ig
from sbrjax.data import prepared as prepared_lib
from sbrjax.data import preprocess
from sbrjax.data.types import PreparedData, Split


def make_split(inputs, targets, users):
  offsets = np.zeros(len(inputs) + 1, np.int64)
  np.cumsum([len(s) for s in inputs], out=offsets[1:])
  values = (np.concatenate([np.asarray(s) for s in inputs]) if inputs
            else np.zeros(0)).astype(np.int32)
  return Split(values, offsets, np.asarray(targets, np.int32), np.asarray(users, np.int32))


def ragged_list(seqs):
  values, offsets = seqs
  return [values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


def synthetic_interactions(num_users=12, num_items=15, per_user=11, seed=0):
  rng = np.random.default_rng(seed)
  users, items, times = [], [], []
  for u in range(num_users):
    seq = rng.integers(0, num_items, per_user)  # repeats allowed
    users += [u] * per_user
    items += seq.tolist()
    times += (1000 * u + np.arange(per_user) * 60).tolist()
  return np.array(users), np.array(items), np.array(times)


# ------------------------------------------------------------------ sequences


@pytest.mark.parametrize("max_len", [50, 3, 1])
def test_training_sequences_undo_prefix_augmentation_of_the_llmgr_protocol(max_len):
  out = preprocess.llmgr_protocol(*synthetic_interactions(), max_len=max_len, min_count=1)
  got = ragged_list(ig.training_sequences(out.train))
  # Independent expectation: each user's full history minus the test and validation targets.
  hist = out.histories["test"]
  want = [hist.values[hist.offsets[u]:hist.offsets[u + 1]][:-1].tolist()
          for u in range(len(hist.offsets) - 1)]
  assert got == want


def test_training_sequences_of_the_session_protocol_are_the_longest_examples():
  users, items, times = synthetic_interactions(num_users=10, per_user=14, seed=3)
  times = times + np.where(np.arange(len(times)) % 14 >= 7, 7200, 0)  # two sessions a user
  out = preprocess.llm4sbr_protocol(users, items, times, session_gap_s=600, max_len=50,
                                    min_count=1)
  got = ragged_list(ig.training_sequences(out.train))
  split = out.train
  longest = {}
  for i in range(len(split)):
    seq = split.sequence(i).tolist() + [int(split.targets[i])]
    if len(seq) > len(longest.get(int(split.users[i]), [])):
      longest[int(split.users[i])] = seq
  assert got == [longest[s] for s in sorted(longest, key=lambda s: np.flatnonzero(
      split.users == s)[0])]


def test_examples_that_do_not_continue_start_new_sequences():
  split = make_split(
      inputs=[[1, 2], [1, 2, 3], [5], [5, 6], [9, 9], [4, 4], [1, 2, 3, 4]],
      targets=[3, 4, 6, 7, 9, 4, 8],
      users=[0, 0, 0, 0, 1, 2, 0])
  # [5] follows [1, 2, 3] -> 4 for the same user but is not its continuation;
  # user 1 and 2 have one example each; the last example is user 0 again.
  assert ig.continues_previous(split).tolist() == [False, True, False, True, False, False,
                                                    False]
  assert ragged_list(ig.training_sequences(split)) == [
      [1, 2, 3, 4], [5, 6, 7], [9, 9, 9], [4, 4, 4], [1, 2, 3, 4, 8]]
  # Truncated continuation (max_len 2): [2, 3] after [1, 2] -> 3.
  trunc = make_split(inputs=[[1], [1, 2], [2, 3], [3, 4]], targets=[2, 3, 4, 5], users=[0] * 4)
  assert ragged_list(ig.training_sequences(trunc)) == [[1, 2, 3, 4, 5]]
  empty = make_split([], [], [])
  assert ragged_list(ig.training_sequences(empty)) == []


# ------------------------------------------------------------------ GCE-GNN


def reference_pairs(seqs, window):
  """build_graph.py: for k in 1..window, both directions of every pair at distance k."""
  adj = {}
  for seq in seqs:
    for k in range(1, window + 1):
      for j in range(len(seq) - k):
        for a, b in ((seq[j], seq[j + k]), (seq[j + k], seq[j])):
          adj.setdefault(a, {})
          adj[a][b] = adj[a].get(b, 0) + 1
  return adj


@pytest.mark.parametrize("window,num_neighbors", [(3, 4), (1, 2), (2, 30)])
def test_gcegnn_graph_matches_the_reference_construction(window, num_neighbors):
  out = preprocess.llmgr_protocol(*synthetic_interactions(seed=1), max_len=50, min_count=1)
  seqs = ig.training_sequences(out.train)
  num_items = len(out.item_codes)
  g = ig.gcegnn_graph(seqs, num_items, window, num_neighbors, seed=0)
  assert g["neighbors"].shape == g["weights"].shape == (num_items, num_neighbors)
  adj = reference_pairs(ragged_list(seqs), window)
  saw_resampling = False
  for a in range(num_items):
    ranked = sorted(adj.get(a, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:num_neighbors]
    got_n, got_w = g["neighbors"][a].tolist(), g["weights"][a].tolist()
    if not ranked:
      assert got_w == [0.0] * num_neighbors
    elif len(ranked) == num_neighbors:  # the top-N, heaviest first
      assert got_n == [b for b, _ in ranked] and got_w == [float(w) for _, w in ranked]
    else:  # fewer: resampled with replacement from exactly those neighbours
      weight_of = dict(ranked)
      assert set(got_n) <= set(weight_of)
      assert got_w == [float(weight_of[b]) for b in got_n]
      saw_resampling = True
  assert saw_resampling or num_neighbors < 30  # 30 exceeds every degree here
  again = ig.gcegnn_graph(seqs, num_items, window, num_neighbors, seed=0)
  np.testing.assert_array_equal(again["neighbors"], g["neighbors"])


def test_gcegnn_graph_counts_self_pairs_twice_and_respects_the_window():
  seqs = (np.array([3, 3, 1, 2, 0], np.int32), np.array([0, 5], np.int64))
  g = ig.gcegnn_graph(seqs, 5, window=1, num_neighbors=2)
  # Item 3: self-pair (3, 3) at distance 1 adds 2, pair (3, 1) adds 1.
  assert g["neighbors"][3].tolist() == [3, 1] and g["weights"][3].tolist() == [2.0, 1.0]
  # Item 0 only meets 2 at distance 1 (1 and 3 are farther): resampled [2, 2].
  assert g["neighbors"][0].tolist() == [2, 2] and g["weights"][0].tolist() == [1.0, 1.0]
  assert g["weights"][4].tolist() == [0.0, 0.0]  # never clicked
  with pytest.raises(ValueError, match="gcegnn_window"):
    ig.gcegnn_graph(seqs, 5, window=0)
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    ig.gcegnn_graph(seqs, 3)


# ------------------------------------------------------------------ S^2-DHCN


@pytest.mark.parametrize("mode", ig.HYPEREDGES)
def test_hypergraph_operator_matches_dense_numpy(mode):
  out = preprocess.llmgr_protocol(*synthetic_interactions(seed=2), max_len=5, min_count=1)
  num_items = len(out.item_codes)
  edges = ig.hyperedges(out.train, mode)
  coo = ig.hypergraph_operator(edges, num_items)
  h = np.zeros((num_items, len(edges[1]) - 1))  # incidence H [I, E], 0/1
  for e, seq in enumerate(ragged_list(edges)):
    h[seq, e] = 1.0
  deg_v, deg_e = h.sum(1), h.sum(0)
  inv = lambda x: np.where(x > 0, 1.0 / np.where(x > 0, x, 1), 0.0)
  want = np.diag(inv(deg_v)) @ h @ np.diag(inv(deg_e)) @ h.T
  got = np.zeros((num_items, num_items))
  got[coo["rows"], coo["cols"]] = coo["values"]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert np.all(np.diff(coo["rows"].astype(np.int64) * num_items + coo["cols"]) > 0)  # sorted
  dense = ig.operator_arrays(coo, num_items, dense_fraction=0.0)
  np.testing.assert_allclose(dense["adjacency"], want, rtol=1e-6, atol=1e-7)
  assert set(ig.operator_arrays(coo, num_items, dense_fraction=1.1)) == {"rows", "cols",
                                                                          "values"}
  np.testing.assert_allclose(want[deg_v > 0].sum(1), 1.0)  # row-stochastic where defined
  if mode == "examples":
    assert len(edges[1]) - 1 == len(out.train)
  with pytest.raises(ValueError, match="s2dhcn_hyperedges"):
    ig.hyperedges(out.train, "users")


# ------------------------------------------------------------------ leakage


def prepared(train, valid, test, num_items, fingerprint="f" * 64):
  return PreparedData(name="toy/x", protocol="llmgr", num_items=num_items, num_users=3,
                      item_raw_ids=[str(i) for i in range(num_items)],
                      item_texts=[f"item {i}" for i in range(num_items)],
                      train=train, valid=valid, test=test, fingerprint=fingerprint)


SETTINGS = {"gcegnn": {"window": 3, "num_neighbors": 4, "seed": 0},
            "hypergraph": {"hyperedges": "sessions"}}


def as_dense(kind, arrays, num_items):
  """[I, I] 0/1: item j is linked to item i."""
  out = np.zeros((num_items, num_items), bool)
  if kind == "gcegnn":
    rows = np.repeat(np.arange(num_items), arrays["neighbors"].shape[1])
    ok = arrays["weights"].reshape(-1) > 0
    out[rows[ok], arrays["neighbors"].reshape(-1)[ok]] = True
  else:
    out[arrays["rows"], arrays["cols"]] = arrays["values"] > 0
  return out


@pytest.mark.parametrize("kind", ig.KINDS)
def test_validation_and_test_clicks_never_enter_the_graphs(kind):
  train = make_split([[0], [0, 1], [2], [2, 3]], [1, 2, 3, 0], [0, 0, 1, 1])
  # Items 4 and 5 occur only as validation / test clicks.
  valid = make_split([[0, 1, 2]], [4], [0])
  test = make_split([[0, 1, 2, 4]], [5], [0])
  data = prepared(train, valid, test, num_items=6)
  arrays = ig.build(data, kind, SETTINGS[kind])
  linked = as_dense(kind, arrays, 6)
  assert not linked[[4, 5]].any() and not linked[:, [4, 5]].any()
  # The same training split with any other validation/test data gives the same arrays.
  other = prepared(train, make_split([[5, 4]], [5], [0]), make_split([[4]], [4], [1]), 6)
  again = ig.build(other, kind, SETTINGS[kind])
  for name in arrays:
    np.testing.assert_array_equal(again[name], arrays[name])


@pytest.mark.parametrize("kind", ig.KINDS)
def test_prepared_ml100k_format_data_links_only_training_pairs(kind, tiny_config):
  data = prepared_lib.load_prepared(tiny_config.data)
  arrays = ig.build(data, kind, SETTINGS[kind])
  linked = as_dense(kind, arrays, data.num_items)
  seqs = ragged_list(ig.training_sequences(data.train))
  allowed = np.zeros_like(linked)
  for seq in seqs:
    for j, a in enumerate(seq):
      lo, hi = (j - 3, j + 4) if kind == "gcegnn" else (0, len(seq))
      allowed[a, seq[max(lo, 0):hi]] = True
  assert linked.any() and not (linked & ~allowed).any()
  # Pairs made only by a validation or test target are absent.
  for split in (data.valid, data.test):
    for i in range(len(split)):
      t = int(split.targets[i])
      for a in split.sequence(i)[-3:]:
        if not allowed[a, t]:
          assert not linked[a, t] and not linked[t, a]


# ------------------------------------------------------------------ cache


def test_load_or_build_caches_by_fingerprint_and_settings(tmp_path, monkeypatch):
  train = make_split([[0], [0, 1], [2]], [1, 2, 0], [0, 0, 1])
  valid = make_split([[0, 1, 2]], [3], [0])
  data = prepared(train, valid, valid, num_items=4)
  arrays, meta = ig.load_or_build(data, "gcegnn", SETTINGS["gcegnn"], str(tmp_path))
  folder = meta["path"]
  assert os.path.isdir(folder) and os.path.basename(folder) == f"gcegnn-{meta['key']}"
  with open(os.path.join(folder, "graph.json")) as f:
    recorded = json.load(f)
  assert recorded["description"]["data_fingerprint"] == data.fingerprint
  assert recorded["description"]["settings"] == SETTINGS["gcegnn"]
  assert recorded["description"]["split"] == "train"

  def no_build(*a, **k):
    raise AssertionError("rebuilt a cached graph")

  real_build = ig.build
  monkeypatch.setattr(ig, "build", no_build)
  cached, meta2 = ig.load_or_build(data, "gcegnn", SETTINGS["gcegnn"], str(tmp_path))
  assert meta2["key"] == meta["key"]
  for name in arrays:
    np.testing.assert_array_equal(cached[name], arrays[name])
  # Other settings or other data: another key (and a build).
  with pytest.raises(AssertionError, match="rebuilt"):
    ig.load_or_build(data, "gcegnn", dict(SETTINGS["gcegnn"], seed=1), str(tmp_path))
  with pytest.raises(AssertionError, match="rebuilt"):
    ig.load_or_build(prepared(train, valid, valid, 4, fingerprint="e" * 64), "gcegnn",
                     SETTINGS["gcegnn"], str(tmp_path))
  # A corrupted cache fails its digest and is rebuilt.
  np.savez(os.path.join(folder, "arrays.npz"), neighbors=arrays["neighbors"] + 1,
           weights=arrays["weights"])
  monkeypatch.setattr(ig, "build", real_build)
  fixed, _ = ig.load_or_build(data, "gcegnn", SETTINGS["gcegnn"], str(tmp_path))
  np.testing.assert_array_equal(fixed["neighbors"], arrays["neighbors"])
