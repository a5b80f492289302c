"""Intent localization (LLM4SBR, eqs. 3-4).

An LLM's free-text guess of what a session wants is embedded by the text
encoder and then pulled onto the item catalog: take the ``f`` items whose
text embeddings are most cosine-similar to the intent embedding, softmax
their similarities, and return the similarity-weighted sum of those items'
text embeddings::

  s_j   = cos(e_intent, e_j)                       for every item j
  T     = top-f items by s_j
  a_j   = exp(s_j) / sum_{k in T} exp(s_k)         for j in T      (eq. 3)
  e'    = sum_{j in T} a_j e_j                                      (eq. 4)

The weighted sum uses the items' raw (not re-normalised) text embeddings.
(The released LLM4SBR code instead averages ``s_j * e_j`` over the top 5;
this module follows the paper's softmax.)

Conventions:
  * ``f == 0`` returns the intent embedding unchanged (no localization).
  * ``f > num_items`` is clamped to ``num_items`` (every item is used).
  * Ties in similarity are broken by the lower item index, both inside a
    chunk (``lax.top_k`` keeps the lower index first) and across chunks (the
    running top-f, which only holds lower indices, precedes the new chunk in
    the merge).

Items are scanned in chunks with a running top-f merge, so the [n, m]
similarity matrix never exists; queries are processed in fixed-size blocks
so each (block, catalog) shape compiles once.
"""

from __future__ import annotations

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1e-12
_HIGHEST = jax.lax.Precision.HIGHEST


def _unit(x: jax.Array) -> jax.Array:
  """Rows divided by ``max(norm, 1e-12)`` (zero rows stay zero)."""
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, _EPS)


@functools.partial(jax.jit, static_argnames=("f", "chunk_size"))
def top_f_cosine(queries: jax.Array, items: jax.Array, f: int,
                 chunk_size: int) -> Tuple[jax.Array, jax.Array]:
  """Top-``f`` cosine similarities of each query over a chunked catalog.

  Args:
    queries: float [n, d].
    items: float [m, d].
    f: how many items to keep, ``1 <= f <= m``.
    chunk_size: items per scan step (clamped to ``m``).

  Returns:
    (similarities float32 [n, f] descending, item indices int32 [n, f]);
    equal similarities are ordered by ascending item index.
  """
  n = queries.shape[0]
  m = items.shape[0]
  if not 1 <= f <= m:
    raise ValueError(f"f={f} must be in [1, num_items={m}]")
  c = min(chunk_size, m)
  num_chunks = -(-m // c)
  q = _unit(queries.astype(jnp.float32))  # [n, d]
  local = jnp.arange(c, dtype=jnp.int32)

  def step(carry, k):
    vals, idx = carry  # [n, f] each
    nominal = k * c
    # The last chunk is shifted back to stay in bounds; its overlap with the
    # previous chunk is masked out so each item is seen exactly once.
    start = jnp.minimum(nominal, m - c)
    block = jax.lax.dynamic_slice_in_dim(items, start, c, axis=0)  # [c, d]
    sims = jnp.einsum("nd,cd->nc", q, _unit(block.astype(jnp.float32)),
                      precision=_HIGHEST)  # [n, c]
    gidx = start + local  # [c]
    sims = jnp.where(gidx[None, :] >= nominal, sims, -jnp.inf)
    cand_v = jnp.concatenate([vals, sims], axis=1)  # [n, f + c]
    cand_i = jnp.concatenate(
        [idx, jnp.broadcast_to(gidx[None, :], (n, c))], axis=1)
    top_v, pos = jax.lax.top_k(cand_v, f)
    return (top_v, jnp.take_along_axis(cand_i, pos, axis=1)), None

  init = (jnp.full((n, f), -jnp.inf, jnp.float32),
          jnp.full((n, f), m, jnp.int32))
  (vals, idx), _ = jax.lax.scan(step, init,
                                jnp.arange(num_chunks, dtype=jnp.int32))
  return vals, idx


@functools.partial(jax.jit, static_argnames=("f", "chunk_size"))
def localize_block(queries: jax.Array, items: jax.Array, f: int,
                   chunk_size: int) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Eqs. 3-4 for one block of queries; needs f >= 1.

  Returns:
    (localized float32 [n, d], top-f item ids int32 [n, f], their softmax
    weights float32 [n, f]).
  """
  sims, idx = top_f_cosine(queries, items, f, chunk_size)
  weights = jax.nn.softmax(sims, axis=-1)  # [n, f]
  chosen = jnp.take(items, idx, axis=0).astype(jnp.float32)  # [n, f, d]
  return jnp.einsum("nf,nfd->nd", weights, chosen, precision=_HIGHEST), idx, weights


def localize(intents, items, f: int, *, chunk_size: int = 16384,
             query_block: int = 1024, return_ids: bool = False):
  """Localizes intent embeddings onto the item catalog (eqs. 3-4).

  Args:
    intents: float [n, d] intent-text embeddings.
    items: float [m, d] item-text embeddings (row j = item id j).
    f: number of nearest items to mix; 0 returns ``intents`` as float32,
      values above ``m`` are clamped to ``m``.
    chunk_size: catalog rows per scan step (memory ~ query_block * (f +
      chunk_size) floats).
    query_block: intents per jitted call; the last block is padded so only
      one shape compiles.

    return_ids: also return the chosen items and their weights.

  Returns:
    float32 [n, d] localized intent embeddings; with ``return_ids`` the tuple
    (embeddings, item ids int32 [n, f], softmax weights float32 [n, f]), the
    ids ordered by descending similarity (ties: lower id first); f = 0 gives
    [n, 0] ids and weights.

  Raises:
    ValueError: mismatched dims, negative ``f``, empty catalog with f > 0,
      or non-finite inputs.
  """
  intents = np.asarray(intents, np.float32)
  if intents.ndim != 2:
    raise ValueError(f"intents must be [n, d], got shape {intents.shape}")
  if f < 0:
    raise ValueError(f"f must be >= 0, got {f}")
  if not np.isfinite(intents).all():
    bad = int(np.argwhere(~np.isfinite(intents))[0, 0])
    raise ValueError(f"intents row {bad} holds NaN or inf")
  if f == 0:
    if return_ids:
      return (intents.copy(), np.zeros((len(intents), 0), np.int32),
              np.zeros((len(intents), 0), np.float32))
    return intents.copy()
  if items.ndim != 2 or items.shape[1] != intents.shape[1]:
    raise ValueError(f"items shape {items.shape} does not match intents "
                     f"dim {intents.shape[1]}")
  m = items.shape[0]
  if m == 0:
    raise ValueError("item catalog is empty; localization needs f == 0")
  items = jnp.asarray(items, jnp.float32)
  if not bool(jnp.isfinite(items).all()):
    bad = int(np.argwhere(~np.isfinite(np.asarray(items)))[0, 0])
    raise ValueError(f"item embedding row {bad} holds NaN or inf")
  f = min(f, m)
  chunk_size = min(chunk_size, m)
  n = intents.shape[0]
  out = np.empty_like(intents)
  ids = np.empty((n, f), np.int32)
  weights = np.empty((n, f), np.float32)
  block = max(1, min(query_block, n))
  for start in range(0, n, block):
    part = intents[start:start + block]
    rows = part.shape[0]
    if rows < block:  # pad so every call has the same shape
      part = np.concatenate(
          [part, np.zeros((block - rows, part.shape[1]), np.float32)])
    res, idx, w = localize_block(jnp.asarray(part), items, f, chunk_size)
    out[start:start + rows] = np.asarray(res)[:rows]
    ids[start:start + rows] = np.asarray(idx)[:rows]
    weights[start:start + rows] = np.asarray(w)[:rows]
  if return_ids:
    return out, ids, weights
  return out
