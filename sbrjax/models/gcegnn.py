"""GCE-GNN (Wang et al., SIGIR 2020): session graph + global item graph.

Reads a ``sbrjax.data.graphs.GraphBatch`` (nodes = the session's distinct
items) and ``SBRConfig.global_graph`` (kind "gcegnn": ``neighbors`` [I, S]
item ids and ``weights`` [I, S] edge frequencies, built once from the
training split by ``sbrjax.data.item_graphs.gcegnn_graph``: items within
``gcegnn_window`` clicks of each other, top-S by frequency, resampled with
replacement to S when an item has fewer; weight 0 marks "no neighbour").
Equations (paper section numbers; reference code ``CCIIPLab/GCE-GNN``):

Session-level item representation (3.3, ``LocalAggregator``), one layer over
each session's own graph, with four relations between nodes i and j: self
(i = j), in (j -> i only), out (i -> j only), in-out (both):

  e_ij = LeakyReLU_0.2(a_{r_ij}^T (h_i * h_j)),  alpha_ij = softmax_j e_ij,
  h^s_i = sum_j alpha_ij h_j          (j over i and its session neighbours)

Global-level item representation (3.2, ``GlobalAggregator``), ``gcegnn_hops``
layers; with s the mean of the session's click embeddings and w_ij the edge
weight of neighbour j of item i in the global graph:

  pi_ij = q^T LeakyReLU_0.2(W_1 [s * h_j ; w_ij]),  beta_ij = softmax_j pi_ij
  h^g_i = ReLU(W_2 [h_i ; sum_j beta_ij h_j])      (dropout_gcn on the concat)

For two hops the neighbours of the neighbours are aggregated first, exactly as
the reference's loop does. Items without any neighbour get a zero aggregate.

Combination and readout (3.4-3.5): ``h'_i = dropout_local(h^s_i) +
dropout_global(h^g_i)``; click states in order; the reversed-position soft
attention (``sbrjax.models.readouts.ReversedPositionReadout``) gives S;
``logits = S . e_v`` over the raw item table e.

Backbone interface: ``item_embeddings`` = the raw table e, ``node_states`` =
h', ``seq_states`` = h' of the clicks in order; ``local`` = h' of the last
click (the short-term view, as SR-GNN's s_l); ``global_`` = ``final`` = S
(the whole-session attention readout, which is also what scores items).

Differences from the reference: the session graph of a one-click session has
its self-loop (the reference's adjacency loop never marks it, so that node
attends uniformly over padding); padding neighbours are masked instead of
pointing at a learned padding item; the position table size is
``SBRConfig.pos_max_len`` (200 in the reference).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbrjax.models.backbone import (GlobalGraphParams, SBRConfig, SBROutput, click_mask,
                                    last_click, masked_softmax, require_global_graph)
from sbrjax.models.gnn import uniform_init
from sbrjax.models.readouts import ReversedPositionReadout

RELATIONS = ("self", "in", "out", "inout")


def node_graph_index(n_node: jax.Array, num_nodes: int) -> jax.Array:
  """int32 [N]: the graph (batch row; the last = jraph padding graph) owning each node."""
  return jnp.repeat(jnp.arange(n_node.shape[0]), n_node,
                    total_repeat_length=num_nodes).astype(jnp.int32)


def session_node_table(n_node: jax.Array, max_nodes: int):
  """(node ids int32 [B, M], valid bool [B, M]) of each real graph's nodes, in order.

  ``n_node`` is [B + 1] (the last entry is the padding graph); row b lists the
  batch-global ids of graph b's nodes, padded with a padding node's id.
  """
  counts = n_node[:-1]
  offsets = jnp.cumsum(n_node) - n_node  # [B + 1]
  local = jnp.arange(max_nodes)[None, :]
  valid = local < counts[:, None]
  ids = jnp.where(valid, offsets[:-1, None] + local, jnp.sum(n_node) - 1)
  return ids.astype(jnp.int32), valid


def relation_types(graph, node_ids: jax.Array, valid: jax.Array) -> jax.Array:
  """int32 [B, M, M]: relation of node j to node i (index into ``RELATIONS``), -1 = none.

  Built from the batch's directed edges (SR-GNN construction: one edge per
  distinct transition); every real node relates to itself.
  """
  b, m = node_ids.shape
  n = graph.nodes.shape[0]
  owner = node_graph_index(graph.n_node, n)  # [N]
  offsets = jnp.cumsum(graph.n_node) - graph.n_node
  local = jnp.arange(n) - offsets[owner]  # [N] position within its graph
  real = (graph.edges["w_in"] > 0) & (graph.senders != graph.receivers)
  g = jnp.where(real, owner[graph.senders], b)  # out of range -> dropped
  adj = jnp.zeros((b, m, m), bool).at[
      g, local[graph.senders], local[graph.receivers]].set(True, mode="drop")  # i -> j
  rev = jnp.swapaxes(adj, 1, 2)  # rev[b, i, j]: j -> i
  rel = jnp.where(adj & rev, 3, jnp.where(rev, 1, jnp.where(adj, 2, -1)))
  eye = jnp.eye(m, dtype=bool)[None] & valid[:, :, None]
  return jnp.where(eye, 0, rel).astype(jnp.int32)


class LocalAggregator(nn.Module):
  """Session-level item representation: relation-aware attention over one session."""

  dim: int
  slope: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, rel: jax.Array) -> jax.Array:
    """h [B, M, D] node states, rel [B, M, M] -> h^s [B, M, D]."""
    init = uniform_init(1.0 / self.dim**0.5)
    a = self.param("a", init, (len(RELATIONS), self.dim)).astype(self.dtype)  # a_self..a_inout
    # a_r^T (h_i * h_j) as one batched matmul per session ((h_i * a_r) . h_j): the
    # three-operand einsum made XLA transpose [B, M, D] operands in the backward pass.
    scores = jnp.einsum("brid,bjd->brij", h[:, None] * a[None, :, None, :], h)
    scores = nn.leaky_relu(scores, self.slope)  # [B, R, M, M]
    e = sum(jnp.where(rel == r, scores[:, r], 0.0) for r in range(len(RELATIONS)))
    alpha = masked_softmax(e, rel >= 0)
    return jnp.einsum("bij,bjd->bid", alpha, h)


@jax.custom_vjp
def session_times_neighbours(session: jax.Array, neigh: jax.Array) -> jax.Array:
  """``session[:, None, None, :] * neigh``: session [N, D], neigh [N, M, S, D] -> [N, M, S, D].

  The product autodiff would write, with a hand-written backward pass: the
  session's gradient sums the S neighbour slices one by one instead of one
  reduce over the S axis, which XLA's CPU backend fused into a reduction that
  took about half of GCE-GNN's train step (benchmarks/profile_sbr.py).
  """
  return session[:, None, None, :] * neigh


def _stn_fwd(session, neigh):
  return session[:, None, None, :] * neigh, (session, neigh)


def _stn_bwd(res, g):
  session, neigh = res
  prod = g * neigh  # [N, M, S, D]
  d_session = sum(prod[:, :, k] for k in range(prod.shape[2])).sum(1)
  return d_session.astype(session.dtype), (session[:, None, None, :] * g).astype(neigh.dtype)


session_times_neighbours.defvjp(_stn_fwd, _stn_bwd)


class GlobalAggregator(nn.Module):
  """Global-level aggregation of sampled global-graph neighbours (one hop)."""

  dim: int
  dropout: float
  slope: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, self_vec, neigh, weight, session, *, deterministic: bool):
    """self_vec [N, M, D], neigh [N, M, S, D], weight [N, M, S], session [N, D] -> [N, M, D]."""
    d = self.dim
    init = uniform_init(1.0 / d**0.5)
    w_1 = self.param("w_1", init, (d + 1, d)).astype(self.dtype)
    w_2 = self.param("w_2", init, (d, 1)).astype(self.dtype)
    w_3 = self.param("w_3", init, (2 * d, d)).astype(self.dtype)
    # [s * h_j ; w_ij] @ W_1 without the concatenation: W_1's first d rows take s * h_j,
    # its last row the edge weight.
    x = session_times_neighbours(session, neigh) @ w_1[:d] + weight[..., None] * w_1[d]
    pi = (nn.leaky_relu(x, self.slope) @ w_2)[..., 0]  # [N, M, S]
    has = weight > 0
    beta = masked_softmax(pi, has) * has
    agg = jnp.einsum("nms,nmsd->nmd", beta, neigh)
    out = jnp.concatenate([self_vec, agg], axis=-1)
    out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
    return nn.relu(out @ w_3)


class GCEGNN(nn.Module):
  """GCE-GNN backbone (module docstring)."""

  cfg: SBRConfig

  def setup(self):
    cfg = self.cfg
    require_global_graph(cfg.global_graph, "gcegnn", "GCE-GNN",
                         "the training split's item graph")
    self.item_embedding = nn.Embed(cfg.num_items, cfg.embed_dim, dtype=cfg.dtype,
                                   embedding_init=uniform_init(1.0 / cfg.embed_dim**0.5))
    self.global_graph = GlobalGraphParams(cfg.global_graph)
    self.local_agg = LocalAggregator(cfg.embed_dim, dtype=cfg.dtype)
    self.global_agg = [GlobalAggregator(cfg.embed_dim, cfg.gcegnn_dropout_gcn,
                                        dtype=cfg.dtype, name=f"global_agg_{i}")
                       for i in range(cfg.gcegnn_hops)]
    self.dropout_local = nn.Dropout(cfg.gcegnn_dropout_local)
    self.dropout_global = nn.Dropout(cfg.gcegnn_dropout_global)
    self.readout = ReversedPositionReadout(cfg.embed_dim, cfg.pos_max_len, dtype=cfg.dtype)

  def global_states(self, graph, session: jax.Array, *, deterministic: bool) -> jax.Array:
    """h^g [N, D] of every node; ``session`` [N, D] is its session's mean click embedding."""
    arrays = self.global_graph()
    nb_ids = arrays["neighbors"].astype(jnp.int32)  # [I, S]
    nb_w = arrays["weights"].astype(self.cfg.dtype)
    n, s, hops = graph.nodes.shape[0], nb_ids.shape[1], self.cfg.gcegnn_hops
    ids = [graph.nodes]  # level k: [N, S^k]
    weights = []
    for _ in range(hops):
      weights.append(nb_w[ids[-1]].reshape(n, -1))
      ids.append(nb_ids[ids[-1]].reshape(n, -1))
    # Level k >= 1 reads the rows of level k - 1's items in a per-item table of their
    # neighbours' embeddings [I, S, D]: one gather of S * D-wide rows per item instead
    # of S gathers of D-wide rows (and a scatter of as many rows in the backward pass).
    table = self.item_embedding.embedding.astype(self.cfg.dtype)
    neighbour_table = table[nb_ids]  # [I, S, D]
    vectors = [self.item_embedding(graph.nodes)[:, None, :]]  # [N, 1, D]
    for k in range(1, hops + 1):
      vectors.append(neighbour_table[ids[k - 1]].reshape(n, -1, table.shape[-1]))
    for n_hop in range(hops):
      nxt = []
      for hop in range(hops - n_hop):
        m = vectors[hop].shape[1]
        nxt.append(self.global_agg[n_hop](
            vectors[hop], vectors[hop + 1].reshape(n, m, s, -1),
            weights[hop].reshape(n, m, s), session, deterministic=deterministic))
      vectors = nxt
    return vectors[0][:, 0, :]

  def session_representations(self, batch, *, deterministic: bool = True) -> SBROutput:
    cfg = self.cfg
    graph = batch.graph
    table = self.item_embedding.embedding.astype(cfg.dtype)  # [I, D]
    h = self.item_embedding(graph.nodes)  # [N, D]
    n, l = h.shape[0], batch.positions.shape[1]
    mask = click_mask(batch.lengths, l)  # [B, L]
    clicks = h[batch.positions] * mask[..., None]
    session = jnp.sum(clicks, 1) / jnp.maximum(jnp.sum(mask, 1, keepdims=True), 1)  # [B, D]
    owner = node_graph_index(graph.n_node, n)
    session_of_node = jnp.concatenate([session, jnp.zeros_like(session[:1])])[owner]

    # Session level, per session on dense [M, M] blocks (M = max_len bounds the nodes).
    node_ids, valid = session_node_table(graph.n_node, l)
    rel = relation_types(graph, node_ids, valid)
    h_s = self.local_agg(h[node_ids], rel)  # [B, M, D]
    h_local = jnp.zeros_like(h).at[jnp.where(valid, node_ids, n)].set(h_s, mode="drop")
    h_global = self.global_states(graph, session_of_node, deterministic=deterministic)
    nodes = (self.dropout_local(h_local, deterministic=deterministic) +
             self.dropout_global(h_global, deterministic=deterministic))  # [N, D]

    seq = nodes[batch.positions]  # [B, L, D]
    final = self.readout(seq, mask, batch.lengths)
    return SBROutput(table, nodes, seq, last_click(seq, batch.lengths), final, final)

  def __call__(self, batch, *, deterministic: bool = True) -> SBROutput:
    out = self.session_representations(batch, deterministic=deterministic)
    return out.replace(logits=self.score(out, out.final, batch))

  def score(self, out: SBROutput, final: jax.Array, batch) -> jax.Array:
    """float32 [B, I] scores of session vectors ``final`` against ``out``'s items."""
    del batch
    return jnp.einsum("bd,id->bi", final, out.item_embeddings).astype(jnp.float32)
