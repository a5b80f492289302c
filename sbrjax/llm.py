"""Public entry points for sbrjax's LLaMA: load, encode, score and generate.

Example::

  from sbrjax import llm
  model, params, tok = llm.load_llm("SmolLM2-135M-Instruct.Q4_1.gguf",
                                    dtype=jnp.float32)
  hidden, mask = llm.hidden_states(model, params, tok, ["a session of items"])
  print(llm.generate(model, params, tok, ["What is 2+2?"], chat=True))

``load_llm`` accepts an HF ``LlamaForCausalLM`` directory (config.json,
tokenizer files, safetensors), a ``.gguf`` file, or a directory holding one
``.gguf``. Pass ``params_cache`` to keep the converted tree as an Orbax
checkpoint: later calls restore it instead of converting again.
"""

from __future__ import annotations

import functools
import glob
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sbrjax.convert import gguf as gguf_convert
from sbrjax.convert import hf_llama
from sbrjax.convert.hf_llama import restore_params, save_params
from sbrjax.models import generate as generate_lib
from sbrjax.models.llama import Llama
from sbrjax.models.lora import LoraConfig, add_lora

__all__ = ["load_llm", "hidden_states", "logits", "generate", "encode",
           "save_params", "restore_params"]


def _resolve(path: str) -> tuple[str, str]:
  """Returns ``("hf" | "gguf", path)`` for a model location."""
  path = os.fspath(path)
  if os.path.isfile(path):
    if path.endswith(".gguf"):
      return "gguf", path
    raise ValueError(f"{path} is a file but not a .gguf; pass an HF directory "
                     "or a .gguf file.")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"No model at {path}.")
  if os.path.exists(os.path.join(path, "config.json")):
    return "hf", path
  ggufs = sorted(glob.glob(os.path.join(path, "*.gguf")))
  if len(ggufs) == 1:
    return "gguf", ggufs[0]
  raise ValueError(f"{path} holds neither config.json nor exactly one .gguf "
                   f"(found {len(ggufs)}).")


def load_llm(path_or_gguf: str, dtype: Any = jnp.bfloat16,
             compute_dtype: Any = None, lora: Optional[LoraConfig] = None,
             rng: Optional[jax.Array] = None,
             params_cache: Optional[str] = None,
             tokenizer: bool = True) -> tuple[Llama, Any, Any]:
  """Loads a LLaMA model, its parameters and its tokenizer.

  Args:
    path_or_gguf: HF directory, ``.gguf`` file, or directory with one .gguf.
    dtype: storage dtype of the base parameters (bf16 halves memory).
    compute_dtype: matmul dtype (default: ``dtype``). Norms, softmax and
      logits are float32 regardless.
    lora: attach fresh adapters (float32, ``b = 0``) for these targets.
    rng: PRNG key for the adapters' ``a`` matrices.
    params_cache: Orbax checkpoint directory for the converted base tree;
      restored when present, written after conversion otherwise.
    tokenizer: also build the tokenizer (transformers).

  Returns:
    ``(model, params, tokenizer)``; ``params`` is the tree to pass as
    ``model.apply({"params": params}, ...)``; tokenizer is None if not asked.
  """
  kind, path = _resolve(path_or_gguf)
  if kind == "hf":
    config = hf_llama.load_hf_config(path)
  else:
    config = gguf_convert.gguf_config(path)
  config = config.replace(dtype=compute_dtype or dtype, param_dtype=dtype)

  if params_cache and os.path.isdir(params_cache):
    params = restore_params(params_cache)
  else:
    if kind == "hf":
      params = hf_llama.load_hf_params(path, config, dtype=dtype)
    else:
      _, params = gguf_convert.load_gguf(path, dtype=dtype, config=config)
    if params_cache:
      save_params(params_cache, params)

  if lora is not None:
    config = config.replace(lora=lora)
    params = add_lora(params, lora,
                      rng if rng is not None else jax.random.PRNGKey(0))

  tok = None
  if tokenizer:
    if kind == "hf":
      from transformers import AutoTokenizer
      tok = AutoTokenizer.from_pretrained(path)
    else:
      tok = gguf_convert.gguf_tokenizer(path)
    tok.padding_side = "right"
    if tok.pad_token is None:
      tok.pad_token = tok.eos_token
  return Llama(config), params, tok


def encode(tokenizer, texts: Sequence[str], max_length: Optional[int] = None,
           chat: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded ``(input_ids, attention_mask)``, both int32 [B, L].

  With ``chat=True`` each text becomes a user turn in the tokenizer's chat
  template, followed by the generation prompt.
  """
  if isinstance(texts, str):
    texts = [texts]
  if chat:
    if not getattr(tokenizer, "chat_template", None):
      raise ValueError("chat=True but the tokenizer has no chat template.")
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}],
                                           tokenize=False,
                                           add_generation_prompt=True)
             for t in texts]
  tokenizer.padding_side = "right"
  enc = tokenizer(list(texts), padding=True, truncation=max_length is not None,
                  max_length=max_length, return_tensors="np",
                  add_special_tokens=not chat)
  ids = enc["input_ids"].astype(np.int32)
  mask = enc["attention_mask"].astype(np.int32)
  if (mask.sum(-1) == 0).any():
    raise ValueError("An input text encodes to zero tokens.")
  return ids, mask


@functools.partial(jax.jit, static_argnames=("model", "return_logits"))
def _forward(model: Llama, params, ids, mask, return_logits: bool):
  return model.apply({"params": params}, ids, attention_mask=mask,
                     return_logits=return_logits)


def hidden_states(model: Llama, params, tokenizer, texts: Sequence[str],
                  max_length: Optional[int] = None
                  ) -> tuple[jax.Array, jax.Array]:
  """Final-norm hidden states of ``texts``.

  Returns:
    ``(hidden [B, L, D], attention_mask int32 [B, L])``, right-padded.
  """
  ids, mask = encode(tokenizer, texts, max_length)
  out = _forward(model, params, ids, mask, return_logits=False)
  return out.hidden_states, jnp.asarray(mask)


def logits(model: Llama, params, tokenizer, texts: Sequence[str],
           max_length: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
  """Next-token logits of ``texts``: ``(float32 [B, L, V], mask [B, L])``."""
  ids, mask = encode(tokenizer, texts, max_length)
  out = _forward(model, params, ids, mask, return_logits=True)
  return out.logits, jnp.asarray(mask)


def generate(model: Llama, params, tokenizer, prompts: Sequence[str],
             max_new_tokens: int = 32, chat: bool = False,
             temperature: float = 0.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None,
             rng: Optional[jax.Array] = None) -> list[str]:
  """Continues each prompt with KV-cache decoding; returns the new text.

  Decoding stops at the tokenizer's eos token (greedy when temperature is 0).
  """
  ids, mask = encode(tokenizer, prompts, chat=chat)
  eos = tokenizer.eos_token_id
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  out = generate_lib.generate(model, params, ids, mask, max_new_tokens, rng=rng,
                              temperature=temperature, top_k=top_k, top_p=top_p,
                              eos_token_id=eos, pad_token_id=pad)
  texts = []
  for row in np.asarray(out).tolist():
    if eos is not None and eos in row:
      row = row[:row.index(eos)]
    texts.append(tokenizer.decode(row, skip_special_tokens=True))
  return texts
