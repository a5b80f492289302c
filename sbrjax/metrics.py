"""Ranking metrics for next-item prediction, exact and vectorised.

Definitions (one example, target rank ``r`` counted from 1):
  * rank: ``r = 1 + #{j : s_j > s_t} + #{j != t : s_j == s_t}``. Ties rank
    pessimistically: the target ranks below every other candidate with an
    equal score, so a model that outputs constant scores earns nothing. A NaN
    target score ranks last.
  * HR@K (hit rate; LLM4SBR's P@K is the same number): ``1[r <= K]``.
  * NDCG@K (one relevant item): ``1[r <= K] / log2(r + 1)``.
  * MRR@K: ``1[r <= K] / r``.
Reported values are means over the examples of a split.

Two candidate sets:
  * ``full``: every item of the catalog.
  * ``sampled``: the target and the split's fixed negatives (99 by default),
    drawn once per split and seed when the data is prepared (see
    ``sbrjax.data.negatives``), so every model and epoch sees the same
    candidates.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_KS = (5, 10, 20)
MODES = ("sampled", "full")


def target_ranks(scores: jax.Array, targets: jax.Array) -> jax.Array:
  """Pessimistic 1-based rank of the target column in each row.

  Args:
    scores: float [B, C] candidate scores.
    targets: int [B] column of the target in ``scores``.

  Returns:
    int32 [B] ranks in ``[1, C]``.
  """
  scores = jnp.asarray(scores)
  targets = jnp.asarray(targets)
  num_candidates = scores.shape[-1]
  target_score = jnp.take_along_axis(scores, targets[:, None], axis=-1)  # [B, 1]
  greater = jnp.sum(scores > target_score, axis=-1)
  equal = jnp.sum(scores == target_score, axis=-1) - 1  # minus the target
  rank = 1 + greater + equal
  rank = jnp.where(jnp.isnan(target_score[:, 0]), num_candidates, rank)
  return rank.astype(jnp.int32)


def sampled_ranks(scores: jax.Array, targets: jax.Array,
                  negatives: jax.Array) -> jax.Array:
  """Rank of the target among itself and its fixed negatives.

  Args:
    scores: float [B, num_items] scores over the whole catalog.
    targets: int [B] target item ids.
    negatives: int [B, K] negative item ids (never the target).

  Returns:
    int32 [B] ranks in ``[1, K + 1]``.
  """
  candidates = jnp.concatenate([targets[:, None], negatives], axis=1)  # [B, K+1]
  cand_scores = jnp.take_along_axis(scores, candidates, axis=1)
  return target_ranks(cand_scores, jnp.zeros_like(targets))


def metrics_from_ranks(ranks: jax.Array,
                       ks: Sequence[int] = DEFAULT_KS) -> Dict[str, jax.Array]:
  """Per-example HR@K, NDCG@K and MRR@K.

  Args:
    ranks: int [B] 1-based ranks.
    ks: cut-offs.

  Returns:
    dict name -> float32 [B].
  """
  ranks = jnp.asarray(ranks)
  r = ranks.astype(jnp.float32)
  out = {}
  for k in ks:
    hit = ranks <= k
    out[f"HR@{k}"] = hit.astype(jnp.float32)
    out[f"NDCG@{k}"] = jnp.where(hit, 1.0 / jnp.log2(r + 1.0), 0.0)
    out[f"MRR@{k}"] = jnp.where(hit, 1.0 / r, 0.0)
  return out


def batch_metric_sums(scores: jax.Array, targets: jax.Array,
                      mask: Optional[jax.Array] = None,
                      negatives: Optional[jax.Array] = None,
                      ks: Sequence[int] = DEFAULT_KS) -> Dict[str, jax.Array]:
  """Sums of every metric over the real examples of a batch (jit-friendly).

  Keys are ``"{mode}/{metric}@{k}"`` for mode ``full`` and, when
  ``negatives`` is given, ``sampled``; ``"count"`` holds the number of real
  examples so sums from several batches can be merged and divided once.
  """
  ranks = {"full": target_ranks(scores, targets)}
  if negatives is not None:
    ranks["sampled"] = sampled_ranks(scores, targets, negatives)
  return rank_metric_sums(ranks, targets.shape, mask, ks)


def rank_metric_sums(ranks: Mapping[str, jax.Array], shape, mask: Optional[jax.Array] = None,
                     ks: Sequence[int] = DEFAULT_KS) -> Dict[str, jax.Array]:
  """``batch_metric_sums`` from ranks already computed per mode (e.g. sharded)."""
  if mask is None:
    mask = jnp.ones(shape, jnp.bool_)
  maskf = mask.astype(jnp.float32)
  sums = {"count": jnp.sum(maskf)}
  for mode, r in ranks.items():
    for name, value in metrics_from_ranks(r, ks).items():
      sums[f"{mode}/{name}"] = jnp.sum(value * maskf)
  return sums


class MetricAccumulator:
  """Adds per-batch metric sums on the host and returns means."""

  def __init__(self):
    self._sums: Dict[str, float] = {}

  def add(self, sums: Mapping[str, jax.Array]) -> None:
    for key, value in jax.device_get(dict(sums)).items():
      self._sums[key] = self._sums.get(key, 0.0) + float(value)

  def result(self, aliases: bool = False) -> Dict[str, float]:
    """Means over all examples seen; ``aliases`` adds P@K (= HR@K)."""
    count = self._sums.get("count", 0.0)
    if count == 0:
      raise ValueError("No examples were evaluated (empty split or all masked).")
    out = {k: v / count for k, v in self._sums.items() if k != "count"}
    if aliases:
      for key in list(out):
        mode, name = key.split("/")
        if name.startswith("HR@"):
          out[f"{mode}/P@{name[3:]}"] = out[key]
    out["count"] = count
    return dict(sorted(out.items()))


def numpy_reference_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Loop-based reference used by tests and as documentation of the rule."""
  ranks = []
  for row, t in zip(np.asarray(scores), np.asarray(targets)):
    if np.isnan(row[t]):
      ranks.append(len(row))
      continue
    rank = 1
    for j, s in enumerate(row):
      if j != t and s >= row[t]:
        rank += 1
    ranks.append(rank)
  return np.asarray(ranks, np.int32)
