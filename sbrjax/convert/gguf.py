"""Imports llama.cpp GGUF LLaMA files into the sbrjax Flax tree.

Hyper-parameters come from the ``llama.*`` metadata keys; tensors are
dequantized with ``gguf.quants.dequantize``, renamed to HF names and placed by
the same code as the safetensors importer. llama.cpp's converter permutes the
rows of ``attn_q``/``attn_k`` (interleaved rotary pairs); that permutation is
undone here, so the model keeps HF's rotate-half form.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator, Optional

import gguf
import gguf.quants
import jax.numpy as jnp
import numpy as np

from sbrjax import errors
from sbrjax.convert.hf_llama import hf_name_to_path, import_tensors
from sbrjax.models.llama import LlamaConfig

_QT = gguf.GGMLQuantizationType
# Plain float types plus every block format gguf-py can dequantize.
SUPPORTED_TYPES = frozenset({_QT.F32, _QT.F16, _QT.F64} |
                            set(getattr(gguf.quants, "_type_traits", {})))

_TOP = {"token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}
_BLOCK = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
          "ffn_norm": "post_attention_layernorm"}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")


def gguf_to_hf_name(name: str) -> Optional[str]:
  """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``."""
  if name in _TOP:
    return _TOP[name]
  m = _BLOCK_RE.match(name)
  if m and m.group(2) in _BLOCK:
    return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}.weight"
  return None


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
  """Undoes llama.cpp's ``permute`` of q/k rows ([out, in], HF layout back)."""
  out = w.shape[0]
  return (w.reshape(n_head, out // n_head // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _field(reader: gguf.GGUFReader, key: str, default: Any = None,
           path: str = "") -> Any:
  field = reader.fields.get(key)
  if field is None:
    if default is None:
      raise errors.ModelFileError(f"GGUF file {path} lacks the metadata key {key!r}.")
    return default
  return field.contents()


def open_gguf(path: str) -> gguf.GGUFReader:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.MissingModelFile(f"GGUF file not found: {path}")
  return gguf.GGUFReader(path)


def gguf_config(path: str, reader: Optional[gguf.GGUFReader] = None,
                **overrides) -> LlamaConfig:
  """Reads a :class:`LlamaConfig` from GGUF ``llama.*`` metadata."""
  reader = reader or open_gguf(path)
  arch = _field(reader, "general.architecture", path=path)
  if arch != "llama":
    raise errors.ModelFileError(f"Unsupported GGUF architecture {arch!r} in {path}; "
                     "sbrjax loads 'llama'.")
  scaling = _field(reader, "llama.rope.scaling.type", "none", path)
  if scaling not in ("none", ""):
    raise errors.ModelFileError(f"{path}: llama.rope.scaling.type={scaling!r} is not "
                     "supported.")
  names = {t.name: t for t in reader.tensors}
  if "token_embd.weight" not in names:
    raise errors.ModelFileError(f"GGUF file {path} has no token_embd.weight tensor.")
  hidden = int(_field(reader, "llama.embedding_length", path=path))
  heads = int(_field(reader, "llama.attention.head_count", path=path))
  vocab = int(names["token_embd.weight"].shape[-1])  # ggml order: [D, V]
  kw = dict(
      vocab_size=int(_field(reader, "llama.vocab_size", vocab, path)),
      hidden_size=hidden,
      intermediate_size=int(_field(reader, "llama.feed_forward_length",
                                   path=path)),
      num_layers=int(_field(reader, "llama.block_count", path=path)),
      num_heads=heads,
      num_kv_heads=int(_field(reader, "llama.attention.head_count_kv", heads,
                              path)),
      head_dim=int(_field(reader, "llama.attention.key_length",
                          hidden // heads, path)),
      rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0, path)),
      rms_norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon",
                                1e-5, path)),
      tie_word_embeddings="output.weight" not in names,
      max_position_embeddings=int(_field(reader, "llama.context_length", 4096,
                                         path)),
  )
  kw.update(overrides)
  return LlamaConfig(**kw)


def iter_gguf_tensors(path: str, config: LlamaConfig,
                      reader: Optional[gguf.GGUFReader] = None
                      ) -> Iterator[tuple[str, str, np.ndarray]]:
  """Yields ``(file, HF name, float32 array in HF layout)`` per tensor."""
  reader = reader or open_gguf(path)
  fname = os.path.basename(path)
  for t in reader.tensors:
    hf_name = gguf_to_hf_name(t.name)
    if hf_name is None:
      if t.name == "rope_freqs.weight":
        raise errors.ModelFileError(f"{path}: tensor 'rope_freqs.weight' (rope scaling "
                         "factors) is not supported.")
      raise errors.ModelFileError(f"Unexpected tensor {t.name!r} in {path}.")
    if t.tensor_type not in SUPPORTED_TYPES:
      raise errors.ModelFileError(f"Tensor {t.name!r} in {path} uses quantization type "
                       f"{t.tensor_type.name}, which sbrjax cannot dequantize; "
                       f"supported: {sorted(q.name for q in SUPPORTED_TYPES)}.")
    shape = tuple(int(s) for s in reversed(t.shape))  # numpy order
    array = gguf.quants.dequantize(t.data, t.tensor_type)
    array = np.asarray(array, np.float32).reshape(shape)
    if t.name.endswith("attn_q.weight"):
      array = unpermute_qk(array, config.num_heads)
    elif t.name.endswith("attn_k.weight"):
      array = unpermute_qk(array, config.num_kv_heads)
    yield fname, hf_name, array


def load_gguf(path: str, dtype: Any = jnp.float32,
              config: Optional[LlamaConfig] = None
              ) -> tuple[LlamaConfig, dict]:
  """Imports a GGUF LLaMA file.

  Args:
    path: the ``.gguf`` file.
    dtype: storage dtype of the returned parameters.
    config: target config (default: read from the file's metadata).

  Returns:
    ``(config, params)`` with the base ``params`` tree.
  """
  path = os.fspath(path)
  reader = open_gguf(path)
  if config is None:
    config = gguf_config(path, reader)
  params = import_tensors(iter_gguf_tensors(path, config, reader), config,
                          hf_name_to_path, dtype=dtype, source=path)
  return config, params


# Special tokens named in GGUF metadata (as transformers' GGUF loader names them).
_SPECIAL_TOKEN_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
                      "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}


def gguf_metadata(path: str, full_arrays=("tokenizer.ggml.tokens",
                                          "tokenizer.ggml.merges")) -> dict:
  """GGUF key -> value; string arrays other than ``full_arrays`` become their length.

  The same shape of metadata transformers' own GGUF reader returns, read with
  the ``gguf`` package (transformers' reader needs PyTorch).
  """
  reader = open_gguf(os.fspath(path))
  meta = {}
  for key, field in reader.fields.items():
    if not field.types:
      continue
    is_string_array = (field.types[0] == gguf.GGUFValueType.ARRAY and len(field.types) > 1
                       and field.types[1] == gguf.GGUFValueType.STRING)
    if is_string_array and key not in full_arrays:
      meta[key] = len(field.data)
    else:
      meta[key] = field.contents()
  return meta


def gguf_tokenizer(path: str):
  """An HF fast tokenizer built from the GGUF's ``tokenizer.*`` metadata.

  Equivalent to ``AutoTokenizer.from_pretrained(dir, gguf_file=...)`` (a test
  checks it) but without PyTorch: the metadata is read with the ``gguf``
  package and converted by transformers' torch-free GGUF tokenizer builder.
  """
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  from transformers.integrations.gguf import gguf_tokenizer_mapping as mapping  # pylint: disable=g-import-not-at-top
  meta = gguf_metadata(path)
  if "tokenizer.ggml.tokens" not in meta:
    raise errors.ModelFileError(f"{path}: the GGUF file holds no tokenizer (tokenizer.ggml.tokens).")
  grouped = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items()
                     if f"tokenizer.{key}" in meta}
             for group, renames in mapping.GGUF_TOKENIZER_MAPPING.items()}
  tok_dict, tok_config = grouped["tokenizer"], grouped["tokenizer_config"]
  if tok_dict.get("tokenizer_type") == "llama":
    tok_config.setdefault("add_bos_token", True)  # llama.cpp's rule for sentencepiece
  for name, key in _SPECIAL_TOKEN_IDS.items():
    token_id = meta.get(f"tokenizer.ggml.{key}")
    tok_config[name] = tok_dict["tokens"][token_id] if token_id is not None else None
  backend, extra = mapping.convert_gguf_tokenizer(meta["general.architecture"], tok_dict)
  return PreTrainedTokenizerFast(tokenizer_object=backend, **tok_config, **extra)
