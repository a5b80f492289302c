"""Graph session-based recommendation backbones: SR-GNN, GC-SAN, NISER+, TAGNN.

``create_model`` also builds the backbones of other modules: GCE-GNN
(``sbrjax.models.gcegnn``), S^2-DHCN (``sbrjax.models.hypergraph``), HCGR
(``sbrjax.models.hcgr``) and the sequence backbones of ``sbrjax.models.sequence``
(FPMC, Caser, GRU4Rec, NARM, STAMP).

Every backbone reads a ``sbrjax.data.graphs.GraphBatch`` and returns an
``SBROutput``. Shared conventions:

  * Item embeddings are one table ``item_embedding/embedding`` [I, D] used
    both as node input and (transposed) as the scoring matrix, as in SR-GNN.
  * ``seq_states`` [B, L, D] are node states gathered in click order through
    ``batch.positions`` (a repeated item contributes once per click, as in the
    reference ``seq_hidden = hidden[alias_inputs]``); clicks at or beyond
    ``batch.lengths`` are masked everywhere.
  * Soft-attention readout (SR-GNN eq. 6-7):
    ``alpha_i = q^T sigmoid(W1 v_n + W2 v_i + c)``, ``s_g = sum_i alpha_i v_i``,
    ``s_h = W3 [s_l; s_g] + b3`` with ``s_l = v_n`` the last click. The paper
    writes ``[s_l; s_g]``; the reference code concatenates ``[s_g; s_l]``,
    which is the same model up to a permutation of W3's columns.
  * Parameters are initialised U(-1/sqrt(D), 1/sqrt(D)) as the SR-GNN
    reference does for every tensor (used for all four backbones).
  * Padding rows (``lengths == 0``) give finite outputs (masked softmaxes use
    a finite fill value), so masking the loss with ``graph_mask`` is enough.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# The shared interface lives in models.backbone; re-exported here so callers
# keep writing sbr.SBRConfig, sbr.SBROutput, sbr.click_mask, ...
from sbrjax.models.backbone import (SBRConfig, SBROutput, click_mask,  # noqa: F401
                                    l2_normalize, last_click, masked_softmax)
from sbrjax.models.backbone import dense as _dense
from sbrjax.models import sequence
from sbrjax.models.gcegnn import GCEGNN
from sbrjax.models.gnn import GatedGNN, uniform_init
from sbrjax.models.hcgr import HCGR
from sbrjax.models.hypergraph import S2DHCN
from sbrjax.models.readouts import SoftAttentionReadout

BACKBONES = ("srgnn", "gcsan", "niser", "tagnn", "gcegnn", "s2dhcn", "hcgr") + sequence.BACKBONES


GCSAN_BLOCKS = ("paper", "bert")
GCSAN_INITS = ("paper", "normal")
# RecBole's GC-SAN: nn.Linear / nn.Embedding weights N(0, 0.02), biases 0, LayerNorm eps 1e-12.
RECBOLE_INIT_STD = 0.02
RECBOLE_LN_EPS = 1e-12


class SelfAttentionBlock(nn.Module):
  """GC-SAN block.

  ``style="paper"`` (eqs. 6-7): F = Attn(H), E = FFN(F) + F. Heads split D
  into ``heads`` parts of ``D / heads`` each and are concatenated back without
  an output projection (the paper's single-head eq. 6 has none; the FFN mixes
  the heads); Q/K/V have no biases.

  ``style="bert"`` (beyond the paper: RecBole's ``TransformerLayer``, a
  post-LayerNorm BERT layer): Q/K/V with biases, an output projection,
  F = LN(H + Dropout(Attn(H) W_O + b_O)), E = LN(F + Dropout(FFN(F))).

  Attention is left-to-right in both (a click sees itself and earlier
  clicks), as in RecBole's GC-SAN. ``init_std`` > 0 draws every kernel from
  N(0, init_std) with zero biases (RecBole's init); 0 is SR-GNN's uniform.
  """

  dim: int
  heads: int
  ffn_dim: int
  dropout: float
  style: str = "paper"
  init_std: float = 0.0
  dtype: Any = jnp.float32

  def _inits(self):
    """(kernel_init, bias_init): RecBole's N(0, init_std) and 0, or SR-GNN's uniform."""
    if self.init_std:
      return nn.initializers.normal(self.init_std), nn.initializers.zeros
    uniform = uniform_init(1.0 / self.dim**0.5)
    return uniform, uniform

  def _layer(self, features, in_features, name):
    if not self.init_std:
      return _dense(features, in_features, self.dtype, name=name)
    kernel_init, bias_init = self._inits()
    return nn.Dense(features, dtype=self.dtype, kernel_init=kernel_init,
                    bias_init=bias_init, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *,
               deterministic: bool) -> jax.Array:
    b, l, _ = x.shape
    head_dim = self.dim // self.heads
    bert = self.style == "bert"
    kernel_init, bias_init = self._inits()

    def proj(name):
      return nn.DenseGeneral((self.heads, head_dim), use_bias=bert,
                             dtype=self.dtype, kernel_init=kernel_init,
                             bias_init=bias_init, name=name)(x)

    q, k, v = proj("query"), proj("key"), proj("value")  # [B, L, H, K]
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k) / jnp.sqrt(
        jnp.asarray(head_dim, self.dtype))  # [B, H, L, L]
    probs = masked_softmax(logits, mask[:, None, :, :])
    probs = nn.Dropout(self.dropout)(probs, deterministic=deterministic)
    f = jnp.einsum("bhqs,bshk->bqhk", probs, v).reshape(b, l, self.dim)
    if bert:
      f = self._layer(self.dim, self.dim, "output")(f)
      f = nn.Dropout(self.dropout)(f, deterministic=deterministic)
      f = nn.LayerNorm(epsilon=RECBOLE_LN_EPS, dtype=self.dtype, name="attn_norm")(f + x)
    y = nn.relu(self._layer(self.ffn_dim, self.dim, "ffn_in")(f))
    y = self._layer(self.dim, self.ffn_dim, "ffn_out")(y)
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
    if bert:
      return nn.LayerNorm(epsilon=RECBOLE_LN_EPS, dtype=self.dtype, name="ffn_norm")(y + f)
    return y + f


def check_gcsan_options(cfg: SBRConfig) -> None:
  """Clear errors for GC-SAN's named options (``config.sbr.gcsan_*``)."""
  if cfg.gcsan_block not in GCSAN_BLOCKS:
    raise ValueError(f"config.sbr.gcsan_block={cfg.gcsan_block!r} is not supported; choose "
                     f"one of {', '.join(GCSAN_BLOCKS)} (paper = the paper's eqs. 6-7).")
  if cfg.gcsan_init not in GCSAN_INITS:
    raise ValueError(f"config.sbr.gcsan_init={cfg.gcsan_init!r} is not supported; choose "
                     f"one of {', '.join(GCSAN_INITS)} (paper = SR-GNN's uniform init).")


class _GraphEncoder(nn.Module):
  """Item table + gated GNN + click-order gather, shared by the backbones.

  ``init_std`` > 0 draws the item table and the GNN's edge layers from
  N(0, init_std) (RecBole's GC-SAN); 0 keeps SR-GNN's uniform init.
  """

  cfg: SBRConfig
  init_std: float = 0.0

  def setup(self):
    cfg = self.cfg
    table_init = (nn.initializers.normal(self.init_std) if self.init_std else
                  uniform_init(1.0 / cfg.embed_dim**0.5))
    self.item_embedding = nn.Embed(
        cfg.num_items, cfg.embed_dim, dtype=cfg.dtype, embedding_init=table_init)
    self.gnn = GatedGNN(cfg.embed_dim, cfg.gnn_steps, edge_init_std=self.init_std,
                        dtype=cfg.dtype)
    self.embed_dropout = nn.Dropout(cfg.dropout)

  def __call__(self, batch, *, deterministic: bool, normalize: bool = False):
    """Returns (table [I, D], node_states [N, D], seq [B, L, D], mask)."""
    table = self.item_embedding.embedding.astype(self.cfg.dtype)  # [I, D]
    h = self.item_embedding(batch.graph.nodes)  # [N, D]
    h = self.embed_dropout(h, deterministic=deterministic)
    if normalize:
      table, h = l2_normalize(table), l2_normalize(h)
    nodes = self.gnn(batch.graph, h)  # [N, D]
    seq = nodes[batch.positions]  # [B, L, D]
    mask = click_mask(batch.lengths, batch.positions.shape[1])
    return table, nodes, seq, mask


def _scores(final: jax.Array, table: jax.Array) -> jax.Array:
  return jnp.einsum("bd,id->bi", final, table).astype(jnp.float32)


class SRGNN(nn.Module):
  """SR-GNN (Wu et al., AAAI 2019)."""

  cfg: SBRConfig
  # TAGNN's reference code normalises the readout's alpha with a softmax.
  softmax_readout = False

  def setup(self):
    self.encoder = _GraphEncoder(self.cfg)
    self.readout = SoftAttentionReadout(self.cfg.embed_dim, softmax=self.softmax_readout,
                                        dtype=self.cfg.dtype)

  def session_representations(self, batch, *,
                              deterministic: bool = True) -> SBROutput:
    table, nodes, seq, mask = self.encoder(batch, deterministic=deterministic)
    s_l = last_click(seq, batch.lengths)
    s_g, s_h = self.readout(seq, s_l, mask)
    return SBROutput(table, nodes, seq, s_l, s_g, s_h)

  def __call__(self, batch, *, deterministic: bool = True) -> SBROutput:
    out = self.session_representations(batch, deterministic=deterministic)
    return out.replace(logits=self.score(out, out.final, batch))

  def score(self, out: SBROutput, final: jax.Array, batch) -> jax.Array:
    """float32 [B, I] scores of session vectors ``final`` against ``out``'s items."""
    del batch
    return _scores(final, out.item_embeddings)


class GCSAN(nn.Module):
  """GC-SAN (Xu et al., IJCAI 2019): gated GNN + self-attention blocks.

  ``gcsan_block`` / ``gcsan_init`` = "bert" / "normal" (beyond the paper)
  give RecBole 1.2.1's GC-SAN: post-LayerNorm BERT layers and N(0, 0.02)
  weights (item table, the GNN's edge layers, every attention/FFN layer).
  """

  cfg: SBRConfig

  def setup(self):
    cfg = self.cfg
    if cfg.embed_dim % cfg.gcsan_heads:
      raise ValueError(f"SBRConfig.gcsan_heads={cfg.gcsan_heads} must divide "
                       f"embed_dim={cfg.embed_dim}")
    check_gcsan_options(cfg)
    std = RECBOLE_INIT_STD if cfg.gcsan_init == "normal" else 0.0
    self.encoder = _GraphEncoder(cfg, init_std=std)
    self.blocks = [
        SelfAttentionBlock(cfg.embed_dim, cfg.gcsan_heads,
                           cfg.gcsan_ffn_dim or cfg.embed_dim,
                           cfg.gcsan_dropout, style=cfg.gcsan_block,
                           init_std=std, dtype=cfg.dtype)
        for _ in range(cfg.gcsan_blocks)
    ]

  def session_representations(self, batch, *,
                              deterministic: bool = True) -> SBROutput:
    table, nodes, seq, mask = self.encoder(batch, deterministic=deterministic)
    l = seq.shape[1]
    causal = jnp.tril(jnp.ones((l, l), bool))
    attn_mask = causal[None] & mask[:, None, :]  # [B, Lq, Lk]
    x = seq
    for block in self.blocks:
      x = block(x, attn_mask, deterministic=deterministic)
    s_l = last_click(seq, batch.lengths)
    a_t = last_click(x, batch.lengths)
    w = self.cfg.gcsan_weight
    final = w * a_t + (1.0 - w) * s_l
    return SBROutput(table, nodes, seq, s_l, a_t, final)

  def __call__(self, batch, *, deterministic: bool = True) -> SBROutput:
    out = self.session_representations(batch, deterministic=deterministic)
    return out.replace(logits=self.score(out, out.final, batch))

  def score(self, out: SBROutput, final: jax.Array, batch) -> jax.Array:
    """float32 [B, I] scores of session vectors ``final`` against ``out``'s items."""
    del batch
    return _scores(final, out.item_embeddings)


class NISER(nn.Module):
  """NISER+ (Gupta et al., 2019): normalised items and sessions, positions.

  Node inputs are dropout-then-L2-normalised item embeddings; after the GNN,
  click ``j`` (0 = oldest kept click) gets position embedding ``p_j``; the
  SR-GNN readout's ``s_h`` is L2-normalised and
  ``logits = niser_scale * s_h . normalize(v_i)``.
  """

  dot_scores = False  # scaled cosines, not final . E^T (sbrjax.llmgr.model.backbone_traits)

  cfg: SBRConfig

  def setup(self):
    cfg = self.cfg
    self.encoder = _GraphEncoder(cfg)
    self.position_embedding = nn.Embed(
        cfg.niser_max_len, cfg.embed_dim, dtype=cfg.dtype,
        embedding_init=uniform_init(1.0 / cfg.embed_dim**0.5))
    self.readout = SoftAttentionReadout(cfg.embed_dim, dtype=cfg.dtype)

  def session_representations(self, batch, *,
                              deterministic: bool = True) -> SBROutput:
    l = batch.positions.shape[1]
    if l > self.cfg.niser_max_len:
      raise ValueError(
          f"NISER: batch.positions has max_len {l} > SBRConfig.niser_max_len="
          f"{self.cfg.niser_max_len}; raise niser_max_len or build graphs "
          "with a smaller max_len.")
    table, nodes, seq, mask = self.encoder(batch, deterministic=deterministic,
                                           normalize=True)
    seq = seq + self.position_embedding(jnp.arange(l))[None]  # [B, L, D]
    s_l = last_click(seq, batch.lengths)
    s_g, s_h = self.readout(seq, s_l, mask)
    return SBROutput(table, nodes, seq, s_l, s_g, l2_normalize(s_h))

  def __call__(self, batch, *, deterministic: bool = True) -> SBROutput:
    out = self.session_representations(batch, deterministic=deterministic)
    return out.replace(logits=self.score(out, out.final, batch))

  def score(self, out: SBROutput, final: jax.Array, batch) -> jax.Array:
    """Scaled cosines: ``niser_scale * normalize(final) . normalize(v_i)``."""
    del batch
    return self.cfg.niser_scale * _scores(l2_normalize(final), out.item_embeddings)


def target_aware_scores(table: jax.Array, seq_t: jax.Array, seq: jax.Array,
                        mask: jax.Array) -> jax.Array:
  """TAGNN's target term ``s_t,i . v_i`` for every item i, [B, I].

  ``beta[b, i, :] = softmax over valid clicks s of v_i . (W_t v_s)`` and
  ``s_t,i = sum_s beta v_s``; ``s_t,i . v_i = sum_s beta (v_i . v_s)``, so
  only [B, I, L] arrays are formed, never [B, I, D].

  Args:
    table: [I, D] candidate item embeddings v_i.
    seq_t: [B, L, D] ``W_t v_s`` of each click.
    seq: [B, L, D] click states v_s.
    mask: bool [B, L] valid clicks.
  """
  att = jnp.einsum("id,bld->bil", table, seq_t)  # [B, I, L]
  beta = masked_softmax(att, mask[:, None, :])
  dots = jnp.einsum("id,bld->bil", table, seq)  # [B, I, L]
  return jnp.sum(beta * dots, axis=-1)


class TAGNN(SRGNN):
  """TAGNN (Yu et al., SIGIR 2020): target-aware attention per candidate.

  ``logits_i = (s_h + s_t,i) . v_i`` with ``s_h = W3 [s_l; s_g]`` from
  SR-GNN's session representations, the readout's alpha softmax-normalised
  (reference code). Unlike the reference, padded clicks are excluded from
  both softmaxes.
  """

  dot_scores = False  # a target-aware term, not final . E^T (sbrjax.llmgr.model.backbone_traits)

  softmax_readout = True

  def setup(self):
    super().setup()
    self.target = _dense(self.cfg.embed_dim, self.cfg.embed_dim, self.cfg.dtype,
                         use_bias=False)  # W_t

  def score(self, out: SBROutput, final: jax.Array, batch) -> jax.Array:
    """``final . v_i`` plus the target-aware term ``s_t,i . v_i``."""
    return _scores(final, out.item_embeddings) + self.target_scores(out, batch)

  def target_scores(self, out: SBROutput, batch) -> jax.Array:
    """float32 [B, I] target-aware term ``s_t,i . v_i`` of every item.

    It depends on the click states and W_t only, not on the session vector,
    so a model that replaces ``final`` (LLM4SBR's fusion) keeps it as is.
    """
    table, seq = out.item_embeddings, out.seq_states
    mask = click_mask(batch.lengths, seq.shape[1])
    seq_t = self.target(seq)  # [B, L, D]
    chunk = self.cfg.tagnn_item_chunk
    num_items = table.shape[0]
    if chunk <= 0 or chunk >= num_items:
      target = target_aware_scores(table, seq_t, seq, mask)
    else:
      num_chunks = -(-num_items // chunk)
      padded = jnp.pad(table, ((0, num_chunks * chunk - num_items), (0, 0)))
      parts = jax.lax.map(
          lambda t: target_aware_scores(t, seq_t, seq, mask),
          padded.reshape(num_chunks, chunk, -1))  # [C, B, chunk]
      target = jnp.moveaxis(parts, 0, 1).reshape(seq.shape[0], -1)
      target = target[:, :num_items]
    return target.astype(jnp.float32)


_MODELS = {"srgnn": SRGNN, "gcsan": GCSAN, "niser": NISER, "tagnn": TAGNN,
           "gcegnn": GCEGNN, "s2dhcn": S2DHCN, "hcgr": HCGR, **sequence.MODELS}


def create_model(cfg: SBRConfig) -> nn.Module:
  """The backbone named by ``cfg.backbone``.

  Raises:
    ValueError: unknown backbone or invalid sizes.
  """
  name = cfg.backbone
  if name in _MODELS:
    if cfg.num_items < 1 or cfg.embed_dim < 1 or cfg.gnn_steps < 1:
      raise ValueError(
          "SBRConfig needs num_items, embed_dim and gnn_steps >= 1, got "
          f"num_items={cfg.num_items}, embed_dim={cfg.embed_dim}, "
          f"gnn_steps={cfg.gnn_steps}")
    return _MODELS[name](cfg)
  raise ValueError(f"Unsupported backbone: {name!r}; choose one of "
                   f"{', '.join(BACKBONES)}")
