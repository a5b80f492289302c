"""Item-scoring head with the catalog axis split across devices.

Scores are ``hidden @ items.T``: ``hidden`` [B, D] is the model's output per
example and ``items`` [M, D] the item table (catalog). With a large catalog
the [B, M] logits dominate memory, so the item axis is split over mesh axes
with :func:`jax.shard_map`; each device only ever holds [B, M / n] logits:

* softmax cross-entropy: a numerically stable distributed log-sum-exp (the
  global max by ``pmax``, then ``psum`` of the shifted exponentials) and the
  target logit summed from the shard that owns it (``psum``);
* top-K: local top-k, ``all_gather`` of the candidates, top-k again;
* target rank: counts of better / tied items summed with ``psum``.

Catalogs whose size is not a multiple of the shard count are padded with
masked rows that never win, never count and get zero gradient. Results equal
the dense reference functions (``dense_*``), which are also what runs on a
single device or without a mesh.

Targets are item ids in ``[0, num_items)``. Shapes cannot be checked inside
jit, so an out-of-range target yields a NaN loss and rank 0 instead of a
plausible number: a data bug cannot train quietly.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AxisNames = Union[str, Tuple[str, ...]]
DEFAULT_ITEM_AXES = ("data", "fsdp", "tensor")


def _scores(hidden, items):
  # float32 accumulation whatever the storage dtype.
  return jnp.einsum("bd,md->bm", hidden, items,
                    preferred_element_type=jnp.float32)  # [B, M]


def _check(hidden, items, targets=None):
  if hidden.ndim != 2 or items.ndim != 2 or hidden.shape[1] != items.shape[1]:
    raise ValueError(f"item head: hidden {hidden.shape} must be [B, D] and "
                     f"items {items.shape} [M, D] with the same D.")
  if targets is not None and targets.shape != hidden.shape[:1]:
    raise ValueError(f"item head: targets {targets.shape} must be [B] for "
                     f"hidden {hidden.shape}.")


# ----------------------------------------------------------------- dense ---


def dense_softmax_xent(hidden, items, targets, num_items: Optional[int] = None):
  """Per-example softmax cross-entropy over all items. Returns [B] float32."""
  _check(hidden, items, targets)
  m = items.shape[0] if num_items is None else num_items
  logits = _scores(hidden, items[:m])  # [B, M]
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B]
  valid = (targets >= 0) & (targets < m)
  t = jnp.take_along_axis(logits, jnp.clip(targets, 0, m - 1)[:, None],
                          axis=-1)[:, 0]  # [B]
  return jnp.where(valid, lse - t, jnp.nan)


def dense_topk(hidden, items, k: int, num_items: Optional[int] = None):
  """Top-``k`` items per example: ``(scores [B, k], ids [B, k])``.

  Ties go to the lower item id (as ``jax.lax.top_k``).
  """
  _check(hidden, items)
  m = items.shape[0] if num_items is None else num_items
  if not 0 < k <= m:
    raise ValueError(f"top-k: k={k} must be in [1, num_items={m}].")
  return jax.lax.top_k(_scores(hidden, items[:m]), k)


def dense_target_rank(hidden, items, targets, num_items: Optional[int] = None):
  """1-based rank of each target with pessimistic ties. Returns [B] int32.

  ``rank = 1 + #(score > s_t) + #(score == s_t and id != t)``; 0 marks an
  out-of-range target.
  """
  _check(hidden, items, targets)
  m = items.shape[0] if num_items is None else num_items
  scores = _scores(hidden, items[:m])  # [B, M]
  valid = (targets >= 0) & (targets < m)
  tc = jnp.clip(targets, 0, m - 1)
  s_t = jnp.take_along_axis(scores, tc[:, None], axis=-1)  # [B, 1]
  not_t = jnp.arange(m)[None, :] != tc[:, None]  # [B, M]
  worse_or_tie = (scores > s_t) | ((scores == s_t) & not_t)
  rank = 1 + jnp.sum(worse_or_tie, axis=-1, dtype=jnp.int32)
  return jnp.where(valid, rank, 0)


# --------------------------------------------------------------- sharded ---


def _axis_tuple(axis: AxisNames) -> Tuple[str, ...]:
  return (axis,) if isinstance(axis, str) else tuple(axis)


def _resolve(mesh: Optional[Mesh], axis: AxisNames, batch_axis):
  """Item axes present in the mesh, their total size, and the batch axes."""
  if mesh is None:
    return (), 1, ()
  axes = tuple(a for a in _axis_tuple(axis) if a in mesh.shape)
  missing = set(_axis_tuple(axis)) - set(axes)
  if missing and not axes:
    raise ValueError(f"item axes {axis} are not in the mesh {dict(mesh.shape)}")
  batch = () if batch_axis is None else _axis_tuple(batch_axis)
  if set(batch) & set(axes):
    raise ValueError(f"batch axes {batch} and item axes {axes} overlap; a mesh "
                     "axis cannot split both the batch and the catalog here.")
  return axes, math.prod(mesh.shape[a] for a in axes), batch


def pad_items(items, num_shards: int):
  """Pads the item table with zero rows to a multiple of ``num_shards``."""
  m = items.shape[0]
  pad = -m % num_shards
  if pad:
    items = jnp.pad(items, ((0, pad), (0, 0)))
  return items


def _place(x, mesh, spec):
  # Inside jit this is a sharding constraint; eagerly it moves the data, so
  # the shard_map inputs match its in_specs either way.
  return jax.device_put(x, NamedSharding(mesh, spec))


def _prepare(hidden, items, targets, mesh, axis, batch_axis, num_items):
  """Pads/places inputs; returns what the shard_map kernels need."""
  axes, n, batch = _resolve(mesh, axis, batch_axis)
  m = items.shape[0] if num_items is None else int(num_items)
  if not 0 < m <= items.shape[0]:
    raise ValueError(f"num_items={m} must be in [1, {items.shape[0]}] "
                     f"(the item table has {items.shape[0]} rows).")
  nb = math.prod(mesh.shape[a] for a in batch)
  if hidden.shape[0] % nb:
    raise ValueError(f"batch size {hidden.shape[0]} is not divisible by the "
                     f"{nb} devices of batch axes {batch}; pad the batch.")
  items = pad_items(items[:m], n)
  bspec = P(batch if batch else None)
  hidden = _place(hidden, mesh, P(batch if batch else None, None))
  items = _place(items, mesh, P(axes, None))
  if targets is not None:
    targets = _place(targets.astype(jnp.int32), mesh, bspec)
  return hidden, items, targets, m, axes, batch, bspec


def _local_scores(h, w, axes, m):
  """Scores of this shard's rows, padded rows at -inf, and their global ids."""
  rows = w.shape[0]
  start = jax.lax.axis_index(axes) * rows
  gid = start + jnp.arange(rows, dtype=jnp.int32)  # [Ms]
  s = _scores(h, w)  # [B, Ms]
  s = jnp.where((gid < m)[None, :], s, -jnp.inf)
  return s, start, gid


def sharded_softmax_xent(hidden, items, targets, mesh: Optional[Mesh],
                         axis: AxisNames = DEFAULT_ITEM_AXES,
                         batch_axis: Optional[AxisNames] = None,
                         num_items: Optional[int] = None):
  """Per-example softmax cross-entropy with the item axis split over ``axis``.

  Args:
    hidden: [B, D] example representations (any float dtype).
    items: [M, D] item table (M may already include padding rows, see
      ``num_items``).
    targets: [B] int target item ids in ``[0, num_items)``.
    mesh: device mesh; None or a 1-device mesh runs the dense reference.
    axis: mesh axis or axes splitting the item table.
    batch_axis: mesh axes splitting the batch (must not overlap ``axis``);
      None keeps the batch whole on every device.
    num_items: number of real rows of ``items`` (default: all of them).

  Returns:
    [B] float32 losses (NaN for an out-of-range target). Differentiable with
    respect to ``hidden`` and ``items``; gradients equal the dense ones.
  """
  _check(hidden, items, targets)
  if mesh is None or mesh.size == 1:
    return dense_softmax_xent(hidden, items, targets, num_items)
  hidden, items, targets, m, axes, batch, bspec = _prepare(
      hidden, items, targets, mesh, axis, batch_axis, num_items)

  def kernel(h, w, t):  # h [b, D], w [Ms, D], t [b]
    s, start, _ = _local_scores(h, w, axes, m)  # [b, Ms]
    # The shift cancels in lse, so it needs no gradient (and pmax has none).
    g = jax.lax.pmax(jax.lax.stop_gradient(jnp.max(s, axis=-1)), axes)  # [b]
    sumexp = jax.lax.psum(jnp.sum(jnp.exp(s - g[:, None]), axis=-1), axes)
    lse = jnp.log(sumexp) + g  # [b]
    local_t = t - start
    mine = (local_t >= 0) & (local_t < w.shape[0])
    t_logit = jnp.take_along_axis(
        s, jnp.clip(local_t, 0, w.shape[0] - 1)[:, None], axis=-1)[:, 0]
    t_logit = jax.lax.psum(jnp.where(mine, t_logit, 0.0), axes)  # [b]
    valid = (t >= 0) & (t < m)
    return jnp.where(valid, lse - t_logit, jnp.nan)

  return jax.shard_map(
      kernel, mesh=mesh,
      in_specs=(P(batch if batch else None, None), P(axes, None), bspec),
      out_specs=bspec)(hidden, items, targets)


def sharded_topk(hidden, items, k: int, mesh: Optional[Mesh],
                 axis: AxisNames = DEFAULT_ITEM_AXES,
                 batch_axis: Optional[AxisNames] = None,
                 num_items: Optional[int] = None):
  """Top-``k`` items per example with the catalog split over ``axis``.

  Each device takes its local top-``min(k, M/n)``, the candidates are
  all-gathered and the top-``k`` of them kept; padded rows never appear.
  Ties go to the lower item id, exactly as :func:`dense_topk`.

  Returns:
    ``(scores [B, k] float32, ids [B, k] int32)``, best first.
  """
  _check(hidden, items)
  m = items.shape[0] if num_items is None else int(num_items)
  if not 0 < k <= m:
    raise ValueError(f"top-k: k={k} must be in [1, num_items={m}].")
  if mesh is None or mesh.size == 1:
    return dense_topk(hidden, items, k, num_items)
  hidden, items, _, m, axes, batch, bspec = _prepare(
      hidden, items, None, mesh, axis, batch_axis, num_items)
  rows = items.shape[0] // math.prod(mesh.shape[a] for a in axes)
  k_local = min(k, rows)

  def kernel(h, w):
    s, _, gid = _local_scores(h, w, axes, m)  # [b, Ms]
    vals, idx = jax.lax.top_k(s, k_local)  # [b, kl]
    ids = gid[idx]  # [b, kl]
    # [n, b, kl]: shard-major, so among equal scores lower ids come first.
    all_vals = jax.lax.all_gather(vals, axes)
    all_ids = jax.lax.all_gather(ids, axes)
    b = vals.shape[0]
    all_vals = jnp.moveaxis(all_vals, 0, 1).reshape(b, -1)  # [b, n * kl]
    all_ids = jnp.moveaxis(all_ids, 0, 1).reshape(b, -1)
    top_vals, pos = jax.lax.top_k(all_vals, k)  # [b, k]
    return top_vals, jnp.take_along_axis(all_ids, pos, axis=-1)

  # The merged result is identical on every item shard; check_vma cannot see
  # through top_k of gathered values, so declare it replicated explicitly.
  return jax.shard_map(
      kernel, mesh=mesh,
      in_specs=(P(batch if batch else None, None), P(axes, None)),
      out_specs=(P(batch if batch else None, None),) * 2,
      check_vma=False)(hidden, items)


def sharded_target_rank(hidden, items, targets, mesh: Optional[Mesh],
                        axis: AxisNames = DEFAULT_ITEM_AXES,
                        batch_axis: Optional[AxisNames] = None,
                        num_items: Optional[int] = None):
  """Rank of each target among all items, pessimistic ties, catalog sharded.

  ``rank = 1 + #(score > s_t) + #(score == s_t and id != t)`` over the
  ``num_items`` real items; 0 marks an out-of-range target. Equals
  :func:`dense_target_rank`.

  Returns:
    [B] int32 ranks (1 = best).
  """
  _check(hidden, items, targets)
  if mesh is None or mesh.size == 1:
    return dense_target_rank(hidden, items, targets, num_items)
  hidden, items, targets, m, axes, batch, bspec = _prepare(
      hidden, items, targets, mesh, axis, batch_axis, num_items)

  def kernel(h, w, t):
    s, start, gid = _local_scores(h, w, axes, m)  # [b, Ms]
    local_t = t - start
    mine = (local_t >= 0) & (local_t < w.shape[0])
    s_t = jnp.take_along_axis(
        s, jnp.clip(local_t, 0, w.shape[0] - 1)[:, None], axis=-1)[:, 0]
    # The owner's score is broadcast by a masked max (scores may be any sign).
    s_t = jax.lax.pmax(jnp.where(mine, s_t, -jnp.inf), axes)  # [b]
    not_t = gid[None, :] != t[:, None]  # [b, Ms]
    # Padded rows hold -inf and never exceed or tie a finite target score.
    above = (s > s_t[:, None]) | ((s == s_t[:, None]) & not_t)
    count = jax.lax.psum(jnp.sum(above, axis=-1, dtype=jnp.int32), axes)
    valid = (t >= 0) & (t < m)
    return jnp.where(valid, 1 + count, 0)

  return jax.shard_map(
      kernel, mesh=mesh,
      in_specs=(P(batch if batch else None, None), P(axes, None), bspec),
      out_specs=bspec)(hidden, items, targets)
