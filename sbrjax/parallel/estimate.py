"""Per-device memory of a training step, from shapes and sharding rules only."""

from __future__ import annotations

import math
from typing import Mapping, Optional, Tuple

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from sbrjax.parallel.rules import (LogicalRules, ParamRules, _as_tuple, _axes_size,
                                   logical_axes_from_rules, logical_to_mesh_spec)


def _bytes(shape, dtype) -> int:
  return math.prod(shape) * np.dtype(dtype).itemsize


def _local_shape(shape, spec: P, mesh_shape) -> Tuple[int, ...]:
  spec = tuple(spec) + (None,) * (len(shape) - len(spec))
  return tuple(
      -(-d // _axes_size(mesh_shape, _as_tuple(a))) for d, a in zip(shape, spec))


def estimate_memory(param_shapes, trainable_mask,
                    mesh_shape: Mapping[str, int], rules: LogicalRules,
                    param_rules: ParamRules, *, batch: int, seq_len: int,
                    hidden: int, layers: int, num_heads: int,
                    dtype="bfloat16", num_items: int = 0,
                    vocab_size: int = 0, remat: bool = False,
                    device_memory_bytes: Optional[int] = None,
                    headroom: float = 0.9) -> dict:
  """Per-device memory estimate of a training step from shapes only.

  Counted (bytes, per device; each array's local shard is
  ``ceil(dim / shards)`` per dimension under the rules):

  * ``params``: every parameter in its own dtype.
  * ``grads``: one gradient per trainable element, float32.
  * ``optimizer``: Adam's ``mu`` and ``nu``, 2 x float32 per trainable
    element.
  * ``master``: a float32 master copy of each trainable parameter whose dtype
    is not float32 (mixed precision); 0 for float32 parameters.
  * ``activations``: a transformer estimate after Korthikanti et al. 2022
    ("Reducing Activation Recomputation in Large Transformer Models"): per
    layer, stored activations of ``s*b*h*(34 + 5*a*s/h)`` bytes at 2-byte
    precision, where the tensor-parallel part (``24 + 5*a*s/h``) divides by
    the tensor axis size (``10`` stays). Scaled by ``dtype``'s byte size / 2.
    With ``remat`` only each layer's input (``s*b*h`` elements) is kept plus
    one layer's full activations for the recomputation. Frozen layers still
    store activations (backprop reaches the adapters below them), so the
    estimate does not depend on the mask. ``b`` is the per-device batch
    (``batch`` split over the "batch" axes). Plus the output heads, float32
    logits and their gradient: the item head's ``[B, num_items]`` per example
    (``sbrjax.parallel.catalog_softmax``: catalog split over the "items" axes, the batch
    only over "batch" axes the catalog does not use) and a token head's
    ``[b, s, vocab_size]`` split over the "vocab" axes.

  Args:
    param_shapes: tree of ShapeDtypeStructs (``jax.eval_shape(init)``).
    trainable_mask: tree of bools (same structure) or None = all trainable.
    mesh_shape: ``{"data": 2, "fsdp": 2, "tensor": 1}``; no devices needed.
    rules: logical axis rules.
    param_rules: ``(regex, logical axes)`` table.
    batch: global batch size (sequences).
    seq_len: tokens per sequence.
    hidden: model width.
    layers: number of transformer layers.
    num_heads: attention heads.
    dtype: activation dtype.
    num_items: catalog size of the item head; 0 = no item head.
    vocab_size: vocabulary of a per-token LM head; 0 = none.
    remat: whether each layer is rematerialised.
    device_memory_bytes: per-device memory; when given, ``fits`` is set.
    headroom: usable fraction of ``device_memory_bytes``.

  Returns:
    A dict of per-device byte counts (``params``, ``grads``, ``optimizer``,
    ``master``, ``activations``, ``total``), ``total_gib`` and, when
    ``device_memory_bytes`` is given, ``fits``.
  """
  mshape = dict(mesh_shape)
  logical = logical_axes_from_rules(param_shapes, param_rules)
  specs = jax.tree.map(lambda s, x: logical_to_mesh_spec(s, rules, mshape,
                                                          x.shape),
                       logical, param_shapes, is_leaf=lambda x: isinstance(x, P))
  if trainable_mask is None:
    trainable_mask = jax.tree.map(lambda _: True, param_shapes)
  out = dict(params=0, grads=0, optimizer=0, master=0)
  for x, spec, train in zip(
      jax.tree.leaves(param_shapes),
      jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, P)),
      jax.tree.leaves(trainable_mask)):
    local = _local_shape(x.shape, spec, mshape)
    out["params"] += _bytes(local, x.dtype)
    if train:
      out["grads"] += _bytes(local, np.float32)
      out["optimizer"] += 2 * _bytes(local, np.float32)
      if np.dtype(x.dtype) != np.float32:
        out["master"] += _bytes(local, np.float32)

  def mesh_axes(logical_name):
    spec = logical_to_mesh_spec((logical_name,), rules, mshape)
    return _as_tuple(spec[0])

  def size(logical_name):
    return _axes_size(mshape, mesh_axes(logical_name))

  b = -(-batch // size("batch"))
  t = size("heads")
  s, h, a = seq_len, hidden, num_heads
  scale = np.dtype(dtype).itemsize / 2
  per_layer = s * b * h * (10 + (24 + 5 * a * s / h) / t) * scale
  if remat:
    act = layers * s * b * h * np.dtype(dtype).itemsize + per_layer
  else:
    act = layers * per_layer
  if num_items:
    item_axes = mesh_axes("items")
    head_batch_axes = [x for x in mesh_axes("batch") if x not in item_axes]
    b_head = -(-batch // _axes_size(mshape, head_batch_axes))
    act += 2 * 4 * b_head * -(-num_items // _axes_size(mshape, item_axes))
  if vocab_size:
    act += 2 * 4 * b * s * -(-vocab_size // size("vocab"))
  out["activations"] = int(act)
  out["total"] = sum(out[k] for k in ("params", "grads", "optimizer", "master",
                                      "activations"))
  out["total_gib"] = out["total"] / 2**30
  if device_memory_bytes is not None:
    out["fits"] = bool(out["total"] <= headroom * device_memory_bytes)
  return out
