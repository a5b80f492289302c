"""Training throughput of the SBR backbones on ml-100k (LLMGR protocol).

Every backbone registered in ``sbrjax.models.sbr.BACKBONES`` (graph and
sequence) runs by default; ``--models`` picks some. A backbone's own settings
(dropouts, Caser's L, GC-SAN's blocks, ...) come from the ``sbr`` section of
``configs/<name>_ml100k.py`` where that file exists (else the base config);
``--batch`` and ``--embed`` override batch size and width for all.

For each backbone: the jitted train step of ``sbrjax.sbr.train`` (the same
function the trainer runs: donated state, Adam + L2) is compiled once, then

  * ``step_s``: median seconds of a fixed number of steps on batches already
    assembled (the step alone);
  * ``host_batch_s``: median seconds to assemble one batch on the host
    (``graphs.make_batch``; the trainer overlaps it with the step through
    the prefetch thread);
  * ``epoch_s``: one full epoch through ``graphs.iterate_batches`` (shuffled,
    prefetch on), as the trainer runs it, without evaluation;
  * ``gflops``: XLA's FLOP count of the compiled step (``cost_analysis``)
    divided by ``step_s``, against ``matmul_peak_gflops``, a jitted
    2048 x 2048 float32 matmul timed in the same process.

The machine may be shared: the 1-minute load average is printed before and
after, and every time is a median. Prints one JSON object.

  python benchmarks/bench_sbr.py            # batch 1024, embed 64, every backbone
  python benchmarks/bench_sbr.py --models=srgnn,gru4rec
  python benchmarks/bench_sbr.py --quick    # smoke run, no full epoch
"""

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

import common
from sbrjax import config as config_lib
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import prepared
from sbrjax.models import sbr as sbr_lib
from sbrjax.sbr import train as train_sbr
from sbrjax.train import optim


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def backbone_config(backbone, args):
  """The base config with the backbone's ``sbr`` section from its ml-100k config file."""
  cfg = config_lib.base_config(locked=False)
  path = os.path.join(CONFIGS, f"{backbone}_ml100k.py")
  if os.path.exists(path):
    cfg.sbr = config_lib.load_config_file(path).sbr
  cfg.sbr.backbone = backbone
  cfg.sbr.embed_dim = args.embed
  cfg.train.batch_size = args.batch
  return cfg


def build(backbone, data, graphs, args):
  """(model, state, jitted train step, host batches, steps per epoch) of a backbone.

  ``args.steps + 1`` batches of ``args.batch`` examples, drawn as the trainer
  draws them (shuffled, node cap "auto"); the step is the trainer's own.
  """
  cfg = backbone_config(backbone, args)
  sbr_cfg = train_sbr.sbr_config(cfg, data.num_items)
  model = sbr_lib.create_model(sbr_cfg)
  bs = args.batch
  steps_per_epoch = graphs_lib.num_batches(graphs, bs, shuffle=True, node_cap="auto")
  batches = graphs_lib.iterate_batches(graphs, bs, shuffle=True, seed=1, prefetch=0)
  host = [next(batches) for _ in range(args.steps + 1)]
  params = train_sbr.init_params(model, host[0], 0)
  schedule = optim.make_schedule(cfg.train, steps_per_epoch, steps_per_epoch * 30)
  tx = optim.make_optimizer(cfg.train, schedule, params, trainable=("sbr",))
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  # An int32 array step from the start: TrainState.create's Python int 0
  # would make the second call compile the step again.
  state = state.replace(step=jnp.zeros((), jnp.int32))
  step = train_sbr.jitted_train_step(model, schedule, 0)
  return model, state, step, host, steps_per_epoch


def bench_backbone(backbone, data, graphs, args):
  _, state, step, host, steps_per_epoch = build(backbone, data, graphs, args)
  bs = args.batch
  t0 = time.perf_counter()
  compiled = step.lower(state, host[0]).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost["flops"])

  order = np.random.default_rng(0).permutation(len(graphs))
  cap = graphs_lib.node_cap_for(graphs, bs)
  host_batch_s = common.median_time(
      lambda: graphs_lib.make_batch(graphs, order[:bs], bs, cap), 5)

  # Numpy batches, as the trainer feeds them (on CPU the copy is negligible).
  state, _ = step(state, host[0])  # warm-up (and the only compile)
  jax.block_until_ready(state)
  times = []
  for b in host[1:]:
    t0 = time.perf_counter()
    state, metrics = step(state, b)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)

  out = {"batch_size": bs, "embed_dim": args.embed,
         "node_cap": cap, "worst_case_nodes": bs * graphs.max_len,
         "steps_per_epoch": steps_per_epoch, "compile_s": compile_s,
         "flops_per_step": flops, "timed_steps": len(times), "step_s": step_s,
         "step_s_min": min(times), "host_batch_s": host_batch_s,
         "examples_per_s": bs / step_s, "gflops": flops / step_s / 1e9,
         "epoch_s_from_steps": step_s * steps_per_epoch,
         "loss": float(metrics["loss"])}
  if not (args.quick or args.skip_epoch):
    t0 = time.perf_counter()
    for batch in graphs_lib.iterate_batches(graphs, bs, shuffle=True, seed=0, epoch=1):
      state, metrics = step(state, batch)
    jax.block_until_ready(state)
    epoch_s = time.perf_counter() - t0
    out.update(epoch_s=epoch_s, epoch_examples_per_s=len(graphs) / epoch_s)
  assert step._cache_size() == 1, "the train step was recompiled"  # pylint: disable=protected-access
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: batch 256, 3 timed steps, no full epoch")
  parser.add_argument("--skip_epoch", action="store_true",
                      help="time --steps steps only (epoch_s_from_steps), no full epoch")
  parser.add_argument("--batch", type=int, default=None, help="default 1024 (quick: 256)")
  parser.add_argument("--embed", type=int, default=64)
  parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10)")
  parser.add_argument("--models", default=",".join(sbr_lib.BACKBONES),
                      help="comma-separated backbones (default: every registered one)")
  args = parser.parse_args()
  unknown = [m for m in args.models.split(",") if m not in sbr_lib.BACKBONES]
  if unknown:
    parser.error(f"--models: unknown backbone(s) {', '.join(unknown)}; choose from "
                 f"{', '.join(sbr_lib.BACKBONES)}")
  args.batch = args.batch or (256 if args.quick else 1024)
  args.steps = args.steps or (3 if args.quick else 10)

  machine = common.Machine()
  cfg = config_lib.base_config()
  data = prepared.load_prepared(cfg.data)
  graphs = graphs_lib.build_graphs(data.train, int(cfg.data.max_len))
  peak = machine.peak
  result = {"dataset": data.name, "protocol": data.protocol,
            "train_examples": len(graphs), "num_items": data.num_items,
            "max_len": graphs.max_len, "mean_nodes": float(graphs.n_node.mean()),
            "models": {}}
  for name in args.models.split(","):
    r = bench_backbone(name, data, graphs, args)
    r["fraction_of_matmul_peak"] = r["gflops"] / peak
    result["models"][name] = r
  result.update(machine.report())
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
