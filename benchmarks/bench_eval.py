"""Times one evaluation pass over ml-100k's test split (sampled and full ranking).

Scores are random (the model is not the point: the metric kernel is), shaped
like a real pass: [batch, num_items] per batch. Prints JSON with medians.

  python benchmarks/bench_eval.py [--repeats 5] [--batch 1024]
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from sbrjax import config as config_lib
from sbrjax import metrics
from sbrjax.data import prepared


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=1024)
  args = parser.parse_args()

  cfg = config_lib.base_config()
  t0 = time.perf_counter()
  data = prepared.load_prepared(cfg.data)
  load_s = time.perf_counter() - t0
  split = data.test
  n, m, b = len(split), data.num_items, args.batch
  rng = np.random.default_rng(0)
  # Round scores to 2 decimals so ties occur, as with low-precision models.
  scores = np.round(rng.normal(size=(n, m)), 2).astype(np.float32)

  step = jax.jit(metrics.batch_metric_sums, static_argnames="ks")

  def one_pass(use_negatives):
    acc = metrics.MetricAccumulator()
    for start in range(0, n, b):
      sl = slice(start, min(start + b, n))
      rows = sl.stop - sl.start
      pad = b - rows
      s = np.pad(scores[sl], ((0, pad), (0, 0)))
      t = np.pad(split.targets[sl], (0, pad))
      mask = np.arange(b) < rows
      negs = np.pad(split.negatives[sl], ((0, pad), (0, 0))) if use_negatives else None
      acc.add(step(jnp.asarray(s), t, mask, negs, ks=(5, 10, 20)))
    return acc.result()

  out = {"dataset": data.name, "examples": n, "num_items": m, "batch": b,
         "load_prepared_seconds": load_s, "backend": jax.default_backend()}
  for name, negs in (("full_only", False), ("sampled_and_full", True)):
    one_pass(negs)  # compile
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      one_pass(negs)
      times.append(time.perf_counter() - t0)
    out[f"{name}_pass_seconds_median"] = statistics.median(times)
    out[f"{name}_examples_per_s"] = n / statistics.median(times)
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
