"""The interface every SBR backbone shares: its config, its output, small helpers.

``sbrjax.models.sbr`` (graph backbones and the ``create_model`` registry) and
the modules of other backbone families (``sbrjax.models.sequence``) import
this module; it imports none of them, so backbones in separate modules can be
registered in ``sbr.create_model`` without an import cycle. ``sbr`` re-exports
every name defined here (``sbr.SBRConfig``, ``sbr.SBROutput``, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from sbrjax.models.gnn import uniform_init


@dataclasses.dataclass(frozen=True)
class SBRConfig:
  """Configuration of an SBR backbone (graph or sequence).

  Attributes:
    backbone: one of ``BACKBONES``.
    num_items: catalog size I (item ids in [0, I)).
    embed_dim: width D of item embeddings and node states.
    gnn_steps: gated-GNN propagation steps (shared weights).
    dropout: dropout rate on the input item embeddings of the graph nodes
      (NISER+'s item dropout; 0 reproduces SR-GNN, GC-SAN and TAGNN, whose
      reference code has no embedding dropout) or of the clicks (sequence
      backbones: NARM's embedding dropout).
    hidden_dropout: dropout on the session vector just before the item
      scores (GRU4Rec's hidden-layer dropout, NARM's dropout on [c_g; c_l],
      Caser's dropout on the convolution outputs); unused by the others.
    gcsan_blocks: number of GC-SAN self-attention blocks.
    gcsan_heads: attention heads (must divide ``embed_dim``; the paper uses 1).
    gcsan_ffn_dim: inner width of the point-wise FFN (None: ``embed_dim``).
    gcsan_dropout: dropout on attention probabilities and FFN outputs.
    gcsan_weight: w in ``final = w * attn_last + (1 - w) * last_click``.
    niser_scale: NISER's scale sigma on the cosine logits.
    niser_max_len: number of NISER+ position embeddings; batches must have
      ``max_len <= niser_max_len``.
    tagnn_item_chunk: if > 0, TAGNN computes its target-aware scores over
      item chunks of this size (lax.map) to bound memory at
      O(B * chunk * L) instead of O(B * I * L).
    caser_len: Caser's L, the number of most recent clicks its convolutions
      read (shorter sessions are zero-padded at the old end).
    caser_h_filters: Caser's n_h, horizontal filters per height 1..L.
    caser_v_filters: Caser's n_v, vertical filters.
    stamp_add_mean: STAMP's h_s reads m_a + m_s (the official code and
      RecBole) instead of the paper's m_a.
    dtype: computation dtype (parameters stay float32; logits are float32).
  """

  backbone: str
  num_items: int
  embed_dim: int = 100
  gnn_steps: int = 1
  dropout: float = 0.0
  hidden_dropout: float = 0.0
  gcsan_blocks: int = 1
  gcsan_heads: int = 1
  gcsan_ffn_dim: Optional[int] = None
  gcsan_dropout: float = 0.0
  gcsan_weight: float = 0.6
  niser_scale: float = 12.0
  niser_max_len: int = 50
  tagnn_item_chunk: int = 0
  caser_len: int = 5
  caser_h_filters: int = 16
  caser_v_filters: int = 4
  stamp_add_mean: bool = False
  dtype: Any = jnp.float32


@flax.struct.dataclass
class SBROutput:
  """What a backbone computes for one batch.

  Graph backbones are described here; the sequence backbones
  (``sbrjax.models.sequence``) fill the same fields as their docstrings say.

  Attributes:
    item_embeddings: [I, D] the scoring table (L2-normalised for NISER+);
      ``logits = final . item_embeddings^T`` except where a backbone adds
      a term (TAGNN's target-aware term, GRU4Rec's and Caser's item bias).
    node_states: [N_pad, D] node states after the gated GNN (sequence
      backbones: rows of ``item_embeddings`` of the graph's nodes).
    seq_states: [B, L, D] states of the clicks in order (with NISER+'s
      position embeddings added); rows past ``lengths`` are padding.
    local: [B, D] last-click state s_l as used by the readout.
    global_: [B, D] global preference (SR-GNN/NISER+/TAGNN: attention
      readout s_g; GC-SAN: last self-attention output at the last click).
    final: [B, D] session embedding that scores items (TAGNN: the
      target-independent part s_h; NISER+: unit norm, before the scale).
    logits: [B, I] float32 scores over the catalog (None from
      ``session_representations``).
  """

  item_embeddings: jax.Array
  node_states: jax.Array
  seq_states: jax.Array
  local: jax.Array
  global_: jax.Array
  final: jax.Array
  logits: Optional[jax.Array] = None


def click_mask(lengths: jax.Array, max_len: int) -> jax.Array:
  """bool [B, L]: True for the first ``lengths[b]`` clicks of row b."""
  return jnp.arange(max_len)[None, :] < lengths[:, None]


def last_click(seq_states: jax.Array, lengths: jax.Array) -> jax.Array:
  """[B, D] state at click ``lengths - 1`` (click 0 for empty rows)."""
  last = jnp.maximum(lengths - 1, 0)
  return seq_states[jnp.arange(seq_states.shape[0]), last]


def masked_softmax(logits: jax.Array, mask: jax.Array,
                   axis: int = -1) -> jax.Array:
  """Softmax over ``axis`` ignoring masked entries (uniform if all masked)."""
  fill = jnp.finfo(logits.dtype).min
  return jax.nn.softmax(jnp.where(mask, logits, fill), axis=axis)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along the last axis (torch F.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def dense(features: int, dim: int, dtype, *, use_bias: bool = True,
          name: Optional[str] = None) -> nn.Dense:
  """nn.Dense with U(-1/sqrt(dim), 1/sqrt(dim)) kernel and bias (SR-GNN's init)."""
  init = uniform_init(1.0 / dim**0.5)
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, kernel_init=init,
                  bias_init=init, name=name)
