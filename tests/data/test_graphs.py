"""Session-graph construction and padded jraph batching."""

import numpy as np
import pytest

from sbrjax.data.graphs import (budgets, build_graphs, iterate_batches,
                                make_batch, node_cap_for, num_batches, pack)
from sbrjax.data.types import Split


def make_split(seqs, negatives=None):
  offsets = np.zeros(len(seqs) + 1, np.int64)
  np.cumsum([len(s) for s in seqs], out=offsets[1:])
  values = (np.concatenate([np.asarray(s) for s in seqs]).astype(np.int32)
            if seqs else np.zeros(0, np.int32))
  n = len(seqs)
  return Split(values, offsets, np.arange(100, 100 + n, dtype=np.int32),
               np.zeros(n, np.int32), negatives)


def reference_adjacency(seq):
  """SR-GNN reference `get_slice` for one session: (sorted nodes, A_in, A_out).

  A_in[v, u] = A[u, v] / indeg(v); A_out[u, v] = A[u, v] / outdeg(u).
  """
  node = np.unique(seq)
  a = np.zeros((len(node), len(node)))
  for i in range(len(seq) - 1):
    u = np.where(node == seq[i])[0][0]
    v = np.where(node == seq[i + 1])[0][0]
    a[u][v] = 1
  sum_in = a.sum(0)
  sum_in[sum_in == 0] = 1
  a_in = a / sum_in
  sum_out = a.sum(1)
  sum_out[sum_out == 0] = 1
  a_out = a.T / sum_out
  both = np.concatenate([a_in, a_out]).T  # [n, 2n] as the reference feeds it
  return node, both[:, :len(node)], both[:, len(node):]


def dense_from_graph(graphs, g):
  """(items, A_in, A_out) of graph g in our node order."""
  lo, hi = graphs.node_offsets[g], graphs.node_offsets[g + 1]
  elo, ehi = graphs.edge_offsets[g], graphs.edge_offsets[g + 1]
  n = hi - lo
  a_in, a_out = np.zeros((n, n)), np.zeros((n, n))
  s, r = graphs.senders[elo:ehi], graphs.receivers[elo:ehi]
  a_in[r, s] = graphs.w_in[elo:ehi]
  a_out[s, r] = graphs.w_out[elo:ehi]
  return graphs.node_items[lo:hi], a_in, a_out


def test_paper_fig2_session_graph():
  # Wu et al. 2019, Fig. 2: s = [v1, v2, v3, v2, v4].
  g = build_graphs(make_split([[1, 2, 3, 2, 4]]), max_len=10)
  np.testing.assert_array_equal(g.node_items, [1, 2, 3, 4])
  edges = list(zip(g.senders.tolist(), g.receivers.tolist()))
  assert edges == [(0, 1), (1, 2), (2, 1), (1, 3)]
  np.testing.assert_array_equal(g.w_in, np.float32([0.5, 1.0, 0.5, 1.0]))
  np.testing.assert_array_equal(g.w_out, np.float32([1.0, 0.5, 1.0, 0.5]))
  _, a_in, a_out = dense_from_graph(g, 0)
  h = 0.5
  np.testing.assert_array_equal(a_out, [[0, 1, 0, 0], [0, 0, h, h],
                                        [0, 1, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(a_in, [[0, 0, 0, 0], [h, 0, h, 0],
                                       [0, 1, 0, 0], [0, 1, 0, 0]])
  np.testing.assert_array_equal(g.positions[0, :5], [0, 1, 2, 1, 3])
  assert g.lengths.tolist() == [5]


def test_self_loops_and_repeated_transitions_counted_once():
  g = build_graphs(make_split([[7, 7, 8, 7], [1, 2, 1, 2, 1, 2]]), max_len=10)
  items, a_in, a_out = dense_from_graph(g, 0)
  np.testing.assert_array_equal(items, [7, 8])
  # Edges 7->7, 7->8, 8->7: indeg(7) = 2, outdeg(7) = 2.
  np.testing.assert_array_equal(a_in, [[0.5, 0.5], [1, 0]])
  np.testing.assert_array_equal(a_out, [[0.5, 0.5], [1, 0]])
  assert g.n_edge.tolist() == [3, 2]
  items, a_in, a_out = dense_from_graph(g, 1)
  np.testing.assert_array_equal(items, [1, 2])
  np.testing.assert_array_equal(a_in, [[0, 1], [1, 0]])
  np.testing.assert_array_equal(a_out, [[0, 1], [1, 0]])


def test_matches_reference_get_slice_on_random_sessions():
  rng = np.random.default_rng(0)
  seqs = [rng.integers(0, 6, size=rng.integers(1, 12)) for _ in range(300)]
  max_len = 8
  g = build_graphs(make_split(seqs), max_len)
  for i, s in enumerate(seqs):
    s = s[-max_len:]
    items, a_in, a_out = dense_from_graph(g, i)
    # First-appearance order.
    _, first = np.unique(s, return_index=True)
    np.testing.assert_array_equal(items, s[np.sort(first)])
    node, ref_in, ref_out = reference_adjacency(s)
    perm = np.searchsorted(node, items)  # our node k = reference node perm[k]
    np.testing.assert_allclose(a_in, ref_in[np.ix_(perm, perm)], atol=1e-7)
    np.testing.assert_allclose(a_out, ref_out[np.ix_(perm, perm)], atol=1e-7)
    np.testing.assert_array_equal(items[g.positions[i, :len(s)]], s)
    assert g.lengths[i] == len(s)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="empty input sequence"):
    build_graphs(make_split([[1, 2], []]), max_len=5)
  with pytest.raises(ValueError, match="max_len"):
    build_graphs(make_split([[1, 2]]), max_len=0)
  with pytest.raises(ValueError, match="negative item id"):
    build_graphs(make_split([[1, -2]]), max_len=5)


def check_batch(graphs, batch, idx, batch_size, node_cap=None):
  max_len = graphs.max_len
  n_pad, e_pad, g_pad = budgets(batch_size, max_len, node_cap)
  gr = batch.graph
  assert gr.nodes.shape == (n_pad,) and gr.senders.shape == (e_pad,)
  assert gr.edges["w_in"].shape == (e_pad,) and gr.n_node.shape == (g_pad,)
  assert gr.n_node.sum() == n_pad and gr.n_edge.sum() == e_pad
  assert gr.n_node[-1] >= 1
  for name in ("positions", "lengths", "targets", "graph_mask", "index"):
    assert getattr(batch, name).shape[0] == batch_size, name
  k = len(idx)
  np.testing.assert_array_equal(batch.graph_mask, np.arange(batch_size) < k)
  np.testing.assert_array_equal(batch.index[:k], idx)
  assert (batch.index[k:] == -1).all() and (batch.lengths[k:] == 0).all()
  np.testing.assert_array_equal(batch.targets[:k], graphs.targets[idx])
  first_pad = gr.n_node[:-1].sum()
  node_graph = np.repeat(np.arange(g_pad), gr.n_node)
  for row, i in enumerate(idx):
    n = graphs.lengths[i]
    pos = batch.positions[row]
    lo, hi = graphs.node_offsets[i], graphs.node_offsets[i + 1]
    np.testing.assert_array_equal(
        gr.nodes[pos[:n]], graphs.node_items[lo:hi][graphs.positions[i, :n]])
    assert (node_graph[pos[:n]] == row).all()
    assert (pos[n:] >= first_pad).all()
  # Real edges stay inside their graph; padding edges touch padding nodes.
  edge_graph = np.repeat(np.arange(g_pad), gr.n_edge)
  assert (node_graph[gr.senders] == edge_graph).all()
  assert (node_graph[gr.receivers] == edge_graph).all()
  assert (gr.edges["w_in"][edge_graph == g_pad - 1] == 0).all()


@pytest.mark.parametrize("node_cap", [None, "auto", 12])
@pytest.mark.parametrize("drop_remainder", [False, True])
def test_iterate_batches_fixed_shapes_and_cover_split(drop_remainder, node_cap):
  rng = np.random.default_rng(1)
  seqs = [rng.integers(0, 20, size=rng.integers(1, 9)) for _ in range(23)]
  negs = rng.integers(0, 20, size=(23, 4)).astype(np.int32)
  g = build_graphs(make_split(seqs, negs), max_len=6)
  cap = node_cap_for(g, 5) if node_cap == "auto" else node_cap
  kw = dict(shuffle=True, seed=3, epoch=2, drop_remainder=drop_remainder,
            node_cap=node_cap)
  batches = list(iterate_batches(g, 5, **kw))
  assert len(batches) == num_batches(g, 5, **kw)
  order = np.random.default_rng([3, 2]).permutation(23)
  seen = []
  for j, b in enumerate(batches):
    idx = b.index[b.graph_mask]
    check_batch(g, b, idx, 5, cap)
    np.testing.assert_array_equal(b.negatives[:len(idx)], negs[idx])
    real_nodes = g.n_node[idx].sum()
    if cap is not None:
      assert real_nodes <= cap
    if len(idx) < 5 and j < len(batches) - 1:
      # A batch closes early only when the next graph would not fit.
      assert cap is not None and real_nodes + g.n_node[order[len(seen) + len(idx)]] > cap
    seen.extend(idx.tolist())
  np.testing.assert_array_equal(seen, order[:len(seen)])  # order is kept
  if drop_remainder:  # only a partial last batch is dropped
    bounds = pack(g.n_node[order], 5, cap)
    last_full = bounds[-1] - bounds[-2] == 5
    assert len(seen) == (23 if last_full else bounds[-2]) and 23 - len(seen) < 5
  else:
    assert len(seen) == 23
  if node_cap is None:
    assert len(batches) == (4 if drop_remainder else 5)
  again = [b.index for b in iterate_batches(g, 5, prefetch=0, **kw)]
  np.testing.assert_array_equal(np.concatenate(again),
                                np.concatenate([b.index for b in batches]))
  kw["epoch"] = 3
  other = np.concatenate([b.index for b in iterate_batches(g, 5, **kw)])
  assert not np.array_equal(other, np.concatenate(again))


def test_node_cap_for_is_a_tight_fixed_budget():
  rng = np.random.default_rng(0)
  # Mostly short sessions, a few at max_len: the cap sits far below the worst
  # case but above every single graph.
  seqs = [np.arange(rng.integers(2, 6)) for _ in range(400)] + [np.arange(40)] * 4
  g = build_graphs(make_split(seqs), max_len=40)
  cap = node_cap_for(g, 64)
  n = g.n_node.astype(float)
  expected = 64 * n.mean() + 4 * 8 * n.std()
  assert expected <= cap < expected + 64 and cap % 64 == 0
  assert cap < 64 * 40
  assert node_cap_for(g, 1) >= 40  # the largest graph always fits
  # Every shuffle packs within the cap, with the same shapes.
  shapes = set()
  for epoch in range(3):
    for b in iterate_batches(g, 64, shuffle=True, epoch=epoch, prefetch=0):
      shapes.add((b.graph.nodes.shape, b.graph.senders.shape, b.positions.shape))
      assert b.graph.n_node[:-1].sum() <= cap
  assert shapes == {((cap + 1,), (cap,), (64, 40))}


def test_pack_greedy_boundaries():
  n_node = np.array([3, 4, 2, 6, 1, 1, 5])
  np.testing.assert_array_equal(pack(n_node, 3, None), [0, 3, 6, 7])
  np.testing.assert_array_equal(pack(n_node, 3, 8), [0, 2, 4, 7])
  np.testing.assert_array_equal(pack(n_node, 3, 8, drop_remainder=True), [0, 2, 4, 7])
  np.testing.assert_array_equal(pack(n_node, 4, 8, drop_remainder=True), [0, 2, 4])
  np.testing.assert_array_equal(pack(n_node, 10, 6), [0, 1, 3, 4, 6, 7])
  np.testing.assert_array_equal(pack(n_node[:0], 3, 8), [0])


def test_node_cap_errors():
  g = build_graphs(make_split([[1, 2, 3], [4, 5], [6]]), max_len=5)
  with pytest.raises(ValueError, match="do not fit node_cap=4"):
    make_batch(g, np.arange(2), 2, node_cap=4)
  b = make_batch(g, np.arange(2), 2, node_cap=5)  # exactly full
  assert b.graph.nodes.shape == (6,) and b.graph.n_node.tolist() == [3, 2, 1]
  with pytest.raises(ValueError, match="smaller than the largest graph"):
    next(iterate_batches(g, 2, shuffle=False, node_cap=2))
  with pytest.raises(ValueError, match="'auto', None or an int"):
    next(iterate_batches(g, 2, shuffle=False, node_cap="tight"))


def test_unshuffled_order_and_one_click_max_len():
  g = build_graphs(make_split([[3], [4, 4], [5, 6, 7]]), max_len=1)
  assert g.n_edge.tolist() == [0, 0, 0] and g.node_items.tolist() == [3, 4, 7]
  (b,) = list(iterate_batches(g, 4, shuffle=False))
  check_batch(g, b, np.arange(3), 4)
  assert b.negatives is None


def test_early_break_does_not_hang():
  g = build_graphs(make_split([[1, 2]] * 50), max_len=3)
  for i, _ in enumerate(iterate_batches(g, 2, shuffle=True, prefetch=1)):
    if i == 1:
      break
  with pytest.raises(ValueError, match="batch_size"):
    next(iter(iterate_batches(g, 0, shuffle=False)))
