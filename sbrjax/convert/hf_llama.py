"""Imports HF ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` safetensors into the sbrjax tree.

Qwen2 is the LLaMA layout plus ``self_attn.{q,k,v}_proj.bias`` (mapped to
``attn/{q,k,v}_proj/bias``); its ``config.json`` sets ``attention_bias``.

Reads a directory written by ``save_pretrained``: ``config.json`` plus either
``model.safetensors`` or shards listed in ``model.safetensors.index.json``.
Tensors are streamed one at a time (``safe_open`` with the numpy framework, no
torch), cast to the target dtype, Linear weights transposed to ``[in, out]``,
and checked against the shapes the config implies. Nothing is permuted: the
model uses HF's rotate-half rotary form.

Also holds the Orbax round trip for converted trees (:func:`save_params`,
:func:`restore_params`), so later runs skip the conversion.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import safe_open

from sbrjax import errors
from sbrjax.models.llama import LlamaConfig, param_shapes

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# HF tensor name -> (flax path, transpose?). Layer tensors use {i}.
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_MAP = {
    "self_attn.q_proj.weight": ("attn/q_proj/kernel", True),
    "self_attn.k_proj.weight": ("attn/k_proj/kernel", True),
    "self_attn.v_proj.weight": ("attn/v_proj/kernel", True),
    "self_attn.o_proj.weight": ("attn/o_proj/kernel", True),
    "self_attn.q_proj.bias": ("attn/q_proj/bias", False),
    "self_attn.k_proj.bias": ("attn/k_proj/bias", False),
    "self_attn.v_proj.bias": ("attn/v_proj/bias", False),
    "mlp.gate_proj.weight": ("mlp/gate_proj/kernel", True),
    "mlp.up_proj.weight": ("mlp/up_proj/kernel", True),
    "mlp.down_proj.weight": ("mlp/down_proj/kernel", True),
    "input_layernorm.weight": ("input_layernorm/scale", False),
    "post_attention_layernorm.weight": ("post_attention_layernorm/scale", False),
}
_TOP_MAP = {
    "model.embed_tokens.weight": ("embed_tokens/embedding", False),
    "model.norm.weight": ("norm/scale", False),
    "lm_head.weight": ("lm_head/kernel", True),
}
# Buffers some older checkpoints store; they are recomputed, not loaded.
_IGNORED_RE = re.compile(r"rotary_emb\.inv_freq$")


def hf_name_to_path(name: str) -> Optional[tuple[str, bool]]:
  """Maps an HF tensor name to ``(flax path, transpose)``, or None if unknown."""
  if name in _TOP_MAP:
    return _TOP_MAP[name]
  m = _LAYER_RE.match(name)
  if m and m.group(2) in _LAYER_MAP:
    path, transpose = _LAYER_MAP[m.group(2)]
    return f"layers_{m.group(1)}/{path}", transpose
  return None


def flatten_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
  """``{'a/b/c': (shape, dtype)}`` for a (nested dict) tree of arrays/structs."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    key = "/".join(str(getattr(k, "key", k)) for k in path)
    out[key] = (tuple(leaf.shape), leaf.dtype)
  return out


def unflatten(flat: dict[str, Any]) -> dict:
  """Inverse of a ``'/'``-joined flattening into nested dicts."""
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    parts = key.split("/")
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return tree


# ----------------------------------------------------------------------------
# Safetensors reading.


def _read_bf16(path: str, name: str) -> np.ndarray:
  """Reads one BF16 tensor (numpy has no bfloat16, so safe_open cannot)."""
  with open(path, "rb") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_len))
    info = header[name]
    start, end = info["data_offsets"]
    f.seek(8 + header_len + start)
    buf = f.read(end - start)
  return np.frombuffer(buf, dtype=ml_dtypes.bfloat16).reshape(info["shape"])


def list_shards(model_dir: str) -> dict[str, list[str]]:
  """``{file: [tensor names]}`` for a single-file or sharded checkpoint.

  Raises:
    FileNotFoundError: no weights, or a shard listed in the index is missing
      (the message names the shard and the index).
  """
  index_path = os.path.join(model_dir, INDEX_FILE)
  single = os.path.join(model_dir, SINGLE_FILE)
  if os.path.exists(index_path):
    with open(index_path) as f:
      weight_map = json.load(f)["weight_map"]
    shards: dict[str, list[str]] = {}
    for name, fname in weight_map.items():
      shards.setdefault(fname, []).append(name)
    for fname in shards:
      if not os.path.exists(os.path.join(model_dir, fname)):
        raise errors.MissingModelFile(
            f"Shard {fname!r} listed in {index_path} is missing from "
            f"{model_dir} (it holds e.g. {shards[fname][0]!r}).")
    return shards
  if os.path.exists(single):
    with safe_open(single, framework="np") as f:
      return {SINGLE_FILE: list(f.keys())}
  raise errors.MissingModelFile(f"No {SINGLE_FILE} or {INDEX_FILE} in {model_dir}.")


def iter_safetensors(model_dir: str) -> Iterator[tuple[str, str, np.ndarray]]:
  """Yields ``(file, tensor name, numpy array)`` one tensor at a time."""
  for fname, names in list_shards(model_dir).items():
    path = os.path.join(model_dir, fname)
    with safe_open(path, framework="np") as f:
      present = set(f.keys())
      for name in names:
        if name not in present:
          raise KeyError(f"Tensor {name!r} is listed for {path} in the index "
                         "but the file does not hold it.")
        if f.get_slice(name).get_dtype() == "BF16":
          yield fname, name, _read_bf16(path, name)
        else:
          yield fname, name, f.get_tensor(name)


# ----------------------------------------------------------------------------
# Import.


def import_tensors(tensors: Iterator[tuple[str, str, np.ndarray]],
                   config: LlamaConfig, name_to_path: Callable,
                   dtype: Any = jnp.float32, source: str = "") -> dict:
  """Places named foreign tensors into the Flax tree that ``config`` implies.

  Args:
    tensors: ``(file, name, array)`` with arrays already in HF layout.
    config: model config; its LoRA part is ignored (base weights only).
    name_to_path: maps a tensor name to ``(flax path, transpose)`` or None.
    dtype: storage dtype of the returned parameters.
    source: where the tensors come from, for messages.

  Returns:
    The nested ``params`` tree (what ``model.init(...)["params"]`` holds,
    without adapters), as jax arrays of ``dtype``.
  """
  expected = flatten_shapes(param_shapes(config.replace(lora=None)))
  np_dtype = np.dtype(jnp.dtype(dtype))
  flat: dict[str, Any] = {}
  for fname, name, array in tensors:
    if _IGNORED_RE.search(name):
      continue
    mapped = name_to_path(name)
    if mapped is None:
      raise errors.ModelFileError(f"Unexpected tensor {name!r} in {fname} ({source}); "
                       "it is not part of a LLaMA / Qwen2 checkpoint.")
    path, transpose = mapped
    if path == "lm_head/kernel" and config.tie_word_embeddings:
      continue  # tied: the embedding matrix serves as the output projection.
    if path not in expected:
      raise errors.ModelFileError(f"Tensor {name!r} in {fname} ({source}) has no place in "
                       f"a model with {config.num_layers} layers.")
    shape = tuple(array.shape[::-1]) if transpose else tuple(array.shape)
    if shape != expected[path][0]:
      want = expected[path][0][::-1] if transpose else expected[path][0]
      raise errors.ModelFileError(f"Tensor {name!r} in {fname} ({source}) has shape "
                       f"{tuple(array.shape)}, the config implies {tuple(want)}.")
    if path in flat:
      raise errors.ModelFileError(f"Tensor {name!r} appears twice ({fname}, {source}).")
    array = array.T if transpose else array
    flat[path] = jnp.asarray(np.ascontiguousarray(array).astype(np_dtype))
  missing = sorted(set(expected) - set(flat))
  if missing:
    raise errors.ModelFileError(f"Checkpoint {source} lacks {len(missing)} tensors the "
                     f"config needs, e.g. {missing[:5]}.")
  return unflatten(flat)


def load_hf_config(model_dir: str, **overrides) -> LlamaConfig:
  """The :class:`LlamaConfig` of an HF directory (``config.json``)."""
  return LlamaConfig.from_hf_config(model_dir, **overrides)


def load_hf_params(model_dir: str, config: Optional[LlamaConfig] = None,
                   dtype: Any = jnp.float32) -> dict:
  """Imports the weights of an HF LlamaForCausalLM / Qwen2ForCausalLM directory.

  Args:
    model_dir: directory with config.json and safetensors weights.
    config: the target config (default: from ``config.json``).
    dtype: storage dtype (float32 or bfloat16).

  Returns:
    The base ``params`` tree.
  """
  model_dir = os.fspath(model_dir)
  if config is None:
    config = load_hf_config(model_dir)
  return import_tensors(iter_safetensors(model_dir), config, hf_name_to_path,
                        dtype=dtype, source=model_dir)


# ----------------------------------------------------------------------------
# Orbax round trip.


def save_params(path: str, params: Any) -> None:
  """Saves a parameter tree as an Orbax checkpoint at ``path`` (a new dir)."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.fspath(path))
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, params)


def restore_params(path: str) -> Any:
  """Restores a tree written by :func:`save_params` (dtypes preserved)."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise errors.MissingModelFile(f"No Orbax checkpoint at {path}.")
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(path)
