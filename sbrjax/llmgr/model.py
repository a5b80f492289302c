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
``llm/.../lora`` (``sbrjax.train.labels`` names them). :func:`assemble_params`
joins an imported LLM, a trained backbone and fresh LoRA / f_in / f_out into
that tree; the trainer and the memory report (under ``jax.eval_shape``) both
build it with that one function.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbrjax.llmgr.examples import PromptBatch
from sbrjax.models import llama as llama_lib
from sbrjax.models import lora as lora_lib
from sbrjax.models import sbr as sbr_lib


@dataclasses.dataclass(frozen=True)
class LLMGRConfig:
  sbr: Any                       # sbr_lib.SBRConfig
  llm: llama_lib.LlamaConfig
  num_items: int
  head_hidden: int = 0           # f_out hidden width; 0 -> a single linear layer
  head_dropout: float = 0.0


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


def assemble_params(cfg: LLMGRConfig, llm_base: Any, sbr_params: Any, seed: int) -> Any:
  """The LLMGR parameter tree ``{sbr, llm, f_in, f_out}``.

  Args:
    cfg: the model config (its ``llm.lora`` says which adapters to add).
    llm_base: the LLaMA's base parameters (an untied ``lm_head`` is dropped:
      LLMGR scores items with f_out, never tokens).
    sbr_params: the backbone's parameters (the tree under ``sbr``).
    seed: seeds the fresh adapters (``a``; ``b`` is zero), f_in and f_out.

  Works on arrays and, under ``jax.eval_shape``, on ShapeDtypeStructs.
  """
  llm = {k: v for k, v in llm_base.items() if k != "lm_head"}
  if cfg.llm.lora is not None:
    llm = lora_lib.add_lora(llm, cfg.llm.lora, jax.random.PRNGKey(seed + 3))
  d_sbr, d_llm = cfg.sbr.embed_dim, cfg.llm.hidden_size
  f_in = nn.Dense(d_llm, dtype=jnp.float32).init(
      jax.random.PRNGKey(seed + 4), jnp.zeros((1, d_sbr)))["params"]
  f_out = ItemHead(cfg.num_items, cfg.head_hidden).init(
      jax.random.PRNGKey(seed + 5), jnp.zeros((1, d_llm)))["params"]
  return {"sbr": sbr_params, "llm": llm, "f_in": f_in, "f_out": f_out}
