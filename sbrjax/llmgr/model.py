"""LLMGR (Guo et al.): an SBR backbone's vectors spliced into LLaMA prompts.

Hybrid encoding: a prompt's text tokens go through the LLM's embedding
table; its placeholder positions receive ``f_in`` (a linear map from the SBR
dimension to the LLM dimension) of SBR vectors of the same session, gathered
from one per-example source table ``[graph | clicks | listed items]``
(``sbrjax.llmgr.prompts``):

  * graph placeholder  <- the backbone's session representation ``final``
    (SR-GNN: ``W3[s_l; s_g]``; GC-SAN: the attention/last-click mix), the
    vector the backbone itself scores items with;
  * the clicks block (behavior prompt's nodes, contrastive prompt's target
    node) <- ``LLMGRConfig.node_source``: ``table`` = the clicked item's ID
    embedding x_v (the backbone's item table), ``gnn`` = the click's state
    after message passing (``SBROutput.seq_states``; for a backbone without
    a graph, its per-click states), ``mixed`` = ``gnn`` here with the
    contrastive node moved to the items block (the pre-issue-12 encoding);
  * candidate placeholders <- rows of the backbone's item table.

Item head (``LLMGRConfig.head``), reading the LLM's final hidden state at the
last prompt position (``batch.last_pos``: with the paper's frame, the last
token of "Response:"):

  * ``paper``: ``f_out``, an MLP to logits over all items (eq. 6), trained
    with cross-entropy;
  * ``tied`` (beyond the paper): an MLP to the SBR dimension scored against
    the backbone's live item table plus an item bias,
    ``logits = proj(h) @ E^T + b``, so a few prompts per item suffice: every
    item's output row is its (trained) ID embedding;
  * ``residual`` (beyond the paper): on behavior prompts the backbone's own
    scores plus a correction, ``logits = backbone_logits + proj_b(h) @ E^T + b_b``
    with ``proj_b`` and ``b_b`` starting at zero, so the behavior stage starts
    exactly where the backbone is and the LLM learns a correction (a skip
    connection around the LLM); auxiliary prompts get the tied head, with its
    own projection and bias.

``sbrjax.llmgr.head_init`` can start either head from the backbone (a
least-squares map from the LLM state to the backbone's session vector).

Controls (``LLMGRConfig.control``, for measuring what the LLM adds):
``no_decoder`` runs the model with the LLM's decoder blocks removed (the
trainer loads 0 blocks) and pools the mean of the slot positions, since no
block carries them to the last token, so the head reads ``f_in`` of the SBR
vectors through the LLM's final norm only; ``shuffle_slots`` rolls the slot
vectors by one row of the batch, so every prompt carries another session's
vectors (train and evaluation alike).

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

HEADS = ("paper", "tied", "residual")
CONTROLS = ("none", "no_decoder", "shuffle_slots")
NODE_SOURCES = ("table", "gnn", "mixed")


@dataclasses.dataclass(frozen=True)
class LLMGRConfig:
  sbr: Any                       # sbr_lib.SBRConfig
  llm: llama_lib.LlamaConfig
  num_items: int
  head_hidden: int = 0           # f_out hidden width; 0 -> no hidden layer
  head_dropout: float = 0.0
  head: str = "paper"            # one of HEADS
  node_source: str = "table"     # one of NODE_SOURCES
  control: str = "none"          # one of CONTROLS
  # Run a batch's shared prompt prefix (PromptBatch.prefix_ids) once and
  # broadcast its keys/values to every row (the same math up to float rounding;
  # see LLMGR._pooled_shared_prefix). Off here; the configs turn it on.
  shared_prefix: bool = False

  def __post_init__(self):
    for key, value, choices in (("head", self.head, HEADS),
                                ("node_source", self.node_source, NODE_SOURCES),
                                ("control", self.control, CONTROLS)):
      if value not in choices:
        raise ValueError(f"config.llmgr.{key}={value!r} is not supported; choose one of "
                         f"{', '.join(map(repr, choices))}.")


# ---------------------------------------------------------------------------
# What a backbone offers LLMGR.


def backbone_traits(sbr_cfg) -> dict:
  """Whether the backbone reads a session graph and computes per-click states.

  Read from class attributes of the backbone ``sbr_lib.create_model``
  builds, so a new backbone declares them where it is defined:
  ``session_graph`` (False: the behavior prompt hides its graph placeholder,
  paper Section 4.3) and ``click_states`` (False: ``seq_states`` are not
  contextual per-click states, so ``node_source="gnn"`` falls back to the item
  table) and ``dot_scores`` (False: its scores are not ``final . E^T``, e.g.
  an item bias or a scale, so the residual head cannot split the catalog
  across devices). All default to True, what the graph backbones (SR-GNN,
  GC-SAN, GCE-GNN, ...) are.
  """
  cls = type(sbr_lib.create_model(sbr_cfg))
  return {"session_graph": bool(getattr(cls, "session_graph", True)),
          "click_states": bool(getattr(cls, "click_states", True)),
          "dot_scores": bool(getattr(cls, "dot_scores", True))}


# ---------------------------------------------------------------------------
# Heads.


def hidden_layer(x, hidden: int, dropout: float, deterministic: bool):
  """A head's optional hidden layer (GELU, dropout) on float32 ``x``; called
  inside a head's compact ``__call__``, so ``hidden`` is that head's submodule."""
  x = x.astype(jnp.float32)
  if hidden:
    x = nn.gelu(nn.Dense(hidden, name="hidden")(x))
    x = nn.Dropout(dropout)(x, deterministic=deterministic)
  return x


class ItemHead(nn.Module):
  """The paper's f_out: hidden state -> logits over all items (float32)."""
  num_items: int
  hidden: int = 0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, deterministic: bool = True, features_only: bool = False):
    x = hidden_layer(x, self.hidden, self.dropout, deterministic)
    if features_only:  # what the output layer "out" multiplies
      return x  # [B, H or D]
    return nn.Dense(self.num_items, name="out")(x)  # [B, num_items]


class TiedHead(nn.Module):
  """Beyond the paper: hidden state -> SBR space, scored against the item table.

  ``logits = proj(mlp(h)) @ table^T + item_bias``; ``table`` is the
  backbone's scoring table (its live item embeddings), passed per call.
  """
  num_items: int
  sbr_dim: int
  hidden: int = 0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, table, deterministic: bool = True, mode: str = "logits"):
    """``mode``: "logits" [B, M]; "features" (input of ``proj``) [B, H];
    "scoring" (``proj`` output with a ones column [B, d + 1], and the rows
    ``[table | item_bias]`` [M, d + 1]) whose product is the logits."""
    x = hidden_layer(x, self.hidden, self.dropout, deterministic)
    if mode == "features":
      return x
    z = nn.Dense(self.sbr_dim, name="proj")(x)  # [B, d]
    bias = self.param("item_bias", nn.initializers.zeros, (self.num_items,), jnp.float32)
    table = table.astype(jnp.float32)  # [M, d]
    if mode == "scoring":
      return with_bias_column(z), jnp.concatenate([table, bias[:, None]], axis=1)
    return z @ table.T + bias  # [B, M]


class ResidualHead(nn.Module):
  """Beyond the paper: the backbone's own scores plus a learned correction.

  Behavior prompts (``g`` = 1):
  ``logits = backbone_logits + proj_behavior(mlp(h)) @ table^T + bias_behavior``,
  with ``proj_behavior`` and ``bias_behavior`` starting at zero, so before a
  behavior prompt is trained on, they score exactly as the backbone (however
  the auxiliary stage moved the rest of the model). Auxiliary prompts
  (``g`` = 0) get the tied head, ``proj(mlp(h)) @ table^T + item_bias``.
  """
  num_items: int
  sbr_dim: int
  hidden: int = 0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, final, table, backbone_logits, behavior,
               deterministic: bool = True, mode: str = "logits"):
    """``mode``: "logits" [B, M]; "features" (the projections' input) [B, H];
    "scoring" (features ``[g (final + z_b) + (1 - g) z_a | g | 1 - g]``
    [B, d + 2] and rows ``[table | bias_behavior | item_bias]`` [M, d + 2],
    whose product is the logits for a backbone scoring ``final . table^T``)."""
    x = hidden_layer(x, self.hidden, self.dropout, deterministic)
    if mode == "features":
      return x
    z_a = nn.Dense(self.sbr_dim, name="proj")(x)  # [B, d] auxiliary prompts
    z_b = nn.Dense(self.sbr_dim, name="proj_behavior",
                   kernel_init=nn.initializers.zeros)(x)  # [B, d] behavior prompts
    bias_a = self.param("item_bias", nn.initializers.zeros, (self.num_items,), jnp.float32)
    bias_b = self.param("bias_behavior", nn.initializers.zeros, (self.num_items,),
                        jnp.float32)
    gate = behavior.astype(jnp.float32)[:, None]  # [B, 1]
    table = table.astype(jnp.float32)  # [M, d]
    if mode == "scoring":
      feats = gate * (final.astype(jnp.float32) + z_b) + (1 - gate) * z_a
      return (jnp.concatenate([feats, gate, 1 - gate], axis=1),
              jnp.concatenate([table, bias_b[:, None], bias_a[:, None]], axis=1))
    z = gate * z_b + (1 - gate) * z_a
    return (z @ table.T + gate * (backbone_logits.astype(jnp.float32) + bias_b)
            + (1 - gate) * bias_a)  # [B, M]


def head_table(f_out_params) -> jax.Array:
  """[M, H + 1] rows of the paper head's output layer with its bias as the last column."""
  out = f_out_params["out"]
  return jnp.concatenate([out["kernel"].T, out["bias"][:, None]], axis=1).astype(jnp.float32)


def with_bias_column(features: jax.Array) -> jax.Array:
  """[B, H + 1]: features and a column of ones, so features @ rows.T equals
  the head's logits exactly (up to summation order)."""
  ones = jnp.ones(features.shape[:-1] + (1,), jnp.float32)
  return jnp.concatenate([features.astype(jnp.float32), ones], axis=-1)


# ---------------------------------------------------------------------------
# Hybrid encoding.


def click_items(sessions) -> jax.Array:
  """int32 [B, max_len] item id of each click (padding clicks: some valid id)."""
  return sessions.graph.nodes[sessions.positions]


def source_table(sbr_out, sessions, items, node_source: str):
  """[B, 1 + max_len + Q, d_sbr]: graph rep | clicks | listed items."""
  if node_source == "table":
    clicks = sbr_out.item_embeddings[click_items(sessions)]  # [B, max_len, d]
  else:  # "gnn" / "mixed": the state of each click, in order
    clicks = sbr_out.seq_states  # [B, max_len, d]
  listed = sbr_out.item_embeddings[items]  # [B, Q, d]
  return jnp.concatenate([sbr_out.final[:, None, :], clicks.astype(sbr_out.final.dtype),
                          listed], axis=1)


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
    if cfg.head == "tied":
      self.f_out = TiedHead(cfg.num_items, cfg.sbr.embed_dim, cfg.head_hidden,
                            cfg.head_dropout, name="f_out")
    elif cfg.head == "residual":
      self.f_out = ResidualHead(cfg.num_items, cfg.sbr.embed_dim, cfg.head_hidden,
                                cfg.head_dropout, name="f_out")
    else:
      self.f_out = ItemHead(cfg.num_items, cfg.head_hidden, cfg.head_dropout, name="f_out")

  def _slots(self, batch: PromptBatch, deterministic: bool):
    """(sbr_out, f_in of each slot's vector [B, S, D])."""
    sbr_out = self.sbr(batch.sessions, deterministic=deterministic)
    table = source_table(sbr_out, batch.sessions, batch.items,
                         self.config.node_source)  # [B, T, d_sbr]
    vectors = jnp.take_along_axis(table, batch.slot_src[..., None], axis=1)  # [B, S, d]
    if self.config.control == "shuffle_slots":  # another row's session (no fixed point)
      vectors = jnp.roll(vectors, 1, axis=0)
    return sbr_out, self.f_in(vectors.astype(jnp.float32))  # [B, S, D]

  def hybrid_embeddings(self, batch: PromptBatch, deterministic: bool = True):
    """Input vectors [B, L, D] of the LLM: token embeddings with slots replaced."""
    _, projected = self._slots(batch, deterministic)
    return splice(self.llm.embed(batch.input_ids), projected, batch.slot_pos)

  def pooled(self, batch: PromptBatch, deterministic: bool = True):
    """(the head's input [B, D], the backbone's output)."""
    sbr_out, projected = self._slots(batch, deterministic)
    embeds = splice(self.llm.embed(batch.input_ids), projected, batch.slot_pos)
    if (self.config.shared_prefix and batch.prefix_ids is not None
        and self.config.control != "no_decoder"):
      return self._pooled_shared_prefix(batch, embeds, deterministic), sbr_out
    out = self.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                   return_logits=False, deterministic=deterministic)
    hidden = out.hidden_states  # [B, L, D]
    if self.config.control == "no_decoder":
      # No block moves the slots' content to the last token: average the slots.
      l = hidden.shape[1]
      used = (batch.slot_pos < l).astype(jnp.float32)  # [B, S]
      at = jnp.take_along_axis(hidden, jnp.minimum(batch.slot_pos, l - 1)[..., None],
                               axis=1)  # [B, S, D]
      last = jnp.sum(at * used[..., None], 1) / jnp.maximum(used.sum(1, keepdims=True), 1)
    else:
      last = jnp.take_along_axis(hidden, batch.last_pos[:, None, None], axis=1)[:, 0]
    return last, sbr_out  # [B, D]

  def _pooled_shared_prefix(self, batch: PromptBatch, embeds, deterministic: bool = True):
    """The last token's hidden state [B, D], the shared prefix computed once.

    The first P positions (``batch.prefix_ids``) hold the same token embeddings
    in every row and no slot, and causal attention keeps their keys and values
    independent of what follows, so they run as one row whose KV cache is
    broadcast to the batch; the B rows then run only their L - P remaining
    positions against it. Positions, masks and attention are those of the full
    pass (the same values up to float rounding; tested). Under LoRA dropout
    the prefix rows share one dropout draw per batch instead of one per row.
    """
    llm_cfg = self.config.llm
    b, l = embeds.shape[:2]
    p = batch.prefix_ids.shape[1]
    cache = llama_lib.init_cache(llm_cfg, 1, l)
    pre = self.llm(inputs_embeds=self.llm.embed(batch.prefix_ids[:1]),
                   attention_mask=jnp.ones((1, p), jnp.int32), return_logits=False,
                   deterministic=deterministic, cache=cache).cache
    rows = lambda x: jnp.broadcast_to(x, (b,) + x.shape[1:])
    cache = {"k": tuple(map(rows, pre["k"])), "v": tuple(map(rows, pre["v"])),
             "mask": rows(pre["mask"]), "index": pre["index"]}
    out = self.llm(inputs_embeds=embeds[:, p:], attention_mask=batch.attention_mask[:, p:],
                   return_logits=False, deterministic=deterministic, cache=cache)
    hidden = out.hidden_states  # [B, L - P, D]
    # Padded rows (last_pos 0) read their first remaining position, as they read
    # position 0 in the full pass: a finite value the loss masks out.
    at = jnp.maximum(batch.last_pos - p, 0)
    return jnp.take_along_axis(hidden, at[:, None, None], axis=1)[:, 0]

  def __call__(self, batch: PromptBatch, deterministic: bool = True,
               features_only: bool = False):
    """Logits [B, num_items]; or, with ``features_only``, ``(features [B, K + 1],
    rows [M, K + 1])`` whose product is the logits, for heads that split the
    catalog across devices."""
    last, sbr_out = self.pooled(batch, deterministic)
    if self.config.head == "residual":
      if features_only and not getattr(type(self.sbr), "dot_scores", True):
        raise ValueError(
            f"config.llmgr.head='residual' cannot split the catalog across devices for "
            f"backbone {self.config.sbr.backbone!r}, whose scores are not final . E^T; "
            f"run it on one device or use config.llmgr.head='tied'.")
      behavior = (jnp.ones(last.shape[:1], bool) if batch.behavior is None
                  else batch.behavior)
      return self.f_out(last, sbr_out.final, sbr_out.item_embeddings, sbr_out.logits,
                        behavior, deterministic=deterministic,
                        mode="scoring" if features_only else "logits")
    if self.config.head == "tied":
      mode = "scoring" if features_only else "logits"
      return self.f_out(last, sbr_out.item_embeddings, deterministic=deterministic, mode=mode)
    if features_only:
      feats = self.f_out(last, deterministic=deterministic, features_only=True)
      return with_bias_column(feats), head_table(self.f_out.variables["params"])
    return self.f_out(last, deterministic=deterministic)

  def head_fit_inputs(self, batch: PromptBatch):
    """(input of the head's last linear layer [B, H], the backbone's session
    vector ``final`` [B, d_sbr], its scoring table [M, d_sbr]), deterministic."""
    if self.config.head == "residual":
      raise ValueError("config.llmgr.head_init='backbone' does not apply to "
                       "head='residual', which starts at the backbone's scores already; "
                       "use head_init='random'.")
    last, sbr_out = self.pooled(batch, True)
    if self.config.head == "tied":
      feats = self.f_out(last, sbr_out.item_embeddings, mode="features")
    else:
      feats = self.f_out(last, features_only=True)
    return feats, sbr_out.final.astype(jnp.float32), sbr_out.item_embeddings


def assemble_params(cfg: LLMGRConfig, llm_base: Any, sbr_params: Any, seed: int) -> Any:
  """The LLMGR parameter tree ``{sbr, llm, f_in, f_out}``.

  Args:
    cfg: the model config (its ``llm.lora`` says which adapters to add).
    llm_base: the LLaMA's base parameters (an untied ``lm_head`` is dropped:
      LLMGR scores items with f_out, never tokens; blocks beyond
      ``cfg.llm.num_layers`` are dropped, e.g. all of them for the
      ``no_decoder`` control).
    sbr_params: the backbone's parameters (the tree under ``sbr``).
    seed: seeds the fresh adapters (``a``; ``b`` is zero), f_in and f_out.

  Works on arrays and, under ``jax.eval_shape``, on ShapeDtypeStructs.
  """
  kept = {f"layers_{i}" for i in range(cfg.llm.num_layers)}
  llm = {k: v for k, v in llm_base.items()
         if k != "lm_head" and (not k.startswith("layers_") or k in kept)}
  if cfg.llm.lora is not None:
    llm = lora_lib.add_lora(llm, cfg.llm.lora, jax.random.PRNGKey(seed + 3))
  d_sbr, d_llm = cfg.sbr.embed_dim, cfg.llm.hidden_size
  f_in = nn.Dense(d_llm, dtype=jnp.float32).init(
      jax.random.PRNGKey(seed + 4), jnp.zeros((1, d_sbr)))["params"]
  if cfg.head == "tied":
    f_out = TiedHead(cfg.num_items, d_sbr, cfg.head_hidden).init(
        jax.random.PRNGKey(seed + 5), jnp.zeros((1, d_llm)),
        jnp.zeros((cfg.num_items, d_sbr)))["params"]
  elif cfg.head == "residual":
    f_out = ResidualHead(cfg.num_items, d_sbr, cfg.head_hidden).init(
        jax.random.PRNGKey(seed + 5), jnp.zeros((1, d_llm)), jnp.zeros((1, d_sbr)),
        jnp.zeros((cfg.num_items, d_sbr)), jnp.zeros((1, cfg.num_items)),
        jnp.ones((1,), bool))["params"]
  else:
    f_out = ItemHead(cfg.num_items, cfg.head_hidden).init(
        jax.random.PRNGKey(seed + 5), jnp.zeros((1, d_llm)))["params"]
  return {"sbr": sbr_params, "llm": llm, "f_in": f_in, "f_out": f_out}
