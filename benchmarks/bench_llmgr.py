"""LLMGR throughput at the embedded default's scale, and LLaMA-2-7B LLMGR sizes.

Prints JSON: prompts/s of a stage-1 (aux) train step, a stage-2 (major) train
step and evaluation for configs/llmgr_ml100k.py (the paper head; the embedded
default, configs/llmgr_residual_tuned_ml100k.py, differs in its item head, a
d x |V| product either way, and in per-label learning rates, which cost
nothing; real SmolLM2 weights and
tokenizer, real ml-100k prompts; medians over steps after compilation), with
where a step's time goes: the forward pass alone (``*_forward_prompts_per_s``;
the rest of a step is the backward pass and the update), XLA's FLOP count
per prompt, the fraction of prompt positions that are padding at the
batch's length bucket (compute spent on nothing) and the minor page faults
per step. ``profile_llmgr.py`` breaks a step down per HLO op. Then,
for the LLaMA-2-7B configuration (configs/llmgr_music.py shapes), the
parameter count, trainable parameters per stage and bytes, from the memory
report's ``jax.eval_shape`` of the trainer's own parameter tree (nothing
allocated). Train-step throughput is also given in GFLOP/s (XLA's count) and
as a fraction of a matmul peak timed in the same process.

``--full_pass`` times the same steps again with ``llmgr.shared_prefix=False``
(each row's whole prompt through the LLM, how steps ran before that option)
and prints the default's speed-ups over it.

``--bf16`` times the same steps again with ``llm.dtype`` and ``llm.frozen_dtype``
set to bfloat16 in the same process (bf16 operands, float32 accumulation:
``sbrjax.models.lora.matmul``) and prints the speed-ups over float32 and the
fraction of a bf16 matmul peak.

  python benchmarks/bench_llmgr.py [--steps 5] [--num_items 900] [--bf16] [--full_pass]
"""

import argparse
import json
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
from flax.training import train_state

import common
from sbrjax import config as config_lib
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import prepared
from sbrjax.llmgr import examples as llmgr_data
from sbrjax.llmgr import memory_report
from sbrjax.llmgr import train as train_llmgr
from sbrjax.models import sbr as sbr_lib
from sbrjax.sbr import train as train_sbr
from sbrjax.train import labels as labels_lib
from sbrjax.train import optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BF16 = ("llm.dtype=bfloat16", "llm.frozen_dtype=bfloat16")
FULL_PASS = ("llmgr.shared_prefix=False",)


def _median_step_time(fn, batches):
  fn(batches[0])  # compile
  times = []
  for b in batches[1:]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(b))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def setup(steps: int, overrides=()):
  """configs/llmgr_ml100k.py's model, parameters, prompt encoder and the stages' prompts.

  ``overrides``: ("llm.dtype=bfloat16", ...) applied like ``--config.KEY=VALUE``.
  """
  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "llmgr_ml100k.py"))
  for item in overrides:
    key, value = item.split("=", 1)
    config_lib.check_override(cfg, key)
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
      node = node[part]
    old = node[leaf]
    if isinstance(old, bool):  # bool("False") is True
      node[leaf] = value.lower() in ("1", "true")
    else:
      node[leaf] = type(old)(value)
  data = prepared.load_prepared(cfg.data)
  sbr_cfg = train_sbr.sbr_config(cfg, data.num_items)
  sbr_model = sbr_lib.create_model(sbr_cfg)
  sbr_params = train_sbr.init_params(sbr_model, graphs_lib.probe_batch(cfg.data.max_len), 0)
  model, params, tok = train_llmgr.build_model_and_params(cfg, data, sbr_cfg, sbr_params, 0)
  enc, pad = train_llmgr.make_encoder(cfg, data, tok)
  g, bs = cfg.llmgr, int(cfg.train.batch_size)
  n = bs * (steps + 1)
  tasks = {
      "aux": [llmgr_data.node_text_examples(data.num_items, enc, limit=n // 2),
              llmgr_data.contrastive_examples(data.train, data.num_items, enc,
                                              num_candidates=g.num_candidates,
                                              max_successors=g.max_successors, limit=n // 2,
                                              mode=g.contrastive)],
      "major": [llmgr_data.behavior_examples(data.train, enc, limit=n)],
  }
  return cfg, data, model, params, enc, pad, tasks


def stage_step(cfg, model, params, pad, stage, examples, steps):
  """(run(batch) -> metrics, the jitted step, its state holder, same-shape batches)."""
  g, bs = cfg.llmgr, int(cfg.train.batch_size)
  batcher = llmgr_data.PromptBatcher(examples, max_len=cfg.data.max_len, batch_size=bs,
                                     length_buckets=g.length_buckets, pad_id=pad)
  # One bucket for every timed batch, so the median times one compiled shape.
  batches = list(batcher.iterate(shuffle=True, seed=0))[:steps + 1]
  width = max(b.input_ids.shape[1] for b in batches)
  batches = [b for b in batches if b.input_ids.shape[1] == width]
  trainable = tuple(cfg.stages[stage].trainable)
  sched = optim.make_schedule(cfg.train, 10, 100)
  tx = optim.make_optimizer(cfg.train, sched, params, trainable,
                            cfg.stages[stage].label_learning_rates.to_dict())
  mask = labels_lib.trainable_mask(params, trainable)
  step = train_llmgr.jitted_train_step(model, sched, mask, 0)
  holder = {"state": train_state.TrainState.create(
      apply_fn=model.apply, params=jax.tree_util.tree_map(jnp.copy, params), tx=tx)}

  def run(batch):
    holder["state"], metrics = step(holder["state"], batch)
    return metrics

  return run, step, holder, batches


def default_throughput(steps: int, overrides=()):
  cfg, data, model, params, enc, pad, tasks = setup(steps, overrides)
  g, bs = cfg.llmgr, int(cfg.train.batch_size)
  out = {"config": "configs/llmgr_ml100k.py", "overrides": list(overrides), "batch": bs,
         "llm_layers": model.config.llm.num_layers, "backend": jax.default_backend()}
  for stage, examples in tasks.items():
    run, step, holder, batches = stage_step(cfg, model, params, pad, stage, examples, steps)
    width = batches[0].input_ids.shape[1]
    sec = _median_step_time(run, batches)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for b in batches[1:]:
      jax.block_until_ready(run(b))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (len(batches) - 1)
    cost = step.lower(holder["state"], batches[0]).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    forward = jax.jit(lambda p, b: model.apply({"params": p}, b))
    fwd_sec = _median_step_time(lambda b: forward(params, b), batches)
    real = sum(int(b.attention_mask[b.mask].sum()) for b in batches)
    slots = sum(int(b.mask.sum()) * b.input_ids.shape[1] for b in batches)
    out[f"{stage}_train_prompts_per_s"] = bs / sec
    out[f"{stage}_forward_prompts_per_s"] = bs / fwd_sec
    out[f"{stage}_train_gflops"] = float(cost["flops"]) / sec / 1e9
    out[f"{stage}_train_gflop_per_prompt"] = float(cost["flops"]) / bs / 1e9
    out[f"{stage}_prompt_tokens"] = width
    out[f"{stage}_padding_fraction"] = 1.0 - real / slots
    out[f"{stage}_timed_steps"] = len(batches) - 1
    # Leading tokens every prompt of the stage shares, run once per batch when
    # llmgr.shared_prefix is on (0: none long enough).
    out[f"{stage}_shared_prefix_tokens"] = (
        int(batches[0].prefix_ids.shape[1])
        if model.config.shared_prefix and batches[0].prefix_ids is not None else 0)
    # Minor page faults per compiled step (a second pass over the timed batches):
    # XLA's CPU temp buffer is allocated per step; glibc maps allocations above
    # 32 MiB fresh, so each step touches new pages.
    out[f"{stage}_page_faults_per_step"] = faults

  ev_batcher = llmgr_data.PromptBatcher(
      [llmgr_data.behavior_examples(data.test, enc, limit=int(cfg.eval.batch_size) * 3)],
      max_len=cfg.data.max_len, batch_size=int(cfg.eval.batch_size),
      length_buckets=g.length_buckets, pad_id=pad)

  @jax.jit
  def eval_logits(p, batch):
    return model.apply({"params": p}, batch)

  batches = list(ev_batcher.iterate(shuffle=False))
  sec = _median_step_time(lambda b: eval_logits(params, b), [batches[0]] + batches)
  out["eval_prompts_per_s"] = int(cfg.eval.batch_size) / sec
  return out


def llama2_7b_sizes(num_items: int):
  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "llmgr_music.py"))
  shapes, _ = memory_report.abstract_llmgr_params(cfg, num_items)
  per_label = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    label = labels_lib.param_label(path)
    count, nbytes = per_label.get(label, (0, 0))
    per_label[label] = (count + leaf.size, nbytes + leaf.size * leaf.dtype.itemsize)
  total = sum(c for c, _ in per_label.values())
  out = {"llama2_7b_llmgr_params": total, "num_items": num_items,
         "params_by_label": {k: v[0] for k, v in sorted(per_label.items())},
         "param_bytes": sum(v[1] for v in per_label.values())}
  for stage, st in cfg.stages.items():
    trainable = sum(per_label[t][0] for t in st.trainable if t in per_label)
    out[f"{stage}_trainable_params"] = trainable
    # AdamW: two float32 moments per trainable parameter, float32 gradients.
    out[f"{stage}_optimizer_state_bytes"] = 8 * trainable
    out[f"{stage}_gradient_bytes"] = 4 * trainable
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--num_items", type=int, default=900,
                      help="catalog size for the LLaMA-2-7B sizes (Music 2014 5-core: 900)")
  parser.add_argument("--skip_default", action="store_true")
  parser.add_argument("--bf16", action="store_true",
                      help="also time llm.dtype=llm.frozen_dtype=bfloat16 in the same process "
                           "(key 'bfloat16', speed-ups over float32 in 'bfloat16_speedup')")
  parser.add_argument("--full_pass", action="store_true",
                      help="also time llmgr.shared_prefix=False (every row's whole prompt "
                           "through the LLM, as before that option) in the same process "
                           "(key 'full_pass', speed-ups of the default in "
                           "'shared_prefix_speedup')")
  args = parser.parse_args()
  machine = common.Machine()
  out = {} if args.skip_default else default_throughput(args.steps)
  for key in [k for k in out if k.endswith("_train_gflops")]:
    out[key.replace("_gflops", "_fraction_of_matmul_peak")] = out[key] / machine.peak
  if args.bf16 and not args.skip_default:
    bf16_peak = common.matmul_peak(dtype=jnp.bfloat16)
    low = default_throughput(args.steps, BF16)
    for key in [k for k in low if k.endswith("_train_gflops")]:
      low[key.replace("_gflops", "_fraction_of_bf16_matmul_peak")] = low[key] / bf16_peak
    low["bf16_matmul_peak_gflops"] = bf16_peak
    out["bfloat16"] = low
    out["bfloat16_speedup"] = {k: low[k] / out[k] for k in out if k.endswith("_prompts_per_s")}
  if args.full_pass and not args.skip_default:
    full = default_throughput(args.steps, FULL_PASS)
    out["full_pass"] = full
    out["shared_prefix_speedup"] = {k: out[k] / full[k] for k in out
                                    if k.endswith("_prompts_per_s")}
  out.update(llama2_7b_sizes(args.num_items))
  out.update(machine.report())
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
