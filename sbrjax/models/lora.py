"""Low-rank adapters (LoRA) written out by hand, in the style of gemma's peft.

A target projection keeps its base kernel at ``<name>/kernel``; its adapter sits
beside it as ``<name>/lora/a`` [in, r] and ``<name>/lora/b`` [r, out]. ``b`` starts
at zero, so a fresh adapter reproduces the base model exactly and a base
checkpoint loads unchanged into the adapted tree (it simply lacks the ``lora``
leaves, which :func:`add_lora` creates).

    y = x @ kernel + (dropout(x) @ a @ b) * alpha / r

Freezing reads :func:`param_label`, a function of the parameter path only, so
``optax.multi_transform`` can train the adapters and leave the base untouched.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PyTree = Any

# Projection names a LoRA config may target (the HF LLaMA names).
VALID_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                 "down_proj")
_SHORT_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
                "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}

LORA_LABEL = "lora"
BASE_LABEL = "llm_base"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Hyper-parameters of the adapters.

  Attributes:
    rank: adapter rank r (> 0).
    alpha: the update is scaled by ``alpha / rank``.
    dropout: dropout rate applied to the adapter input when not deterministic.
    targets: projections that get an adapter; full names (``"q_proj"``) or
      short ones (``"q"``, ``"gate"``), among q, k, v, o, gate, up, down.
    param_dtype: storage dtype of the adapter weights (trainable: float32).
  """
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  targets: tuple[str, ...] = ("q_proj", "v_proj")
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if self.rank <= 0:
      raise ValueError(f"LoraConfig.rank must be > 0, got {self.rank}.")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout}.")
    targets = []
    for t in self.targets:
      full = _SHORT_NAMES.get(t, t)
      if full not in VALID_TARGETS:
        raise ValueError(f"Unknown LoRA target {t!r}; choose among "
                         f"{VALID_TARGETS} (or short names {tuple(_SHORT_NAMES)}).")
      targets.append(full)
    object.__setattr__(self, "targets", tuple(targets))

  @property
  def scaling(self) -> float:
    return self.alpha / self.rank


def _dot_f32(x: Array, w: Array) -> Array:
  """``x [..., in] @ w [in, out]`` accumulated and returned in float32."""
  return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)


@jax.custom_vjp
def _narrow_matmul(x: Array, w: Array) -> Array:
  return _dot_f32(x, w).astype(x.dtype)


def _narrow_matmul_fwd(x, w):
  return _narrow_matmul(x, w), (x, w)


def _narrow_matmul_bwd(res, g):
  x, w = res
  g = g.astype(x.dtype)
  # dx = g @ w.T and dw = x.T @ g, each from narrow operands into a float32 result.
  dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32)
  lead = tuple(range(x.ndim - 1))
  dw = jax.lax.dot_general(x, g, ((lead, lead), ((), ())),
                           preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_narrow_matmul.defvjp(_narrow_matmul_fwd, _narrow_matmul_bwd)


def matmul(x: Array, w: Array, dtype: Any) -> Array:
  """``x @ w`` computed in ``dtype`` (the result has ``dtype``).

  float32: ``jnp.dot``. A narrower dtype (bfloat16): both operands are cast to
  it and the product, and each product of its backward pass, accumulates in
  float32 before the result is cast back. Numerically this is what a bf16 GEMM
  does on an accelerator; it also keeps XLA's CPU backend on its bf16 kernels
  (AMX / AVX512-BF16 where the CPU has them): that backend computes a
  bf16 x bf16 -> bf16 dot, and the mixed float32 x bf16 dots plain autodiff
  writes for the backward pass, by converting both operands to float32 first.
  """
  dtype = jnp.dtype(dtype)
  if dtype == jnp.float32:
    return jnp.dot(x.astype(dtype), w.astype(dtype))
  return _narrow_matmul(x.astype(dtype), w.astype(dtype))


class LoraAdapter(nn.Module):
  """The low-rank update ``dropout(x) @ a @ b * scaling`` (module name ``lora``)."""
  features: int
  config: LoraConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    cfg = self.config
    # Kaiming-uniform for a as in the LoRA reference code, zeros for b.
    a = self.param("a", nn.initializers.he_uniform(), (x.shape[-1], cfg.rank),
                   cfg.param_dtype)
    b = self.param("b", nn.initializers.zeros_init(), (cfg.rank, self.features),
                   cfg.param_dtype)
    if cfg.dropout > 0.0:
      x = nn.Dropout(rate=cfg.dropout)(x, deterministic=deterministic)
    h = jnp.dot(x.astype(self.dtype), a.astype(self.dtype))  # [..., r]
    return jnp.dot(h, b.astype(self.dtype)) * jnp.asarray(cfg.scaling, self.dtype)


class LoraDense(nn.Module):
  """A Dense (bias-free unless ``use_bias``) whose kernel may carry a LoRA adapter.

  Attributes:
    features: output width.
    lora: adapter config, or None for a plain Dense (same parameter path).
    dtype: compute dtype.
    param_dtype: storage dtype of the base kernel (and bias).
    kernel_init: base kernel initialiser.
    use_bias: add a ``bias`` [out] (Qwen2's q/k/v projections have one).
  """
  features: int
  lora: Optional[LoraConfig] = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = nn.initializers.normal(0.02)
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features),
                        self.param_dtype)  # [in, out]
    y = matmul(x, kernel, self.dtype)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    if self.lora is not None:
      y = y + LoraAdapter(self.features, self.lora, dtype=self.dtype,
                          name="lora")(x, deterministic)
    return y


# ----------------------------------------------------------------------------
# Path labels (freezing, adapter-only checkpoints).


def _path_names(path) -> tuple[str, ...]:
  """Key names of a jax key path, a '/'-joined string or a keystr string."""
  if isinstance(path, str):
    if "[" in path:  # jax.tree_util.keystr form: ['layers_0']['attn']...
      return tuple(p.strip("'\"") for p in path.replace("]", "").split("[") if p)
    return tuple(p for p in path.split("/") if p)
  names = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        names.append(str(getattr(k, attr)))
        break
    else:
      names.append(str(k))
  return tuple(names)


def param_label(path) -> str:
  """``"lora"`` for adapter leaves, ``"llm_base"`` for everything else.

  Args:
    path: a jax key path (from ``tree_map_with_path``), a ``keystr`` string or
      a ``/``-joined string.
  """
  return LORA_LABEL if LORA_LABEL in _path_names(path) else BASE_LABEL


def param_labels(params: PyTree) -> PyTree:
  """Tree of :func:`param_label` strings matching ``params`` (for optax)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: param_label(p), params)


# ----------------------------------------------------------------------------
# Tree surgery.


def _is_mapping(x) -> bool:
  return isinstance(x, Mapping)


def add_lora(params: PyTree, config: LoraConfig, rng: Array) -> PyTree:
  """Returns ``params`` with fresh adapters next to every targeted kernel.

  Uses the same initialisers as :class:`LoraAdapter`, so a base checkpoint
  (e.g. from an importer) becomes the tree that a LoRA-enabled model expects
  without initialising (and allocating) the whole model again.

  Args:
    params: a base parameter tree (no ``lora`` leaves).
    config: which projections get adapters, and their rank.
    rng: PRNG key for the ``a`` matrices.
  """
  counter = [0]

  def visit(node, name):
    if not _is_mapping(node):
      return node
    out = {k: visit(v, k) for k, v in node.items()}
    if name in config.targets and "kernel" in node:
      if LORA_LABEL in node:
        raise ValueError(f"{name!r} already has a LoRA adapter.")
      fan_in, fan_out = node["kernel"].shape
      key = jax.random.fold_in(rng, counter[0])
      counter[0] += 1
      out[LORA_LABEL] = {
          "a": nn.initializers.he_uniform()(key, (fan_in, config.rank),
                                            config.param_dtype),
          "b": jnp.zeros((config.rank, fan_out), config.param_dtype),
      }
    return out

  out = visit(params, None)
  if counter[0] == 0:
    raise ValueError(f"No kernel matched the LoRA targets {config.targets}.")
  return out


def merge_lora(params: PyTree, config) -> PyTree:
  """Folds every adapter into its kernel and drops the ``lora`` leaves.

  ``kernel + a @ b * alpha / r`` is computed in float32 and cast back to the
  kernel's dtype.

  Args:
    params: a parameter tree with adapters.
    config: the :class:`LoraConfig` (or any object with a ``.lora`` one, such as
      a ``LlamaConfig``) that gives the scaling.
  """
  if not isinstance(config, LoraConfig):
    config = getattr(config, "lora", None)
  if config is None:
    raise ValueError("merge_lora needs a LoraConfig (got none).")

  def visit(node):
    if not _is_mapping(node):
      return node
    out = {k: visit(v) for k, v in node.items() if k != LORA_LABEL}
    if LORA_LABEL in node:
      kernel = node["kernel"]
      a = jnp.asarray(node[LORA_LABEL]["a"], jnp.float32)
      b = jnp.asarray(node[LORA_LABEL]["b"], jnp.float32)
      delta = jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST) * config.scaling
      out["kernel"] = (jnp.asarray(kernel, jnp.float32) + delta).astype(kernel.dtype)
    return out

  return visit(params)


def strip_lora(params: PyTree) -> PyTree:
  """Returns ``params`` without the adapters (the unmerged base)."""
  if not _is_mapping(params):
    return params
  return {k: strip_lora(v) for k, v in params.items() if k != LORA_LABEL}


def lora_params(params: PyTree) -> dict[str, Array]:
  """Adapter leaves only, as a flat ``{'layers_0/attn/q_proj/lora/a': array}``."""
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if param_label(path) == LORA_LABEL:
      flat["/".join(_path_names(path))] = leaf
  return flat


def save_adapter(path: str, params: PyTree) -> str:
  """Writes the adapter leaves of ``params`` to ``path`` (an ``.npz`` file).

  Returns:
    The path written (``.npz`` appended when missing).
  """
  flat = lora_params(params)
  if not flat:
    raise ValueError("save_adapter: the tree holds no 'lora' leaves.")
  path = os.fspath(path)
  if not path.endswith(".npz"):
    path += ".npz"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **{k: np.asarray(jax.device_get(v)) for k, v in flat.items()})
  return path


def load_adapter(path: str, params: PyTree) -> PyTree:
  """Returns ``params`` with its adapter leaves replaced by those in ``path``.

  Every adapter leaf of ``params`` must be in the file with the same shape,
  and the file may hold no others.
  """
  path = os.fspath(path)
  if not os.path.exists(path) and os.path.exists(path + ".npz"):
    path += ".npz"
  if not os.path.exists(path):
    raise FileNotFoundError(f"LoRA adapter file not found: {path}")
  with np.load(path) as f:
    stored = {k: f[k] for k in f.files}
  expected = lora_params(params)
  missing = sorted(set(expected) - set(stored))
  extra = sorted(set(stored) - set(expected))
  if missing or extra:
    raise ValueError(f"Adapter file {path} does not fit the parameter tree: "
                     f"missing {missing[:5]}, unexpected {extra[:5]}.")

  def replace(p, leaf):
    if param_label(p) != LORA_LABEL:
      return leaf
    key = "/".join(_path_names(p))
    value = stored[key]
    if value.shape != leaf.shape:
      raise ValueError(f"Adapter tensor {key!r} in {path} has shape {value.shape}, "
                       f"the model expects {leaf.shape}.")
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(replace, params)
