"""LLM4SBR throughput: stage-1 intents/s and stage-2 training examples/s.

Stage 1: greedy intent generation with ``LLMIntentGenerator`` on real
ml-100k-style prompts (the real SmolLM2 GGUF with ``--llm=gguf``, else a
random model of SmolLM2's shape, ``--llm=random``), timed after a warm-up
batch (compilation excluded). Stage 2: jitted train steps of LLM4SBR(backbone)
and of the plain backbone on the same batches, measured in the same process,
with XLA's memory account of each compiled step (the Table 3 question).
Prints one JSON object.

  python benchmarks/bench_llm4sbr.py --llm=gguf --prompts=96 --gen_batch=32 --steps=30

Rates are per median batch (stage 1) and per median step (stage 2).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import ml_collections
import numpy as np
from flax.training import train_state

import common
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import rawfiles
from sbrjax.data.types import Split
from sbrjax.llm4sbr import inference
from sbrjax.llm4sbr import model as llm4sbr_lib
from sbrjax.llm4sbr import prompts as prompts_lib
from sbrjax.llm4sbr import train as train_llm4sbr
from sbrjax.models import sbr as sbr_lib
from sbrjax.train import memory as memory_lib
from sbrjax.train import optim


def bench_generation(args):
  llm_cfg = ml_collections.ConfigDict(dict(
      source=args.llm, preset="smollm2_135m", num_layers=0, dtype="float32", path=""))
  model, params, tok, desc = inference.load_generator_llm(llm_cfg)
  gen = inference.LLMIntentGenerator(model, params, tok, max_new_tokens=args.max_new_tokens,
                                     batch_size=args.gen_batch, chat=True,
                                     length_bucket=32)
  rng = np.random.default_rng(0)
  titles = [f"Movie title number {i} ({1950 + i % 50})" for i in range(500)]
  prompts = [prompts_lib.session_prompt(rng.integers(0, 500, args.prompt_items),
                                        "long_term", titles)
             for _ in range(args.prompts + args.gen_batch)]
  gen(prompts[:args.gen_batch])  # compile
  out, times = [], []
  for start in range(args.gen_batch, len(prompts) - args.gen_batch + 1, args.gen_batch):
    t0 = time.perf_counter()
    out.extend(gen(prompts[start:start + args.gen_batch]))
    times.append(time.perf_counter() - t0)
  tokens = [len(gen.token_ids(p)) for p in prompts[args.gen_batch:]]
  return {"llm": desc, "prompts": len(out), "batches": len(times),
          "batch_seconds": times, "seconds": float(np.sum(times)),
          "intents_per_s": args.gen_batch / float(np.median(times)),  # median batch
          "prompt_tokens_mean": float(np.mean(tokens)), "batch": args.gen_batch,
          "max_new_tokens": args.max_new_tokens, "example": out[0]}


def bench_training(args):
  rows = rawfiles.synthetic_ratings(num_users=300, num_items=args.items, per_user=20)
  seqs = {}
  for u, i, _, t in sorted(rows, key=lambda r: (r[0], r[3])):
    seqs.setdefault(u, []).append(i - 1)
  values, offsets, targets = [], [0], []
  for s in seqs.values():
    for k in range(1, len(s)):
      values.extend(s[max(0, k - args.max_len):k])
      offsets.append(len(values))
      targets.append(s[k])
  split = Split(np.asarray(values, np.int32), np.asarray(offsets, np.int64),
                np.asarray(targets, np.int32), np.zeros(len(targets), np.int32))
  graphs = graphs_lib.build_graphs(split, args.max_len)
  batches = list(graphs_lib.iterate_batches(graphs, args.batch, shuffle=True,
                                            drop_remainder=True, prefetch=0))
  intents = np.random.default_rng(0).normal(size=(len(split), 2, 384)).astype(np.float32)
  train = ml_collections.ConfigDict(dict(optimizer="adam", learning_rate=1e-3,
                                         schedule="constant", weight_decay=1e-5,
                                         weight_decay_mode="l2", grad_clip_norm=0.0))
  sbr_cfg = sbr_lib.SBRConfig(backbone=args.backbone, num_items=args.items,
                              embed_dim=args.dim)
  out = {}
  for variant in ("backbone", "llm4sbr"):
    if variant == "llm4sbr":
      cfg = llm4sbr_lib.LLM4SBRConfig(sbr=sbr_cfg, text_dim=384)
      model = llm4sbr_lib.LLM4SBR(cfg)
    else:
      cfg, model = None, sbr_lib.create_model(sbr_cfg)
    data = list(train_llm4sbr.with_intents(iter(batches),
                                           intents if variant == "llm4sbr" else None))
    params = train_llm4sbr.init_params(model, data[0], 0, variant == "llm4sbr")
    # As the trainer: the backbone's W3, unread by the fused model, is dropped.
    params, unused = train_llm4sbr.prune_unused(model, params, data[0], 0,
                                                variant == "llm4sbr")
    schedule = optim.make_schedule(train, 1, 1)
    tx = optim.make_optimizer(train, schedule, params,
                              trainable=("sbr", "fusion") if cfg else ("sbr",))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    step = train_llm4sbr.jitted_train_step(train_llm4sbr.make_forward(model, cfg, unused),
                                           schedule, 0)
    step, step_memory = memory_lib.compile_with_memory(step, state, data[0])
    state, _ = step(state, data[0])
    jax.block_until_ready(state)
    n = min(args.steps, len(data) - 1)
    times = []
    for b in data[1:n + 1]:
      t0 = time.perf_counter()
      state, _ = step(state, b)
      jax.block_until_ready(state)
      times.append(time.perf_counter() - t0)
    out[variant] = {"steps": n, "step_seconds_median": float(np.median(times)),
                    "examples_per_s": args.batch / float(np.median(times)),  # median step
                    "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
                    "unused_params": sorted(unused),
                    "step_compiled_memory": step_memory}
  out["llm4sbr_over_backbone_time"] = (out["backbone"]["examples_per_s"] /
                                       out["llm4sbr"]["examples_per_s"])
  peaks = [out[v]["step_compiled_memory"].get("peak_bytes") for v in ("llm4sbr", "backbone")]
  if all(peaks):
    out["llm4sbr_over_backbone_step_memory"] = peaks[0] / peaks[1]
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--llm", default="gguf", choices=("gguf", "random"))
  p.add_argument("--prompts", type=int, default=96)
  p.add_argument("--prompt_items", type=int, default=5)
  p.add_argument("--gen_batch", type=int, default=32)
  p.add_argument("--max_new_tokens", type=int, default=16)
  p.add_argument("--backbone", default="srgnn")
  p.add_argument("--items", type=int, default=1345)
  p.add_argument("--dim", type=int, default=100)
  p.add_argument("--max_len", type=int, default=50)
  p.add_argument("--batch", type=int, default=100)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--skip_generation", action="store_true")
  args = p.parse_args()
  machine = common.Machine()
  result = {"host": platform.machine(), "args": vars(args)}
  if not args.skip_generation:
    result["stage1_generation"] = bench_generation(args)
  result["stage2_training"] = bench_training(args)
  result.update(machine.report())
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
