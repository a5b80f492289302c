"""A BERT encoder in Flax (inference only) with sentence-transformers pooling.

LLM4SBR embeds intent texts and item titles with a frozen BERT-family text
encoder (the default here is all-MiniLM-L6-v2). The module mirrors Hugging
Face's ``BertModel`` without the pooler: embeddings (word + absolute position
+ token type, then LayerNorm) followed by post-LayerNorm transformer layers.
Dropout is omitted because the encoder is only ever used frozen.

Parameter tree (what ``sbrjax.convert.hf_bert`` produces)::

  embeddings/{word, position, token_type}/embedding
  embeddings/ln/{scale, bias}
  layer_{i}/attention/{query, key, value, out}/{kernel, bias}
  layer_{i}/attention_ln/{scale, bias}
  layer_{i}/mlp/{up, down}/{kernel, bias}
  layer_{i}/mlp_ln/{scale, bias}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

_SUPPORTED_ACTS = ("gelu",)


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Shape and numerics of a BERT encoder.

  Attributes:
    vocab_size: number of word-piece ids.
    hidden_size: width D of every token state.
    num_layers: number of transformer layers.
    num_heads: attention heads; must divide ``hidden_size``.
    intermediate_size: width of the feed-forward hidden layer.
    max_position: number of learned absolute positions.
    type_vocab_size: number of token types (segments).
    layer_norm_eps: epsilon of every LayerNorm.
    hidden_act: feed-forward activation; only "gelu" (the exact erf form
      that HF's "gelu" means) is supported.
    precision: matmul precision ("highest" keeps fp32 results identical on
      accelerators whose default is reduced precision; None = backend
      default).
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  precision: Optional[str] = "highest"

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"hidden_size={self.hidden_size} is not divisible by "
          f"num_heads={self.num_heads}")
    if self.hidden_act not in _SUPPORTED_ACTS:
      raise ValueError(
          f"Unsupported hidden_act {self.hidden_act!r}; choose one of "
          f"{_SUPPORTED_ACTS}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any], **overrides) -> "BertConfig":
    """Builds the config from a Hugging Face ``BertConfig`` dict.

    Args:
      d: the parsed ``config.json`` (or ``transformers.BertConfig.to_dict()``).
      **overrides: fields to set explicitly (e.g. ``precision=None``).

    Raises:
      ValueError: a required key is missing or the checkpoint uses a
        feature this encoder does not implement (relative positions, a
        non-gelu activation).
    """
    required = ("vocab_size", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "intermediate_size")
    missing = [k for k in required if k not in d]
    if missing:
      raise ValueError(f"BERT config lacks keys {missing}")
    pos_type = d.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
      raise ValueError(
          f"position_embedding_type={pos_type!r} is not supported; only "
          "'absolute'")
    kwargs = dict(
        vocab_size=int(d["vocab_size"]),
        hidden_size=int(d["hidden_size"]),
        num_layers=int(d["num_hidden_layers"]),
        num_heads=int(d["num_attention_heads"]),
        intermediate_size=int(d["intermediate_size"]),
        max_position=int(d.get("max_position_embeddings", 512)),
        type_vocab_size=int(d.get("type_vocab_size", 2)),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)),
        hidden_act=str(d.get("hidden_act", "gelu")),
    )
    kwargs.update(overrides)
    return cls(**kwargs)


class _Attention(nn.Module):
  """Bidirectional multi-head self-attention with a key padding mask."""

  config: BertConfig

  @nn.compact
  def __call__(self, x, mask):
    cfg = self.config
    b, l, _ = x.shape
    dense = lambda name: nn.Dense(cfg.hidden_size, precision=cfg.precision,
                                  name=name)
    split = lambda t: t.reshape(b, l, cfg.num_heads, cfg.head_dim)
    q = split(dense("query")(x))  # [B, L, H, Dh]
    k = split(dense("key")(x))
    v = split(dense("value")(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=cfg.precision)
    scores = scores / jnp.sqrt(jnp.asarray(cfg.head_dim, scores.dtype))
    # Padded keys get the most negative finite value, as HF's additive mask
    # does, so a row with no real keys stays finite (uniform) instead of NaN.
    scores = jnp.where(mask[:, None, None, :], scores,
                       jnp.finfo(scores.dtype).min)  # [B, H, L, L]
    probs = jax.nn.softmax(scores, axis=-1)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=cfg.precision)
    return dense("out")(ctx.reshape(b, l, cfg.hidden_size))


class _Embeddings(nn.Module):
  """Word + absolute position + token type embeddings, then LayerNorm."""

  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids):
    cfg = self.config
    l = input_ids.shape[1]
    if l > cfg.max_position:
      raise ValueError(
          f"sequence length {l} exceeds max_position={cfg.max_position}")
    word = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word")(input_ids)
    pos = nn.Embed(cfg.max_position, cfg.hidden_size,
                   name="position")(jnp.arange(l)[None, :])
    typ = nn.Embed(cfg.type_vocab_size, cfg.hidden_size,
                   name="token_type")(token_type_ids)
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps,
                        name="ln")(word + pos + typ)  # [B, L, D]


class _BertLayer(nn.Module):
  """Post-LN layer whose MLP parameters sit under ``mlp/`` and ``mlp_ln``."""

  config: BertConfig

  @nn.compact
  def __call__(self, x, mask):
    cfg = self.config
    ln = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, name=name)
    x = ln("attention_ln")(x + _Attention(cfg, name="attention")(x, mask))
    return ln("mlp_ln")(x + _FeedForward(cfg, name="mlp")(x))


class _FeedForward(nn.Module):
  """Dense -> exact GELU -> Dense."""

  config: BertConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    h = nn.Dense(cfg.intermediate_size, precision=cfg.precision,
                 name="up")(x)  # [B, L, I]
    h = jax.nn.gelu(h, approximate=False)
    return nn.Dense(cfg.hidden_size, precision=cfg.precision, name="down")(h)


class BertEncoder(nn.Module):
  """BERT without the pooler: token ids -> last hidden states.

  Call with ``input_ids`` int [B, L], ``attention_mask`` [B, L] (1/True for
  real tokens) and optional ``token_type_ids`` [B, L] (zeros by default).
  Returns float32 [B, L, D]. Padded positions hold what HF computes there
  (they attend to the real keys); pooling masks them out.
  """

  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids=None):
    cfg = self.config
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    mask = jnp.asarray(attention_mask).astype(bool)  # [B, L]
    x = _Embeddings(cfg, name="embeddings")(input_ids, token_type_ids)
    for i in range(cfg.num_layers):
      x = _BertLayer(cfg, name=f"layer_{i}")(x, mask)
    return x


def mean_pool(hidden: jax.Array, attention_mask: jax.Array,
              normalize: bool = False) -> jax.Array:
  """Sentence-transformers mean pooling over real tokens.

  Args:
    hidden: float [B, L, D] token states.
    attention_mask: [B, L], nonzero for real tokens.
    normalize: L2-normalise each result (torch ``F.normalize`` semantics:
      divide by ``max(norm, 1e-12)``).

  Returns:
    float [B, D]; a row without real tokens pools to zeros.
  """
  m = jnp.asarray(attention_mask).astype(hidden.dtype)[..., None]  # [B, L, 1]
  summed = jnp.sum(hidden * m, axis=1)  # [B, D]
  counts = jnp.maximum(jnp.sum(m, axis=1), 1e-9)  # [B, 1]
  pooled = summed / counts
  if normalize:
    norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
    pooled = pooled / jnp.maximum(norm, 1e-12)
  return pooled


def embed_sentences(config: BertConfig, params, input_ids, attention_mask,
                    normalize: bool = False) -> jax.Array:
  """Encodes a token batch and mean-pools it: float32 [B, D]."""
  hidden = BertEncoder(config).apply({"params": params}, input_ids,
                                     attention_mask)
  return mean_pool(hidden, attention_mask, normalize)
