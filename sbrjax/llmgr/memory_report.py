"""Per-device memory of each LLMGR stage on a mesh, from shapes only.

  python -m sbrjax.llmgr.memory_report --config=configs/llmgr_music.py \
      --mesh=data:1,fsdp:2 --device_memory_gb=80 --num_items=900 [--json]

The LLMGR parameter tree (SBR backbone, LLaMA with LoRA, f_in, f_out) is
the trainer's: ``jax.eval_shape`` of the same functions (the LLaMA and
backbone inits, ``sbrjax.llmgr.model.assemble_params``), so nothing is
allocated and no checkpoint or dataset is read. The LLaMA shape comes from
``sbrjax.llm.llm_config`` (an HF directory's ``config.json``, a GGUF file's
metadata, LLaMA-2-7B for ``source=hf`` without a directory, SmolLM2-135M for
``source=gguf`` without a file, ``llm.preset`` for ``source=random``).
The catalog size comes from ``--num_items`` (the data may be absent).

For every stage of ``config.stage_order`` (its trainable labels) the report
gives ``sbrjax.parallel.estimate.estimate_memory``'s per-device parameter, gradient,
optimiser-state, master-copy and activation bytes at the config's training
batch size and the largest prompt length bucket, and whether they fit in
``--device_memory_gb`` (90% usable).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

import jax
import ml_collections
import numpy as np

from sbrjax import llm as llm_api
from sbrjax.data import graphs as graphs_lib
from sbrjax.llmgr import model as model_lib
from sbrjax.llmgr import rules as llmgr_rules
from sbrjax.llmgr import train as llmgr_train
from sbrjax.parallel import estimate as estimate_lib
from sbrjax.parallel import mesh as mesh_lib
from sbrjax.sbr import train as sbr_train
from sbrjax.train import labels as labels_lib


def parse_mesh(text: str) -> Dict[str, int]:
  """``"data:1,fsdp:2"`` -> ``{"data": 1, "fsdp": 2, "tensor": 1}``."""
  out = {a: 1 for a in mesh_lib.MESH_AXES}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, _, size = part.partition(":")
    if name not in out or not size.strip().isdigit() or int(size) < 1:
      raise ValueError(f"--mesh entry {part!r} must be AXIS:SIZE with AXIS in "
                       f"{mesh_lib.MESH_AXES} and SIZE >= 1, e.g. data:1,fsdp:2.")
    out[name] = int(size)
  return out


def abstract_llmgr_params(config: ml_collections.ConfigDict, num_items: int):
  """``(ShapeDtypeStruct tree of the LLMGR params, LLMGRConfig)``; allocates nothing.

  The same functions build the trainer's tree (``sbrjax.llmgr.train``), here
  under ``jax.eval_shape``.
  """
  if num_items < 1:
    raise ValueError(f"num_items={num_items}: pass --num_items (the dataset's item "
                     "count) since the memory report reads no data.")
  spec = llm_api.LLMSpec.from_config(config.llm)
  llm_cfg = llm_api.llm_config(spec)
  base = jax.eval_shape(lambda: llm_api.init_llm_params(llm_cfg, 0))
  sbr_cfg = sbr_train.sbr_config(config, num_items)
  sbr_model = sbr_train.sbr_lib.create_model(sbr_cfg)
  probe = graphs_lib.probe_batch(int(config.data.max_len))
  sbr_params = jax.eval_shape(lambda: sbr_train.init_params(sbr_model, probe, 0))["sbr"]
  model_cfg = llmgr_train.model_config(config, sbr_cfg, llm_cfg, num_items)
  params = jax.eval_shape(lambda b, s: model_lib.assemble_params(model_cfg, b, s, 0),
                          base, sbr_params)
  return params, model_cfg


def stage_report(params, llm_cfg, trainable, mesh_shape: Mapping[str, int],
                 rules, *, batch: int, seq_len: int, num_items: int, dtype: str,
                 remat: bool, device_memory_gb: Optional[float]) -> Dict[str, Any]:
  """``estimate_memory`` of one stage plus its parameter counts."""
  mask = jax.tree_util.tree_map_with_path(
      lambda p, _: labels_lib.param_label(p) in set(trainable), params)
  est = estimate_lib.estimate_memory(
      params, mask, mesh_shape, rules, llmgr_rules.LLMGR_PARAM_RULES, batch=batch,
      seq_len=seq_len, hidden=llm_cfg.hidden_size, layers=llm_cfg.num_layers,
      num_heads=llm_cfg.num_heads, dtype=dtype, num_items=num_items,
      remat=remat,
      device_memory_bytes=(None if device_memory_gb is None
                           else int(device_memory_gb * 2**30)))
  leaves = jax.tree.leaves(params)
  flags = jax.tree.leaves(mask)
  est["num_params"] = int(sum(int(np.prod(x.shape)) for x in leaves))
  est["num_trainable"] = int(sum(int(np.prod(x.shape))
                                 for x, t in zip(leaves, flags) if t))
  est["trainable"] = list(trainable)
  return est


def report(config: ml_collections.ConfigDict, mesh_shape: Mapping[str, int],
           num_items: int, device_memory_gb: Optional[float] = None,
           batch: Optional[int] = None, seq_len: Optional[int] = None) -> Dict[str, Any]:
  """The per-stage estimates as a dict (what ``--json`` prints)."""
  params, model_cfg = abstract_llmgr_params(config, num_items)
  llm_cfg = model_cfg.llm
  rules = llmgr_rules.logical_rules(config.get("logical_axis_rules", ()))
  batch = int(batch or config.train.batch_size)
  seq_len = int(seq_len or max(config.llmgr.length_buckets))
  out = {"mesh": dict(mesh_shape), "num_items": num_items, "batch": batch,
         "seq_len": seq_len, "dtype": config.llm.dtype,
         "frozen_dtype": config.llm.frozen_dtype, "remat": bool(config.llm.remat),
         "llm": {"hidden": llm_cfg.hidden_size, "layers": llm_cfg.num_layers,
                 "heads": llm_cfg.num_heads, "vocab": llm_cfg.vocab_size},
         "device_memory_gb": device_memory_gb, "stages": {}}
  for name in config.stage_order:
    out["stages"][name] = stage_report(
        params, llm_cfg, tuple(config.stages[name].trainable), mesh_shape, rules,
        batch=batch, seq_len=seq_len, num_items=num_items, dtype=config.llm.dtype,
        remat=bool(config.llm.remat), device_memory_gb=device_memory_gb)
  return out


def format_report(rep: Dict[str, Any]) -> str:
  """A human-readable table of :func:`report`'s dict."""
  gib = lambda x: f"{x / 2**30:9.3f}"
  lines = [f"mesh {rep['mesh']}  batch {rep['batch']}  prompt length {rep['seq_len']}  "
           f"compute {rep['dtype']}  frozen {rep['frozen_dtype']}  remat {rep['remat']}  "
           f"items {rep['num_items']}  LLM {rep['llm']}",
           f"{'stage':<8}{'params':>10}{'grads':>10}{'optim':>10}{'master':>10}"
           f"{'activ':>10}{'total':>10}  (GiB per device)  fits"]
  for name, st in rep["stages"].items():
    fits = st.get("fits")
    lines.append(f"{name:<8}" + "".join(
        f"{gib(st[k]):>10}" for k in ("params", "grads", "optimizer", "master",
                                      "activations", "total"))
                 + f"  {'-' if fits is None else ('yes' if fits else 'NO')}"
                 f"  trainable {st['trainable']} ({st['num_trainable']:,} of "
                 f"{st['num_params']:,})")
  return "\n".join(lines)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise ValueError(f"Unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  rep = report(f.config, parse_mesh(f.mesh), f.num_items,
               f.device_memory_gb if f.device_memory_gb > 0 else None,
               batch=f.batch or None, seq_len=f.seq_len or None)
  print(json.dumps(rep) if f.json else format_report(rep))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "LLMGR config file (configs/*.py).",
                                  lock_config=True)
  flags.DEFINE_string("mesh", "data:1", "Mesh axis sizes, e.g. data:1,fsdp:2,tensor:1.")
  flags.DEFINE_integer("num_items", 0, "Catalog size (the data is not read).")
  flags.DEFINE_float("device_memory_gb", 0.0, "Per-device memory in GiB; 0: no fit check.")
  flags.DEFINE_integer("batch", 0, "Global batch; 0: config.train.batch_size.")
  flags.DEFINE_integer("seq_len", 0, "Prompt length; 0: largest config.llmgr.length_buckets.")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
  flags.mark_flags_as_required(["config"])
  app.run(main)
