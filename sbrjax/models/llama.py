"""LLaMA-2 style decoder (Flax linen) that loads HF LlamaForCausalLM weights as is.

The same module is Qwen2 (``Qwen2ForCausalLM``, the family of LLM4SBR's
Qwen-7B): a LLaMA decoder whose q/k/v projections carry biases
(``attention_bias=True``), with its own rotary base, RMSNorm epsilon and a
tied (0.5B/1.5B) or untied (7B) head; sliding-window attention is refused.

Conventions, chosen so imported HF checkpoints need no weight surgery:
  * rotary embeddings in HF's rotate-half form (pairs ``(i, i + d/2)``);
  * the ``1/sqrt(head_dim)`` scale is applied inside attention;
  * RMSNorm, attention scores and softmax are computed in float32;
  * grouped-query attention (``num_kv_heads`` divides ``num_heads``).

Parameter paths (inside ``params``)::

  embed_tokens/embedding                          [V, D]
  layers_{i}/input_layernorm/scale                [D]
  layers_{i}/attn/{q,k,v,o}_proj/kernel           [in, out]
  layers_{i}/attn/{q,k,v}_proj/bias               [out]   (attention_bias only)
  layers_{i}/attn/q_proj/lora/{a,b}               (when LoRA targets q_proj)
  layers_{i}/post_attention_layernorm/scale       [D]
  layers_{i}/mlp/{gate,up,down}_proj/kernel       [in, out]
  norm/scale                                      [D]
  lm_head/kernel                                  [D, V]  (untied only)

The model takes token ids or input embeddings (see :meth:`Llama.embed`), an
optional ``[B, L]`` attention mask (1 = real token, left or right padding) and
an optional KV cache (see :func:`init_cache`) for incremental decoding.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbrjax.models.lora import LoraConfig, LoraDense

Array = jax.Array

_SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
_SUPPORTED_MODEL_TYPES = ("llama", "qwen2")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Shape and numerics of a LLaMA decoder.

  Attributes:
    vocab_size: V.
    hidden_size: D.
    intermediate_size: width of the SwiGLU MLP.
    num_layers: decoder blocks.
    num_heads: query heads H.
    num_kv_heads: key/value heads (GQA); must divide ``num_heads``.
    head_dim: per-head width; ``hidden_size // num_heads`` when None.
    rope_theta: rotary base.
    rms_norm_eps: RMSNorm epsilon.
    tie_word_embeddings: logits use the embedding matrix instead of lm_head.
    max_position_embeddings: longest context the model was trained for.
    dtype: compute dtype of matmuls (norms and softmax stay float32).
    param_dtype: storage dtype of base parameters (adapters: ``lora``'s own).
    lora: adapter config, or None for no adapters.
    remat: rematerialise each decoder layer in the backward pass.
    attention_bias: q/k/v projections have biases (Qwen2; o_proj never).
  """
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_layers: int = 32
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: Optional[int] = None
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 4096
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  lora: Optional[LoraConfig] = None
  remat: bool = False
  attention_bias: bool = False

  def __post_init__(self):
    if self.head_dim is None:
      if self.hidden_size % self.num_heads:
        raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                         f"num_heads {self.num_heads}; set head_dim.")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_kv_heads {self.num_kv_heads} must divide num_heads "
                       f"{self.num_heads}.")
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even for rotary embeddings, got "
                       f"{self.head_dim}.")

  def replace(self, **changes) -> "LlamaConfig":
    return dataclasses.replace(self, **changes)

  # --- presets ---------------------------------------------------------------

  @classmethod
  def llama2_7b(cls, **overrides) -> "LlamaConfig":
    return cls(**{**dict(vocab_size=32000, hidden_size=4096,
                         intermediate_size=11008, num_layers=32, num_heads=32,
                         num_kv_heads=32, rope_theta=10000.0, rms_norm_eps=1e-5,
                         max_position_embeddings=4096), **overrides})

  @classmethod
  def llama2_13b(cls, **overrides) -> "LlamaConfig":
    return cls(**{**dict(vocab_size=32000, hidden_size=5120,
                         intermediate_size=13824, num_layers=40, num_heads=40,
                         num_kv_heads=40, rope_theta=10000.0, rms_norm_eps=1e-5,
                         max_position_embeddings=4096), **overrides})

  @classmethod
  def smollm2_135m(cls, **overrides) -> "LlamaConfig":
    return cls(**{**dict(vocab_size=49152, hidden_size=576,
                         intermediate_size=1536, num_layers=30, num_heads=9,
                         num_kv_heads=3, rope_theta=100000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=True,
                         max_position_embeddings=8192), **overrides})

  @classmethod
  def qwen2_7b(cls, **overrides) -> "LlamaConfig":
    """Qwen2-7B(-Instruct)'s shape (untied head, GQA 28/4, q/k/v biases)."""
    return cls(**{**dict(vocab_size=152064, hidden_size=3584,
                         intermediate_size=18944, num_layers=28, num_heads=28,
                         num_kv_heads=4, rope_theta=1000000.0, rms_norm_eps=1e-6,
                         tie_word_embeddings=False, max_position_embeddings=32768,
                         attention_bias=True), **overrides})

  @classmethod
  def tiny(cls, **overrides) -> "LlamaConfig":
    """A 2-layer GQA model for tests."""
    return cls(**{**dict(vocab_size=128, hidden_size=64, intermediate_size=128,
                         num_layers=2, num_heads=4, num_kv_heads=2,
                         rope_theta=10000.0, rms_norm_eps=1e-6,
                         max_position_embeddings=256), **overrides})

  @classmethod
  def from_hf_config(cls, config, **overrides) -> "LlamaConfig":
    """Builds a config from an HF ``config.json`` (dict, file or directory).

    Raises:
      ValueError: for another architecture or an unsupported option (rope
        scaling, biases, activation other than SiLU).
    """
    source = "config dict"
    if isinstance(config, (str, os.PathLike)):
      path = os.fspath(config)
      if os.path.isdir(path):
        path = os.path.join(path, "config.json")
      if not os.path.exists(path):
        raise FileNotFoundError(f"HF config not found: {path}")
      with open(path) as f:
        config = json.load(f)
      source = path
    config = dict(config)
    archs = config.get("architectures") or []
    model_type = config.get("model_type")
    if model_type not in _SUPPORTED_MODEL_TYPES or (
        archs and not any(a in _SUPPORTED_ARCHITECTURES for a in archs)):
      raise ValueError(f"Unsupported architecture in {source}: model_type="
                       f"{model_type!r}, architectures={archs}; sbrjax loads "
                       f"{_SUPPORTED_ARCHITECTURES} (model_type 'llama' or 'qwen2').")
    qwen2 = model_type == "qwen2"
    if config.get("rope_scaling"):
      raise ValueError(f"{source}: rope_scaling={config['rope_scaling']} is not "
                       "supported (plain rotary embeddings only).")
    # LLaMA's attention_bias also puts a bias on o_proj (unsupported); Qwen2
    # always has q/k/v biases and none on o_proj.
    for flag in (("mlp_bias",) if qwen2 else ("attention_bias", "mlp_bias")):
      if config.get(flag):
        raise ValueError(f"{source}: {flag}=True is not supported.")
    if qwen2 and config.get("use_sliding_window"):
      raise ValueError(f"{source}: use_sliding_window=True is not supported (full "
                       "causal attention only).")
    act = config.get("hidden_act", "silu")
    if act != "silu":
      raise ValueError(f"{source}: hidden_act={act!r} is not supported (silu).")
    rope_theta = config.get("rope_theta")
    if rope_theta is None:  # transformers 5 nests it in rope_parameters.
      rope_theta = (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    rope_type = (config.get("rope_parameters") or {}).get("rope_type", "default")
    if rope_type != "default":
      raise ValueError(f"{source}: rope_type={rope_type!r} is not supported.")
    num_heads = config["num_attention_heads"]
    kw = dict(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=config.get("num_key_value_heads") or num_heads,
        head_dim=config.get("head_dim"),
        rope_theta=float(rope_theta),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        max_position_embeddings=config.get("max_position_embeddings", 4096),
        attention_bias=qwen2,
    )
    kw.update(overrides)
    return cls(**kw)


class LlamaOutput(NamedTuple):
  """What :class:`Llama` returns.

  Attributes:
    hidden_states: [B, L, D] after the final norm (compute dtype).
    logits: [B, L, V] float32, or None when ``return_logits=False``.
    cache: the updated KV cache, or None when no cache was passed.
  """
  hidden_states: Array
  logits: Optional[Array]
  cache: Optional[dict]


# ----------------------------------------------------------------------------
# Rotary embeddings (HF rotate-half form).


def rotary_cos_sin(position_ids: Array, head_dim: int,
                   theta: float) -> tuple[Array, Array]:
  """cos and sin tables for ``position_ids`` [B, L] -> two float32 [B, L, d]."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32)
                              / head_dim))  # [d/2]
  freqs = position_ids.astype(jnp.float32)[..., None] * inv_freq  # [B, L, d/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, L, d]
  return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates ``x`` [B, L, H, d] by position; ``cos``/``sin`` are [B, L, d]."""
  half = x.shape[-1] // 2
  x32 = x.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


# ----------------------------------------------------------------------------
# KV cache.


def init_cache(config: LlamaConfig, batch_size: int, max_length: int,
               dtype: Any = None) -> dict:
  """An empty KV cache of ``max_length`` slots.

  Returns:
    ``{"k": (per layer [B, S, KV, d]), "v": (same), "mask": int32 [B, S]
    (1 = slot holds a real token), "index": int32 scalar (next free slot)}``.
  """
  dtype = dtype or config.dtype
  shape = (batch_size, max_length, config.num_kv_heads, config.head_dim)
  zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
  return {"k": zeros, "v": tuple(jnp.zeros(shape, dtype)
                                 for _ in range(config.num_layers)),
          "mask": jnp.zeros((batch_size, max_length), jnp.int32),
          "index": jnp.zeros((), jnp.int32)}


# ----------------------------------------------------------------------------
# Modules.


class RMSNorm(nn.Module):
  """Root-mean-square norm computed in float32."""
  eps: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.initializers.ones_init(), (x.shape[-1],),
                       self.param_dtype)
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


def _dense(config: LlamaConfig, features: int, name: str,
           use_bias: bool = False) -> LoraDense:
  lora = config.lora if (config.lora and name in config.lora.targets) else None
  return LoraDense(features, lora=lora, dtype=config.dtype,
                   param_dtype=config.param_dtype, use_bias=use_bias, name=name)


class Attention(nn.Module):
  """Causal grouped-query self-attention with rotary embeddings."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, q_slots: Array,
               kv_mask: Array, deterministic: bool = True,
               layer_cache: Optional[tuple[Array, Array]] = None,
               cache_index: Optional[Array] = None):
    """Args:
      x: [B, L, D] normed hidden states.
      cos, sin: [B, L, d] rotary tables for the query positions.
      q_slots: [L] sequence slot of each query (causality is by slot).
      kv_mask: [B, S] 1 where a key slot holds a real token.
      layer_cache: (k, v) each [B, S, KV, d], or None (then S = L).
      cache_index: int32 scalar, first slot this call writes.

    Returns:
      ([B, L, D] output, updated (k, v) or None).
    """
    cfg = self.config
    b, l, _ = x.shape
    h, kvh, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    bias = cfg.attention_bias
    q = _dense(cfg, h * d, "q_proj", bias)(x, deterministic).reshape(b, l, h, d)
    k = _dense(cfg, kvh * d, "k_proj", bias)(x, deterministic).reshape(b, l, kvh, d)
    v = _dense(cfg, kvh * d, "v_proj", bias)(x, deterministic).reshape(b, l, kvh, d)
    q = apply_rotary(q, cos, sin)
    k = apply_rotary(k, cos, sin)

    new_cache = None
    if layer_cache is not None:
      ck, cv = layer_cache
      k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype),
                                       (0, cache_index, 0, 0))  # [B, S, KV, d]
      v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype),
                                       (0, cache_index, 0, 0))
      new_cache = (k, v)
    s = k.shape[1]

    # Group query heads by their shared kv head: [B, L, KV, G, d].
    q = q.reshape(b, l, kvh, h // kvh, d)
    scores = jnp.einsum("blkgd,bskd->bkgls", q, k.astype(q.dtype),
                        preferred_element_type=jnp.float32)
    scores = scores * (1.0 / jnp.sqrt(jnp.float32(d)))  # [B, KV, G, L, S]
    visible = (jnp.arange(s)[None, :] <= q_slots[:, None])[None]  # [1, L, S]
    visible = visible & (kv_mask[:, None, :] > 0)  # [B, L, S]
    scores = jnp.where(visible[:, None, None], scores,
                       jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(cfg.dtype)
    out = jnp.einsum("bkgls,bskd->blkgd", probs, v.astype(cfg.dtype))
    out = out.reshape(b, l, h * d)
    return _dense(cfg, cfg.hidden_size, "o_proj")(out, deterministic), new_cache


class MLP(nn.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    cfg = self.config
    gate = _dense(cfg, cfg.intermediate_size, "gate_proj")(x, deterministic)
    up = _dense(cfg, cfg.intermediate_size, "up_proj")(x, deterministic)
    return _dense(cfg, cfg.hidden_size, "down_proj")(nn.silu(gate) * up,
                                                     deterministic)


class DecoderLayer(nn.Module):
  """Pre-norm attention block then pre-norm MLP block, both residual."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, x, cos, sin, q_slots, kv_mask, deterministic=True,
               layer_cache=None, cache_index=None):
    cfg = self.config
    norm = lambda name: RMSNorm(cfg.rms_norm_eps, dtype=cfg.dtype,
                                param_dtype=cfg.param_dtype, name=name)
    attn_out, new_cache = Attention(cfg, name="attn")(
        norm("input_layernorm")(x), cos, sin, q_slots, kv_mask, deterministic,
        layer_cache, cache_index)
    x = x + attn_out
    x = x + MLP(cfg, name="mlp")(norm("post_attention_layernorm")(x),
                                  deterministic)
    return x, new_cache


class LMHead(nn.Module):
  """Untied output projection ``lm_head/kernel`` [D, V] with float32 logits."""
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.initializers.normal(0.02),
                        (x.shape[-1], self.features), self.param_dtype)
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype),
                   preferred_element_type=jnp.float32)


class Llama(nn.Module):
  """LLaMA decoder returning final hidden states and (optionally) logits."""
  config: LlamaConfig

  def setup(self):
    cfg = self.config
    self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size,
                                 embedding_init=nn.initializers.normal(0.02),
                                 dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    layer_cls = DecoderLayer
    if cfg.remat:
      layer_cls = nn.remat(DecoderLayer, static_argnums=(6,))
    self.layers = [layer_cls(cfg, name=f"layers_{i}")
                   for i in range(cfg.num_layers)]
    self.norm = RMSNorm(cfg.rms_norm_eps, dtype=cfg.dtype,
                        param_dtype=cfg.param_dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = LMHead(cfg.vocab_size, dtype=cfg.dtype,
                            param_dtype=cfg.param_dtype)

  def embed(self, input_ids: Array) -> Array:
    """Token embeddings [B, L, D] of ``input_ids`` [B, L] (compute dtype)."""
    return self.embed_tokens(input_ids)

  def logits_from_hidden(self, hidden: Array) -> Array:
    """float32 logits [B, L, V] from final (normed) hidden states [B, L, D]."""
    if self.config.tie_word_embeddings:
      w = self.embed_tokens.embedding.T  # [D, V]
      return jnp.dot(hidden.astype(self.config.dtype),
                     w.astype(self.config.dtype),
                     preferred_element_type=jnp.float32)
    return self.lm_head(hidden)

  def __call__(self, input_ids: Optional[Array] = None,
               inputs_embeds: Optional[Array] = None,
               attention_mask: Optional[Array] = None,
               position_ids: Optional[Array] = None,
               return_logits: bool = True,
               deterministic: bool = True,
               cache: Optional[dict] = None) -> LlamaOutput:
    """Runs the decoder.

    Args:
      input_ids: int [B, L] token ids (exclusive with ``inputs_embeds``).
      inputs_embeds: [B, L, D] input vectors, e.g. ``embed(ids)`` with some
        rows replaced by projected item vectors.
      attention_mask: [B, L] 1 = real token, 0 = padding (left or right).
      position_ids: int [B, L]; by default the count of real tokens before each
        position (plus the cache's real tokens), so left padding is harmless.
      return_logits: also compute the [B, L, V] float32 logits.
      deterministic: disables LoRA dropout when True.
      cache: KV cache from :func:`init_cache` (or a previous call); the L new
        tokens are written at slots ``cache["index"] + [0, L)``.

    Returns:
      A :class:`LlamaOutput`.
    """
    cfg = self.config
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
    if inputs_embeds is None:
      x = self.embed(input_ids)
    else:
      x = inputs_embeds
      if self.is_initializing():  # create embed_tokens even when unused here
        self.embed(jnp.zeros((1, 1), jnp.int32))
    x = x.astype(cfg.dtype)  # [B, L, D]
    b, l = x.shape[:2]
    if attention_mask is None:
      attention_mask = jnp.ones((b, l), jnp.int32)
    attention_mask = attention_mask.astype(jnp.int32)

    if cache is None:
      kv_mask = attention_mask  # [B, L]
      q_slots = jnp.arange(l)
      index = None
      past_real = jnp.zeros((b,), jnp.int32)
    else:
      index = cache["index"]
      past_real = jnp.sum(cache["mask"], axis=-1)  # [B]
      kv_mask = jax.lax.dynamic_update_slice(cache["mask"], attention_mask,
                                             (0, index))  # [B, S]
      q_slots = index + jnp.arange(l)
    if position_ids is None:
      position_ids = past_real[:, None] + jnp.maximum(
          jnp.cumsum(attention_mask, axis=-1) - 1, 0)  # [B, L]
    cos, sin = rotary_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta)

    new_k, new_v = [], []
    for i, layer in enumerate(self.layers):
      layer_cache = None if cache is None else (cache["k"][i], cache["v"][i])
      x, updated = layer(x, cos, sin, q_slots, kv_mask, deterministic,
                         layer_cache, index)
      if updated is not None:
        new_k.append(updated[0])
        new_v.append(updated[1])
    hidden = self.norm(x)  # [B, L, D]

    new_cache = None
    if cache is not None:
      new_cache = {"k": tuple(new_k), "v": tuple(new_v), "mask": kv_mask,
                   "index": index + l}
    logits = self.logits_from_hidden(hidden) if return_logits else None
    return LlamaOutput(hidden, logits, new_cache)


def param_shapes(config: LlamaConfig) -> Any:
  """``ShapeDtypeStruct`` tree of the parameters, without allocating them."""
  model = Llama(config)
  ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  return jax.eval_shape(lambda i: model.init(jax.random.PRNGKey(0), i,
                                             return_logits=True), ids)["params"]
