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

from typing import Dict, Mapping, Sequence

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


def metrics_from_ranks(ranks, ks: Sequence[int] = DEFAULT_KS) -> Dict[str, np.ndarray]:
  """Per-example HR@K, NDCG@K and MRR@K (float64) from 1-based ranks [N]."""
  r = np.asarray(ranks, np.float64)
  out = {}
  for k in ks:
    hit = r <= k
    out[f"HR@{k}"] = hit.astype(np.float64)
    out[f"NDCG@{k}"] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
    out[f"MRR@{k}"] = np.where(hit, 1.0 / r, 0.0)
  return out


def summarize(ranks: Mapping[str, np.ndarray], ks: Sequence[int] = DEFAULT_KS,
              aliases: bool = False) -> Dict[str, float]:
  """Means over examples of every metric, per candidate mode.

  Args:
    ranks: mode ("full", "sampled") -> int ranks [N] of the same N examples.
    ks: cut-offs.
    aliases: also report P@K (= HR@K), LLM4SBR's name.

  Returns:
    ``{"{mode}/{metric}@{k}": mean, ..., "count": N}``, keys sorted.
  """
  counts = {len(r) for r in ranks.values()}
  if len(counts) != 1 or 0 in counts:
    raise ValueError(f"No examples were evaluated, or modes disagree on their number "
                     f"({ {m: len(r) for m, r in ranks.items()} }).")
  out: Dict[str, float] = {}
  for mode, r in ranks.items():
    for name, values in metrics_from_ranks(r, ks).items():
      out[f"{mode}/{name}"] = float(values.mean())
      if aliases and name.startswith("HR@"):
        out[f"{mode}/P@{name[3:]}"] = out[f"{mode}/{name}"]
  out["count"] = float(counts.pop())
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
