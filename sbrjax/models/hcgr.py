"""HCGR (Guo et al., 2022): hyperbolic contrastive graph representation for SBR.

Provenance. HCGR's paper describes a session-graph recommender in the
Lorentz model of hyperbolic space with an "adaptive hyperbolic attention"
aggregation and a contrastive loss on geodesic distances between positive and
negative samples. Its full text and code were not available to this
implementation (offline machine, no public code); what follows is built from
that description with the Lorentz building blocks of HGCN (Chami et al. 2019)
that HCGR adopts (``sbrjax.models.hyperbolic``). The exact form of the
attention, the space of the readout and the contrastive loss are this
module's choices, stated here, not checked against the paper.

Model (K = ``hcgr_curvature``; o the origin; all manifold maps as in
``sbrjax.models.hyperbolic``):

  x_v^(0) = exp_o(dropout(e_v))                                  item -> H^{d,K}
  per layer (``hcgr_layers``, HGCN's HypLinear -> HypAgg -> HypAct):
    h_v  = exp_{m_v}(P_{o->m_v}(b)),  m_v = exp_o(W log_o(x_v))  hyperbolic linear
    t_v  = log_o(h_v)
    a_vu = LeakyReLU_0.2(q_r^T [t_v ; t_u]),  w_vu = softmax_u a_vu
           over u in {v} and v's in- and out-neighbours of the SR-GNN session
           graph, relation r in (self, in, out) with its own q_r ("adaptive":
           the weights depend on the states and on the edge direction)
    x_v  = exp_o(ReLU(sum_u w_vu t_u))                           aggregate + activate
  z_t = log_o(x) of the clicks in order, readout in T_o H with SR-GNN's soft
  attention: s_l = z_last, s_g = sum_t alpha_t z_t, s_h = W_3 [s_l; s_g];
  logits_i = s_h . e_i (e_i = log_o(x_i^(0)), the item table).

Contrastive term (training only; ``aux_losses["hcgr_contrastive"]``): the
session point s = exp_o(s_h) against the target item x_target^(0) (positive)
and ``hcgr_cl_negatives`` items drawn uniformly from the catalog per session
(negatives equal to the target are dropped), with geodesic distances:

  L_C = mean_b -log( exp(-d(s, x_t) / tau) / (exp(-d(s, x_t) / tau) +
                     sum_j exp(-d(s, x_j) / tau)) ),   weight lambda = hcgr_cl_weight.

Backbone interface: ``item_embeddings`` = e (tangent vectors at o of the item
points), ``node_states`` = log_o of the last layer's points, ``seq_states``
the clicks' rows; ``local`` = s_l, ``global_`` = s_g, ``final`` = s_h (as
SR-GNN). Every output is per session; only the contrastive term draws
negatives (from the "dropout" RNG stream).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from sbrjax.models import hyperbolic as hyp
from sbrjax.models.backbone import SBRConfig, SBROutput, click_mask, last_click
from sbrjax.models.gnn import uniform_init
from sbrjax.models.readouts import SoftAttentionReadout

HCGR_RELATIONS = ("self", "in", "out")
_MASKED = -1e9  # finite: exp() gives 0 and gradients stay finite


def attention_entries(graph):
  """(receivers, senders, relation, valid) [N + 2E] of every node's attention entries.

  Node v attends to itself (relation 0), to u for each edge u -> v (1, "in")
  and to w for each edge v -> w (2, "out"); padding edges (weight 0) and
  self-loop edges (covered by the self entry) are invalid.
  """
  n = graph.nodes.shape[0]
  nodes = jnp.arange(n, dtype=jnp.int32)
  s, r = graph.senders.astype(jnp.int32), graph.receivers.astype(jnp.int32)
  edge_ok = (graph.edges["w_in"] > 0) & (s != r)
  receivers = jnp.concatenate([nodes, r, s])
  senders = jnp.concatenate([nodes, s, r])
  relation = jnp.concatenate([jnp.zeros(n, jnp.int32), jnp.ones_like(s), jnp.full_like(s, 2)])
  valid = jnp.concatenate([jnp.ones(n, bool), edge_ok, edge_ok])
  return receivers, senders, relation, valid


class HyperbolicAttentionLayer(nn.Module):
  """One HypLinear -> attention aggregation -> HypAct layer on H^{d,K}."""

  dim: int
  curvature: float
  slope: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, entries) -> jax.Array:
    """x [N, d + 1] points -> [N, d + 1] points."""
    k, d = self.curvature, self.dim
    init = uniform_init(1.0 / d**0.5)
    kernel = self.param("kernel", init, (d, d)).astype(self.dtype)
    bias = self.param("bias", init, (d,)).astype(self.dtype)
    q = self.param("q", init, (len(HCGR_RELATIONS), 2 * d)).astype(self.dtype)
    h = hyp.hyperbolic_linear(x, kernel, bias, k)
    t = hyp.logmap0(h, k)  # [N, d]
    receivers, senders, relation, valid = entries
    pair = jnp.concatenate([t[receivers], t[senders]], axis=-1)  # [Q, 2d]
    a = nn.leaky_relu(jnp.sum(pair * q[relation], axis=-1), self.slope)
    a = jnp.where(valid, a, _MASKED)
    w = jraph.segment_softmax(a, receivers, num_segments=t.shape[0])
    w = jnp.where(valid, w, 0.0)  # self entries keep every segment non-empty
    agg = jax.ops.segment_sum(w[:, None] * t[senders], receivers, num_segments=t.shape[0])
    return hyp.expmap0(nn.relu(agg), k)


class HCGR(nn.Module):
  """HCGR backbone (module docstring)."""

  cfg: SBRConfig

  def setup(self):
    cfg = self.cfg
    if cfg.hcgr_curvature <= 0:
      raise ValueError(f"SBRConfig.hcgr_curvature must be > 0 (K of curvature -1/K), got "
                       f"{cfg.hcgr_curvature}")
    self.item_embedding = nn.Embed(cfg.num_items, cfg.embed_dim, dtype=cfg.dtype,
                                   embedding_init=uniform_init(1.0 / cfg.embed_dim**0.5))
    self.embed_dropout = nn.Dropout(cfg.dropout)
    self.layers = [HyperbolicAttentionLayer(cfg.embed_dim, cfg.hcgr_curvature, dtype=cfg.dtype,
                                            name=f"layer_{i}") for i in range(cfg.hcgr_layers)]
    self.readout = SoftAttentionReadout(cfg.embed_dim, dtype=cfg.dtype)

  def session_representations(self, batch, *, deterministic: bool = True) -> SBROutput:
    cfg, k = self.cfg, self.cfg.hcgr_curvature
    table = self.item_embedding.embedding.astype(cfg.dtype)  # [I, D] = log_o of item points
    e = self.embed_dropout(self.item_embedding(batch.graph.nodes), deterministic=deterministic)
    x = hyp.expmap0(e, k)  # [N, D + 1]
    entries = attention_entries(batch.graph)
    for layer in self.layers:
      x = layer(x, entries)
    nodes = hyp.logmap0(x, k)  # [N, D]
    seq = nodes[batch.positions]  # [B, L, D]
    mask = click_mask(batch.lengths, seq.shape[1])
    s_l = last_click(seq, batch.lengths)
    s_g, s_h = self.readout(seq, s_l, mask)
    aux: Optional[dict] = None
    if not deterministic and cfg.hcgr_cl_weight > 0:
      loss = self.contrastive_loss(s_h, table, batch.targets, batch.lengths > 0,
                                   self.make_rng("dropout"))
      aux = {"hcgr_contrastive": cfg.hcgr_cl_weight * loss}
    return SBROutput(table, nodes, seq, s_l, s_g, s_h, aux_losses=aux)

  def contrastive_loss(self, s_h: jax.Array, table: jax.Array, targets: jax.Array,
                       real: jax.Array, key: jax.Array) -> jax.Array:
    """L_C of the module docstring (unweighted), negatives drawn from ``key``."""
    negatives = jax.random.randint(key, (s_h.shape[0], self.cfg.hcgr_cl_negatives), 0,
                                   self.cfg.num_items)
    return geodesic_info_nce(s_h, table, targets, negatives, real, self.cfg.hcgr_curvature,
                             self.cfg.hcgr_cl_temperature)

  def __call__(self, batch, *, deterministic: bool = True) -> SBROutput:
    out = self.session_representations(batch, deterministic=deterministic)
    return out.replace(logits=self.score(out, out.final, batch))

  def score(self, out: SBROutput, final: jax.Array, batch) -> jax.Array:
    """float32 [B, I] scores of session vectors ``final`` against ``out``'s items."""
    del batch
    return jnp.einsum("bd,id->bi", final, out.item_embeddings).astype(jnp.float32)


def geodesic_info_nce(s_h: jax.Array, table: jax.Array, targets: jax.Array,
                      negatives: jax.Array, real: jax.Array, k: float,
                      temperature: float) -> jax.Array:
  """Mean over real rows of the InfoNCE loss with -geodesic distance / tau as logits.

  Args:
    s_h: [B, D] session vectors in T_o H (mapped with exp_o).
    table: [I, D] item vectors in T_o H.
    targets: int [B] positive item per row.
    negatives: int [B, K] negative items (entries equal to the target are ignored).
    real: bool [B] rows that count.
  """
  s = hyp.expmap0(s_h, k)[:, None, :]  # [B, 1, D + 1]
  cand = jnp.concatenate([targets[:, None], negatives], axis=1)  # [B, 1 + K]
  points = hyp.expmap0(table[cand], k)  # [B, 1 + K, D + 1]
  logits = -hyp.distance(s, points, k) / temperature
  keep = jnp.concatenate([jnp.ones_like(targets[:, None], bool),
                          negatives != targets[:, None]], axis=1)
  logits = jnp.where(keep, logits, _MASKED)
  per_row = jax.nn.logsumexp(logits, axis=1) - logits[:, 0]
  per_row = jnp.where(real, per_row, 0.0)
  return jnp.sum(per_row) / jnp.maximum(jnp.sum(real), 1)
