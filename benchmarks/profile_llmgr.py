"""Where an LLMGR train step's time goes, per HLO op (stage 1 and stage 2).

Builds the same steps as bench_llmgr.py (configs/llmgr_ml100k.py, real
SmolLM2 weights and ml-100k prompts), traces ``--repeats`` steps of each stage
with ``jax.profiler`` and prints JSON from ``sbrjax.train.xla_profile``: time per
step by phase (forward / backward / other = optimizer and metrics), by kind of
op (dot, elementwise, reduce, copy/transpose, gather/scatter), the matmuls'
GFLOP/s in the forward and in the backward pass, and the top ops with their
JAX op names. ``--forward`` also profiles the forward pass alone.

  python benchmarks/profile_llmgr.py [--repeats 3] [--top 12] [--stages aux,major]
"""

import argparse
import json
import os

import jax

import bench_llmgr
import common
from sbrjax.train import xla_profile


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--top", type=int, default=12)
  parser.add_argument("--stages", default="aux,major")
  parser.add_argument("--forward", action="store_true")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override, e.g. --set llm.dtype=bfloat16 (repeatable)")
  args = parser.parse_args()
  machine = common.Machine()
  cfg, _, model, params, _, pad, tasks = bench_llmgr.setup(args.repeats + 1, args.set)
  out = {"config": "configs/llmgr_ml100k.py", "batch": int(cfg.train.batch_size),
         "llm_layers": model.config.llm.num_layers,
         "xla_flags": os.environ.get("XLA_FLAGS", ""), "overrides": args.set}
  for stage in args.stages.split(","):
    run, step, holder, batches = bench_llmgr.stage_step(cfg, model, params, pad, stage,
                                                        tasks[stage], args.repeats + 1)
    text = step.lower(holder["state"], batches[0]).compile().as_text()
    jax.block_until_ready(run(batches[0]))  # compile
    it = iter(batches[1:] * args.repeats)
    out[stage] = xla_profile.profile_step(lambda: run(next(it)), text, args.repeats,
                                          top=args.top)
    out[stage]["prompt_tokens"] = int(batches[0].input_ids.shape[1])
    if args.forward:
      forward = jax.jit(lambda p, b: model.apply({"params": p}, b))
      text = forward.lower(params, batches[0]).compile().as_text()
      jax.block_until_ready(forward(params, batches[0]))
      out[f"{stage}_forward_only"] = xla_profile.profile_step(
          lambda: forward(params, batches[0]), text, args.repeats, top=args.top)
  out.update(machine.report())
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
