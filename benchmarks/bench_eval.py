"""Times one evaluation pass over ml-100k's test split (sampled and full ranking).

Scores are random (the model is not the point: the ranking and metric code
is), shaped like a real pass: [batch, num_items] per batch, through the one
evaluation loop every trainer uses (``sbrjax.train.evaluate``). Prints JSON
with medians, the machine's load and its matmul peak.

  python benchmarks/bench_eval.py [--repeats 5] [--batch 1024]
"""

import argparse
import json
import time

import jax
import numpy as np

import common
from sbrjax import config as config_lib
from sbrjax.data import prepared
from sbrjax.train import evaluate as evaluate_lib


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=1024)
  args = parser.parse_args()

  machine = common.Machine()
  cfg = config_lib.base_config()
  t0 = time.perf_counter()
  data = prepared.load_prepared(cfg.data)
  load_s = time.perf_counter() - t0
  split = data.test
  n, m, b = len(split), data.num_items, args.batch
  rng = np.random.default_rng(0)
  # Round scores to 2 decimals so ties occur, as with low-precision models.
  scores = np.round(rng.normal(size=(n, m)), 2).astype(np.float32)

  evaluate = evaluate_lib.make_evaluator(
      lambda params, batch: evaluate_lib.ranks_from_scores(*batch), ks=(5, 10, 20))

  def batches(use_negatives):
    for start in range(0, n, b):
      sl = slice(start, min(start + b, n))
      rows = sl.stop - sl.start
      pad = b - rows
      s = np.pad(scores[sl], ((0, pad), (0, 0)))
      t = np.pad(split.targets[sl], (0, pad))
      mask = np.arange(b) < rows
      negs = np.pad(split.negatives[sl], ((0, pad), (0, 0))) if use_negatives else None
      yield s, t, mask, negs

  def one_pass(use_negatives):
    return evaluate(None, batches(use_negatives))

  out = {"dataset": data.name, "examples": n, "num_items": m, "batch": b,
         "load_prepared_seconds": load_s, "backend": jax.default_backend()}
  for name, negs in (("full_only", False), ("sampled_and_full", True)):
    sec = common.median_time(lambda negs=negs: one_pass(negs), args.repeats, warmup=1)
    out[f"{name}_pass_seconds_median"] = sec
    out[f"{name}_examples_per_s"] = n / sec
  out.update(machine.report())
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
