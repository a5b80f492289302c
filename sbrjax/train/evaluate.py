"""The one evaluation loop: per-example target ranks -> HR / NDCG / MRR @ K.

Every method supplies a ``rank_fn(params, batch) -> dict`` of per-example
arrays (leading dimension = batch rows) with at least

* ``mask``: bool [B], the real rows (padding rows are dropped on the host);
* ``rank/full``: int [B], the target's rank among all items;
* ``rank/sampled``: int [B], its rank among itself and the fixed negatives
  (absent when the split has no negatives);

and any other per-example fields it wants kept (``index``, ``target`` ...).
:func:`make_evaluator` jits it, runs it over batches, keeps the real rows and
computes the metrics on the host from the ranks (``sbrjax.metrics``), so the
aggregate numbers and the per-example rows come from one computation.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import jax
import numpy as np

from sbrjax import metrics as metrics_lib

RankFn = Callable[[Any, Any], Dict[str, jax.Array]]


def make_evaluator(rank_fn: RankFn, ks: Sequence[int], *,
                   place: Optional[Callable[[Any], Any]] = None, **jit_kwargs):
  """``evaluate(params, batches, aliases=False, return_examples=False)``.

  Args:
    rank_fn: per-example ranks of one batch (see the module docstring).
    ks: metric cut-offs.
    place: applied to each host batch before the step (mesh placement).
    **jit_kwargs: passed to ``jax.jit`` (e.g. ``out_shardings``).

  Returns:
    ``evaluate`` giving the metrics dict (``"{mode}/{metric}@{k}"`` means and
    ``count``); with ``return_examples`` also the dict of per-example arrays
    of the real rows, in batch order.
  """
  step = jax.jit(rank_fn, **jit_kwargs)
  ks = tuple(ks)

  def evaluate(params, batches: Iterable[Any], aliases: bool = False,
               return_examples: bool = False):
    columns: Dict[str, list] = {}
    for batch in batches:
      out = jax.device_get(step(params, place(batch) if place else batch))
      real = np.asarray(out["mask"], bool)
      for key, value in out.items():
        if key != "mask":
          columns.setdefault(key, []).append(np.asarray(value)[real])
    examples = {k: np.concatenate(v) for k, v in columns.items()}
    if not examples or len(examples["rank/full"]) == 0:
      raise ValueError("No examples were evaluated (empty split or all rows masked).")
    ranks = {k.split("/", 1)[1]: v for k, v in examples.items() if k.startswith("rank/")}
    result = metrics_lib.summarize(ranks, ks, aliases=aliases)
    return (result, examples) if return_examples else result

  return evaluate


def ranks_from_scores(scores: jax.Array, targets: jax.Array, mask: jax.Array,
                      negatives: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
  """The ``rank_fn`` output for dense scores [B, I] (full and sampled ranks)."""
  out = {"mask": mask, "rank/full": metrics_lib.target_ranks(scores, targets)}
  if negatives is not None:
    out["rank/sampled"] = metrics_lib.sampled_ranks(scores, targets, negatives)
  return out

