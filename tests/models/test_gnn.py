"""Gated GNN over padded jraph batches against a dense SR-GNN reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbrjax.data.graphs import build_graphs, make_batch
from sbrjax.data.types import Split
from sbrjax.models.gnn import GatedGNN, propagate


def make_split(seqs):
  offsets = np.zeros(len(seqs) + 1, np.int64)
  np.cumsum([len(s) for s in seqs], out=offsets[1:])
  values = np.concatenate([np.asarray(s) for s in seqs]).astype(np.int32)
  n = len(seqs)
  return Split(values, offsets, np.zeros(n, np.int32), np.zeros(n, np.int32))


def reference_adjacency(seq):
  """SR-GNN reference `get_slice`: sorted nodes and A_s = [A_in, A_out]."""
  node = np.unique(seq)
  n = len(node)
  a = np.zeros((n, n))
  for i in range(len(seq) - 1):
    a[np.searchsorted(node, seq[i]), np.searchsorted(node, seq[i + 1])] = 1
  sum_in = a.sum(0)
  sum_in[sum_in == 0] = 1
  sum_out = a.sum(1)
  sum_out[sum_out == 0] = 1
  a_s = np.concatenate([a / sum_in, a.T / sum_out]).T  # [n, 2n]
  return node, a_s


def dense_gnn(p, a_s, h, steps):
  """SR-GNN eqs. (1)-(5) with dense A_s = [A_in, A_out], float64."""
  n = h.shape[0]
  f = lambda x: np.asarray(x, np.float64)
  sig = lambda x: 1 / (1 + np.exp(-x))
  d = h.shape[1]
  for _ in range(steps):
    m_in = h @ f(p["edge_in"]["kernel"]) + f(p["edge_in"]["bias"])
    m_out = h @ f(p["edge_out"]["kernel"]) + f(p["edge_out"]["bias"])
    a = np.concatenate([a_s[:, :n] @ m_in, a_s[:, n:] @ m_out], -1)  # (1)
    g = a @ f(p["input_gates"]["kernel"]) + f(p["input_gates"]["bias"])
    u = h @ f(p["state_gates"]["kernel"])
    z = sig(g[:, :d] + u[:, :d])  # (2)
    r = sig(g[:, d:2 * d] + u[:, d:])  # (3)
    c = np.tanh(g[:, 2 * d:] + (r * h) @ f(p["candidate"]["kernel"]))  # (4)
    h = (1 - z) * h + z * c  # (5)
  return h


SESSIONS = [[1, 2, 3, 2, 4], [5], [7, 7, 8, 7], [0, 1, 0, 1, 0, 1],
            [9, 3, 9, 3, 3, 2, 6, 6], [4, 4]]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
def test_gated_gnn_matches_dense_reference(jit, steps):
  d, max_len = 6, 8
  graphs = build_graphs(make_split(SESSIONS), max_len)
  batch = make_batch(graphs, np.arange(len(SESSIONS)), 8)
  table = jax.random.normal(jax.random.key(1), (10, d))
  model = GatedGNN(d, steps)
  h0 = table[batch.graph.nodes]
  params = model.init(jax.random.key(0), batch.graph, h0)["params"]
  fn = lambda p, g, h: model.apply({"params": p}, g, h)
  out = np.asarray((jax.jit(fn) if jit else fn)(params, batch.graph, h0))
  p64 = jax.tree.map(np.asarray, params)
  for i, s in enumerate(SESSIONS):
    node, a_s = reference_adjacency(np.asarray(s))
    ref = dense_gnn(p64, a_s, np.asarray(table, np.float64)[node], steps)
    lo = graphs.node_offsets[i]
    ours = out[lo:graphs.node_offsets[i + 1]]  # batch-global = split offsets
    items = graphs.node_items[lo:graphs.node_offsets[i + 1]]
    np.testing.assert_allclose(ours, ref[np.searchsorted(node, items)],
                               rtol=1e-5, atol=1e-5)


def test_padding_nodes_do_not_leak_into_real_nodes():
  d = 4
  graphs = build_graphs(make_split(SESSIONS), 8)
  batch = make_batch(graphs, np.arange(3), 5)
  num_real = int(batch.graph.n_node[:-1].sum())
  h0 = jax.random.normal(jax.random.key(2), (batch.graph.nodes.shape[0], d))
  model = GatedGNN(d, 2)
  params = model.init(jax.random.key(0), batch.graph, h0)
  noisy = h0.at[num_real:].set(1e3)
  a = model.apply(params, batch.graph, h0)
  b = model.apply(params, batch.graph, noisy)
  np.testing.assert_array_equal(a[:num_real], b[:num_real])


def test_propagate_equals_weighted_adjacency_product():
  rng = np.random.default_rng(0)
  senders = rng.integers(0, 7, 20).astype(np.int32)
  receivers = rng.integers(0, 7, 20).astype(np.int32)
  w = rng.random(20).astype(np.float32)
  x = rng.normal(size=(7, 3)).astype(np.float32)
  adj = np.zeros((7, 7), np.float32)
  np.add.at(adj, (receivers, senders), w)
  np.testing.assert_allclose(propagate(jnp.asarray(x), senders, receivers, w),
                             adj @ x, rtol=1e-5, atol=1e-6)
