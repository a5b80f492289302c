"""LLMGR (Guo et al.): an SBR backbone's vectors spliced into LLaMA prompts.

Hybrid encoding: a prompt's text tokens go through the LLM's embedding
table; its placeholder positions receive ``f_in`` (a linear map from the SBR
dimension to the LLM dimension) of SBR vectors of the same session:

  * graph placeholder  <- the backbone's session representation ``final``
    (SR-GNN: ``W3[s_l; s_g]``; GC-SAN: the attention/last-click mix), i.e.
    the vector the backbone itself scores items with;
  * node placeholders  <- the GNN node states of the session's clicks in
    click order (positions -> nodes), i.e. item embeddings after message
    passing in this session's graph, so they carry the session structure;
  * node / candidate placeholders of the contrastive prompt <- the
    backbone's item embedding table rows (candidates are mostly items from
    outside the session, which have no node state; using the table for the
    target node too keeps both in one space).

Output layer: the MLP ``f_out`` maps the LLM's final hidden state at the last
prompt position to logits over all items (paper eq. 6, cross-entropy).

Parameter tree: ``{"sbr", "llm", "f_in", "f_out"}``; LoRA adapters sit under
``llm/.../lora`` (``sbrjax.labels`` names them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbrjax.models import llama as llama_lib
from sbrjax.models import sbr as sbr_lib


@dataclasses.dataclass(frozen=True)
class LLMGRConfig:
  sbr: Any                       # sbr_lib.SBRConfig
  llm: llama_lib.LlamaConfig
  num_items: int
  head_hidden: int = 0           # f_out hidden width; 0 -> a single linear layer
  head_dropout: float = 0.0


class PromptBatch(NamedTuple):
  """One batch of prompts (a pytree of arrays).

  Attributes:
    sessions: ``sbrjax.data.graphs.GraphBatch`` of each prompt's session.
    input_ids: int32 [B, L] prompt tokens (right padded).
    attention_mask: int32 [B, L].
    last_pos: int32 [B] index of the last real token.
    slot_pos: int32 [B, S] placeholder positions (L for unused slots).
    slot_src: int32 [B, S] index into [graph | clicks (max_len) | items (Q)].
    items: int32 [B, Q] items listed in the prompt.
    targets: int32 [B] target item.
    mask: bool [B] real examples.
    negatives: int32 [B, K] or None (evaluation).
  """
  sessions: Any
  input_ids: Any
  attention_mask: Any
  last_pos: Any
  slot_pos: Any
  slot_src: Any
  items: Any
  targets: Any
  mask: Any
  negatives: Any = None


class ItemHead(nn.Module):
  """f_out: hidden state -> logits over all items (float32)."""
  num_items: int
  hidden: int = 0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, deterministic: bool = True, features_only: bool = False):
    x = x.astype(jnp.float32)
    if self.hidden:
      x = nn.gelu(nn.Dense(self.hidden, name="hidden")(x))
      x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    if features_only:  # what the output layer "out" multiplies (catalog-sharded heads)
      return x  # [B, H or D]
    return nn.Dense(self.num_items, name="out")(x)  # [B, num_items]


def source_table(sbr_out, items):
  """[B, 1 + max_len + Q, d_sbr]: graph rep | click node states | listed items."""
  clicks = sbr_out.seq_states  # [B, max_len, d] node state of each click, in order
  listed = sbr_out.item_embeddings[items]  # [B, Q, d]
  return jnp.concatenate([sbr_out.final[:, None, :], clicks, listed], axis=1)


def splice(embeds, vectors, slot_pos):
  """Writes ``vectors`` [B, S, D] into ``embeds`` [B, L, D] at ``slot_pos`` [B, S].

  Slots whose position is L (out of range) are unused and dropped.
  """
  b = embeds.shape[0]
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], slot_pos.shape)
  return embeds.at[rows, slot_pos].set(vectors.astype(embeds.dtype), mode="drop")


class LLMGR(nn.Module):
  """Scores every item for a batch of prompts."""
  config: LLMGRConfig

  def setup(self):
    cfg = self.config
    self.sbr = sbr_lib.create_model(cfg.sbr)
    self.llm = llama_lib.Llama(cfg.llm)
    self.f_in = nn.Dense(cfg.llm.hidden_size, dtype=jnp.float32, name="f_in")
    self.f_out = ItemHead(cfg.num_items, cfg.head_hidden, cfg.head_dropout, name="f_out")

  def hybrid_embeddings(self, batch: PromptBatch, deterministic: bool = True):
    """Input vectors [B, L, D] of the LLM: token embeddings with slots replaced."""
    sbr_out = self.sbr(batch.sessions, deterministic=deterministic)
    table = source_table(sbr_out, batch.items)  # [B, T, d_sbr]
    vectors = jnp.take_along_axis(table, batch.slot_src[..., None], axis=1)  # [B, S, d]
    projected = self.f_in(vectors.astype(jnp.float32))  # [B, S, D]
    embeds = self.llm.embed(batch.input_ids)  # [B, L, D]
    return splice(embeds, projected, batch.slot_pos)

  def __call__(self, batch: PromptBatch, deterministic: bool = True,
               features_only: bool = False):
    """Logits [B, num_items]; or, with ``features_only``, the input of f_out's
    output layer, for heads that split the catalog across devices."""
    embeds = self.hybrid_embeddings(batch, deterministic)
    out = self.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                   return_logits=False, deterministic=deterministic)
    hidden = out.hidden_states  # [B, L, D]
    last = jnp.take_along_axis(hidden, batch.last_pos[:, None, None], axis=1)[:, 0]  # [B, D]
    return self.f_out(last, deterministic=deterministic, features_only=features_only)


def head_table(f_out_params) -> jax.Array:
  """[M, H + 1] rows of f_out's output layer with its bias as the last column."""
  out = f_out_params["out"]
  return jnp.concatenate([out["kernel"].T, out["bias"][:, None]], axis=1).astype(jnp.float32)


def with_bias_column(features: jax.Array) -> jax.Array:
  """[B, H + 1]: features and a column of ones, so features @ head_table.T
  equals f_out's logits exactly (up to summation order)."""
  ones = jnp.ones(features.shape[:-1] + (1,), jnp.float32)
  return jnp.concatenate([features.astype(jnp.float32), ones], axis=-1)
