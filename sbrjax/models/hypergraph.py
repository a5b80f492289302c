"""S^2-DHCN (Xia et al., AAAI 2021): self-supervised hypergraph convolutional networks.

Two channels over the same item embeddings X^(0) = e (reference code
``xiaxin1998/DHCN``, PyTorch version):

Hypergraph channel. Every training sequence is a hyperedge over its distinct
items (``SBRConfig.s2dhcn_hyperedges``: "sessions" as in the paper's text,
or "examples", every augmented training prefix, as the reference code builds
it). With incidence H [I, E], node degrees D and hyperedge degrees B (W = I),
the operator ``M = D^-1 H B^-1 H^T`` [I, I] is built once from the training
split by ``sbrjax.data.item_graphs.hypergraph_operator`` and reaches the
model as ``SBRConfig.global_graph`` (kind "hypergraph": ``adjacency`` dense
[I, I], or ``rows``/``cols``/``values`` COO for sparse catalogs). Eqs. 2-3:

  X^(l+1) = M X^(l)  (no filter, no non-linearity),  X_h = 1/(L+1) sum_{l=0..L} X^(l)

(the paper averages the layers; the stored reference version sums them: X_h
L+1 times larger, and the readout below sees the scaled rows, so the scores'
scale differs by about (L+1)^2 for the same parameters. ``SBRConfig.
s2dhcn_layer_mix`` = "mean" (paper, default) or "sum" (reference) chooses,
for both channels.) Session embedding theta_h: the reversed-position soft attention of ``sbrjax.models.readouts.ReversedPositionReadout`` over the
clicks' rows of X_h (eqs. 5-6); ``logits = theta_h . X_h``.

Line-graph channel (eqs. 7-8). The batch's sessions are the nodes; two
sessions are linked with weight |S_i n S_j| / |S_i u S_j| (their item sets),
plus self-loops: A_hat = A + I, D_hat its degrees. Theta^(0) = mean click
embedding e; ``Theta^(l+1) = D_hat^-1 A_hat Theta^(l)``; theta_l = the mean
over l = 0..L (the reference sums; ``s2dhcn_layer_mix`` chooses for both channels).

Self-supervised loss (eqs. 9-10, reference ``SSL``): with f_D(x, y) = x . y
and theta~_h the corrupted theta_h (rows shuffled over the real sessions,
then columns shuffled),

  L_S = sum_b [-log(1e-8 + sigmoid(f_D(theta_h, theta_l))) -
               log(1e-8 + 1 - sigmoid(f_D(theta~_h, theta_l)))]

summed over the batch's real sessions as in the reference (while the
cross-entropy is a batch mean: beta's weight grows with the batch size, so a
beta tuned at batch B0 corresponds to beta * B0 / B at batch B), and the model
reports ``aux_losses = {"s2dhcn_ssl": beta * L_S}`` when training with beta > 0
(``deterministic=False``; the shuffles draw from the "dropout" RNG stream).

Per-session vs per-batch: logits, ``final``, ``local``, ``global_`` and the
click states depend only on the session itself (and the fixed hypergraph),
so a session scores the same in any batch; the line-graph channel and L_S
depend on which sessions share the batch (the paper's design), which is why
they exist only as the training-time auxiliary loss. The line graph needs
the batch's [B, I] item incidence (O(B x I) memory).

Backbone interface: ``item_embeddings`` = X_h (the scoring table);
``node_states`` = X_h rows of the session-graph nodes; ``seq_states`` = X_h of
the clicks in order; ``local`` = X_h of the last click (short-term view);
``global_`` = ``final`` = theta_h. There is no dropout in the reference
model, so ``SBRConfig.dropout`` does not apply.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbrjax.models.backbone import (GlobalGraphParams, SBRConfig, SBROutput, click_mask,
                                    last_click, require_global_graph)
from sbrjax.models.gcegnn import node_graph_index
from sbrjax.models.gnn import uniform_init
from sbrjax.models.readouts import ReversedPositionReadout


LAYER_MIXES = ("mean", "sum")


def check_layer_mix(mix: str) -> None:
  if mix not in LAYER_MIXES:
    raise ValueError(f"config.sbr.s2dhcn_layer_mix={mix!r} is not supported; choose one of "
                     f"{', '.join(LAYER_MIXES)} (mean: the paper, sum: the reference code).")


def _mix(total: jax.Array, layers: int, mix: str) -> jax.Array:
  """The layers' outputs combined: their sum, or its mean over the L + 1 terms."""
  check_layer_mix(mix)
  return total if mix == "sum" else total / (layers + 1)


def hypergraph_convolution(table: jax.Array, arrays, layers: int,
                           mix: str = "mean") -> jax.Array:
  """X_h = mean (or sum) over l = 0..L of M^l X for the operator M given dense or as COO."""
  if "adjacency" in arrays:
    apply = lambda x: arrays["adjacency"].astype(x.dtype) @ x
  else:
    rows = arrays["rows"].astype(jnp.int32)
    cols = arrays["cols"].astype(jnp.int32)
    vals = arrays["values"]

    def apply(x):
      return jax.ops.segment_sum(vals[:, None].astype(x.dtype) * x[cols], rows,
                                 num_segments=x.shape[0])
  x, total = table, table
  for _ in range(layers):
    x = apply(x)
    total = total + x
  return _mix(total, layers, mix)


def session_item_incidence(graph, num_sessions: int, num_items: int) -> jax.Array:
  """float [B, I]: 1 where the item is among session b's nodes (its distinct items)."""
  owner = node_graph_index(graph.n_node, graph.nodes.shape[0])  # padding graph -> B, dropped
  return jnp.zeros((num_sessions, num_items)).at[owner, graph.nodes].set(1.0, mode="drop")


def line_graph_convolution(theta0: jax.Array, incidence: jax.Array, real: jax.Array,
                           layers: int, mix: str = "mean") -> jax.Array:
  """theta_l [B, D]: mean (or sum) over l = 0..L of (D_hat^-1 A_hat)^l theta0, real rows."""
  inter = incidence @ incidence.T  # [B, B] |S_i n S_j|
  size = jnp.diag(inter)
  union = size[:, None] + size[None, :] - inter
  pair = real[:, None] & real[None, :]
  a = jnp.where(pair, inter / jnp.maximum(union, 1.0), 0.0)
  a = jnp.where(jnp.eye(a.shape[0], dtype=bool), 1.0, a)  # A + I (Jaccard(i, i) replaced)
  prop = a / jnp.sum(a, axis=1, keepdims=True)
  x, total = theta0, theta0
  for _ in range(layers):
    x = prop @ x
    total = total + x
  return _mix(total, layers, mix)


def corrupt(key: jax.Array, x: jax.Array, real: jax.Array) -> jax.Array:
  """Rows of ``x`` [B, D] permuted among the real rows, then its columns permuted."""
  k_rows, k_cols = jax.random.split(key)
  b = x.shape[0]
  order = jnp.argsort(jnp.where(real, jax.random.uniform(k_rows, (b,)), 2.0))  # real rows first
  slots = jnp.argsort(~real, stable=True)  # the real rows' own positions, then padding
  perm = jnp.zeros(b, jnp.int32).at[slots].set(order.astype(jnp.int32))
  return x[perm][:, jax.random.permutation(k_cols, x.shape[1])]


def ssl_loss(theta_h: jax.Array, theta_l: jax.Array, corrupted: jax.Array,
             real: jax.Array) -> jax.Array:
  """Reference ``SSL``: sum over real rows of -log(1e-8 + s(pos)) - log(1e-8 + 1 - s(neg))."""
  pos = jnp.sum(theta_h * theta_l, axis=-1)
  neg = jnp.sum(theta_l * corrupted, axis=-1)
  # log(1e-8 + sigmoid(x)) as logaddexp(log 1e-8, log_sigmoid(x)), and 1 - sigmoid(neg) as
  # sigmoid(-neg): the same values, but the written form is not safe under jit. XLA
  # reassociates 1e-8 + (1 - s) into (1e-8 + 1) - s = 1 - s in float32, which is 0 once
  # sigmoid(neg) rounds to 1 (neg > ~17): L_S = inf, and NaN gradients even at beta = 0.
  log_eps = jnp.log(jnp.asarray(1e-8, pos.dtype))
  per_row = -(jnp.logaddexp(log_eps, jax.nn.log_sigmoid(pos)) +
              jnp.logaddexp(log_eps, jax.nn.log_sigmoid(-neg)))
  return jnp.sum(jnp.where(real, per_row, 0.0))


class S2DHCN(nn.Module):
  """S^2-DHCN backbone (module docstring)."""

  cfg: SBRConfig

  def setup(self):
    cfg = self.cfg
    require_global_graph(cfg.global_graph, "hypergraph", "S2-DHCN",
                         "the training split's hypergraph operator")
    check_layer_mix(cfg.s2dhcn_layer_mix)
    self.item_embedding = nn.Embed(cfg.num_items, cfg.embed_dim, dtype=cfg.dtype,
                                   embedding_init=uniform_init(1.0 / cfg.embed_dim**0.5))
    self.global_graph = GlobalGraphParams(cfg.global_graph)
    self.readout = ReversedPositionReadout(cfg.embed_dim, cfg.pos_max_len, dtype=cfg.dtype)

  def item_table(self) -> jax.Array:
    """X_h [I, D], the hypergraph-convolved item embeddings."""
    table = self.item_embedding.embedding.astype(self.cfg.dtype)
    return hypergraph_convolution(table, self.global_graph(), self.cfg.s2dhcn_layers,
                                  self.cfg.s2dhcn_layer_mix)

  def session_representations(self, batch, *, deterministic: bool = True) -> SBROutput:
    cfg = self.cfg
    graph = batch.graph
    x_h = self.item_table()
    l = batch.positions.shape[1]
    mask = click_mask(batch.lengths, l)
    click_items = graph.nodes[batch.positions]  # [B, L]
    seq = x_h[click_items] * mask[..., None]
    theta_h = self.readout(seq, mask, batch.lengths)
    aux: Optional[dict] = None
    if not deterministic and cfg.s2dhcn_beta > 0:  # beta = 0: plain cross-entropy
      aux = {"s2dhcn_ssl": cfg.s2dhcn_beta * self.self_supervised_loss(batch, theta_h,
                                                                       self.make_rng("dropout"))}
    return SBROutput(x_h, x_h[graph.nodes], seq, last_click(seq, batch.lengths), theta_h,
                     theta_h, aux_losses=aux)

  def line_graph_embeddings(self, batch) -> jax.Array:
    """theta_l [B, D] of the batch's sessions (depends on the whole batch)."""
    b, l = batch.positions.shape
    mask = click_mask(batch.lengths, l)
    emb = self.item_embedding(batch.graph.nodes[batch.positions]) * mask[..., None]
    theta0 = jnp.sum(emb, 1) / jnp.maximum(jnp.sum(mask, 1, keepdims=True), 1)
    incidence = session_item_incidence(batch.graph, b, self.cfg.num_items)
    return line_graph_convolution(theta0, incidence, batch.lengths > 0, self.cfg.s2dhcn_layers,
                                  self.cfg.s2dhcn_layer_mix)

  def self_supervised_loss(self, batch, theta_h: jax.Array, key: jax.Array) -> jax.Array:
    """L_S of the batch (unweighted), corruption drawn from ``key``."""
    real = batch.lengths > 0
    theta_l = self.line_graph_embeddings(batch)
    return ssl_loss(theta_h, theta_l, corrupt(key, theta_h, real), real)

  def __call__(self, batch, *, deterministic: bool = True) -> SBROutput:
    out = self.session_representations(batch, deterministic=deterministic)
    return out.replace(logits=self.score(out, out.final, batch))

  def score(self, out: SBROutput, final: jax.Array, batch) -> jax.Array:
    """float32 [B, I] scores of session vectors ``final`` against ``out``'s items."""
    del batch
    return jnp.einsum("bd,id->bi", final, out.item_embeddings).astype(jnp.float32)
