"""Session-graph construction and padded jraph batching."""

import numpy as np
import pytest

from sbrjax.data.graphs import (budgets, build_graphs, iterate_batches,
                                make_batch, num_batches)
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


def check_batch(graphs, batch, idx, batch_size):
  max_len = graphs.max_len
  n_pad, e_pad, g_pad = budgets(batch_size, max_len)
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


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_iterate_batches_fixed_shapes_and_cover_split(drop_remainder):
  rng = np.random.default_rng(1)
  seqs = [rng.integers(0, 20, size=rng.integers(1, 9)) for _ in range(23)]
  negs = rng.integers(0, 20, size=(23, 4)).astype(np.int32)
  g = build_graphs(make_split(seqs, negs), max_len=6)
  batches = list(iterate_batches(g, 5, shuffle=True, seed=3, epoch=2,
                                 drop_remainder=drop_remainder))
  assert len(batches) == num_batches(g, 5, drop_remainder=drop_remainder)
  seen = []
  for b in batches:
    idx = b.index[b.graph_mask]
    check_batch(g, b, idx, 5)
    np.testing.assert_array_equal(b.negatives[:len(idx)], negs[idx])
    seen.extend(idx.tolist())
  if drop_remainder:
    assert len(seen) == 20 and len(set(seen)) == 20
  else:
    assert sorted(seen) == list(range(23))
  again = [b.index for b in iterate_batches(g, 5, shuffle=True, seed=3,
                                            epoch=2, prefetch=0,
                                            drop_remainder=drop_remainder)]
  np.testing.assert_array_equal(np.concatenate(again),
                                np.concatenate([b.index for b in batches]))
  other = np.concatenate([b.index for b in iterate_batches(
      g, 5, shuffle=True, seed=3, epoch=3, drop_remainder=drop_remainder)])
  assert not np.array_equal(other, np.concatenate(again))


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
