"""Where an SBR backbone's train step's time goes, per HLO op.

Builds the step ``bench_sbr.py`` times (the trainer's jitted step, batch 1024,
d = 64, the backbone's ``sbr`` section from ``configs/<name>_ml100k.py``),
traces ``--repeats`` steps with ``jax.profiler`` and prints JSON from
``sbrjax.train.xla_profile`` per backbone: time per step by phase (forward /
backward / other = optimizer), by kind of op (dot, elementwise, reduce,
copy/transpose, gather/scatter), and the top ops with their JAX op names.

  python benchmarks/profile_sbr.py --models=gcegnn [--repeats 3] [--top 12]
"""

import argparse
import json

import jax

import bench_sbr
import common
from sbrjax import config as config_lib
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import prepared
from sbrjax.models import sbr as sbr_lib
from sbrjax.train import xla_profile


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", required=True, help="comma-separated backbones")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--top", type=int, default=12)
  parser.add_argument("--batch", type=int, default=1024)
  parser.add_argument("--embed", type=int, default=64)
  args = parser.parse_args()
  unknown = [m for m in args.models.split(",") if m not in sbr_lib.BACKBONES]
  if unknown:
    parser.error(f"--models: unknown backbone(s) {', '.join(unknown)}; choose from "
                 f"{', '.join(sbr_lib.BACKBONES)}")
  if args.repeats < 2:
    parser.error("--repeats must be at least 2 (the first traced step is not counted)")
  args.steps = args.repeats
  machine = common.Machine()
  cfg = config_lib.base_config()
  data = prepared.load_prepared(cfg.data)
  graphs = graphs_lib.build_graphs(data.train, int(cfg.data.max_len))
  out = {"batch": args.batch, "embed_dim": args.embed, "models": {}}
  for name in args.models.split(","):
    _, state, step, host, _ = bench_sbr.build(name, data, graphs, args)
    text = step.lower(state, host[0]).compile().as_text()
    holder = {"state": step(state, host[0])[0]}  # compile and warm up
    jax.block_until_ready(holder["state"])
    it = iter(host[1:] * 2)

    def run():
      holder["state"], metrics = step(holder["state"], next(it))
      return holder["state"], metrics

    out["models"][name] = xla_profile.profile_step(run, text, args.repeats, top=args.top)
  out.update(machine.report())
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
