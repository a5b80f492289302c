"""Per-device memory of each LLMGR stage on a mesh, from shapes only.

  python -m sbrjax.memory_report --config=configs/llmgr_music.py \
      --mesh=data:1,fsdp:2 --device_memory_gb=80 --num_items=900 [--json]

The LLMGR parameter tree (SBR backbone, LLaMA with LoRA, f_in, f_out) is
built with ``jax.eval_shape`` only: nothing is allocated and no checkpoint or
dataset is read. The LLaMA shape comes from ``config.llm``: an HF directory's
``config.json`` when ``llm.path`` is one, else LLaMA-2-7B for ``source=hf``,
SmolLM2-135M for ``source=gguf`` and ``llm.preset`` for ``source=random``.
The catalog size comes from ``--num_items`` (the data may be absent).

For every stage of ``config.stage_order`` (its trainable labels) the report
gives ``sharding.estimate_memory``'s per-device parameter, gradient,
optimiser-state, master-copy and activation bytes at the config's training
batch size and the largest prompt length bucket, and whether they fit in
``--device_memory_gb`` (90% usable).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sbrjax import labels as labels_lib
from sbrjax import parallel
from sbrjax import sharding

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def parse_mesh(text: str) -> Dict[str, int]:
  """``"data:1,fsdp:2"`` -> ``{"data": 1, "fsdp": 2, "tensor": 1}``."""
  out = {a: 1 for a in sharding.MESH_AXES}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, _, size = part.partition(":")
    if name not in out or not size.strip().isdigit() or int(size) < 1:
      raise ValueError(f"--mesh entry {part!r} must be AXIS:SIZE with AXIS in "
                       f"{sharding.MESH_AXES} and SIZE >= 1, e.g. data:1,fsdp:2.")
    out[name] = int(size)
  return out


def llama_shape(config: ml_collections.ConfigDict):
  """The ``LlamaConfig`` (no LoRA) the config's LLM would have."""
  import os  # pylint: disable=g-import-not-at-top
  from sbrjax.models import llama as llama_lib  # pylint: disable=g-import-not-at-top
  llm = config.llm
  if llm.path and os.path.isfile(os.path.join(llm.path, "config.json")):
    cfg = llama_lib.LlamaConfig.from_hf_config(llm.path)
  elif llm.source == "hf":
    cfg = llama_lib.LlamaConfig.llama2_7b()
  elif llm.source == "gguf":
    cfg = llama_lib.LlamaConfig.smollm2_135m()
  elif llm.source == "random":
    presets = {"tiny": llama_lib.LlamaConfig.tiny,
               "smollm2_135m": llama_lib.LlamaConfig.smollm2_135m,
               "llama2_7b": llama_lib.LlamaConfig.llama2_7b}
    if llm.preset not in presets:
      raise ValueError(f"config.llm.preset={llm.preset!r}; choose one of "
                       f"{sorted(presets)}.")
    cfg = presets[llm.preset]()
    cfg = cfg.replace(vocab_size=max(cfg.vocab_size, 259))  # byte tokenizer
  else:
    raise ValueError(f"config.llm.source={llm.source!r}; choose 'gguf', 'hf' or "
                     "'random'.")
  if llm.num_layers:
    cfg = cfg.replace(num_layers=int(llm.num_layers))
  return cfg


def _dtype(config, key):
  value = config.llm[key]
  if value not in _DTYPES:
    raise ValueError(f"config.llm.{key}={value!r}; choose one of {sorted(_DTYPES)}.")
  return _DTYPES[value]


def abstract_llmgr_params(config: ml_collections.ConfigDict, num_items: int):
  """``(ShapeDtypeStruct tree of the LLMGR params, LlamaConfig)``; allocates nothing."""
  from sbrjax import train_sbr  # pylint: disable=g-import-not-at-top
  from sbrjax.models import llmgr as llmgr_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.models import lora as lora_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.data import graphs as graphs_lib  # pylint: disable=g-import-not-at-top
  import jraph  # pylint: disable=g-import-not-at-top
  if num_items < 1:
    raise ValueError(f"num_items={num_items}: pass --num_items (the dataset's item "
                     "count) since the memory report reads no data.")
  lora_cfg = lora_lib.LoraConfig(rank=int(config.lora.rank),
                                 alpha=float(config.lora.alpha),
                                 dropout=float(config.lora.dropout),
                                 targets=tuple(config.lora.targets))
  llm_cfg = llama_shape(config).replace(
      lora=lora_cfg, dtype=_dtype(config, "dtype"),
      param_dtype=_dtype(config, "frozen_dtype"), remat=bool(config.llm.remat))
  sbr_cfg = train_sbr.sbr_config(config, num_items)
  model = llmgr_lib.LLMGR(llmgr_lib.LLMGRConfig(
      sbr=sbr_cfg, llm=llm_cfg, num_items=num_items,
      head_hidden=int(config.llmgr.head_hidden)))
  b, l, s, q = 1, int(config.data.max_len), 2, 1
  n, e = b * l + 1, b * (l - 1) + 1
  i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  graph = jraph.GraphsTuple(nodes=i32(n), edges={"w_in": f32(e), "w_out": f32(e)},
                            senders=i32(e), receivers=i32(e), globals=None,
                            n_node=i32(b + 1), n_edge=i32(b + 1))
  sessions = graphs_lib.GraphBatch(graph=graph, positions=i32(b, l), lengths=i32(b),
                                   targets=i32(b),
                                   graph_mask=jax.ShapeDtypeStruct((b,), jnp.bool_),
                                   index=i32(b))
  batch = llmgr_lib.PromptBatch(
      sessions=sessions, input_ids=i32(b, 8), attention_mask=i32(b, 8),
      last_pos=i32(b), slot_pos=i32(b, s), slot_src=i32(b, s), items=i32(b, q),
      targets=i32(b), mask=jax.ShapeDtypeStruct((b,), jnp.bool_))
  params = jax.eval_shape(
      lambda bt: model.init({"params": jax.random.PRNGKey(0),
                             "dropout": jax.random.PRNGKey(1)}, bt), batch)["params"]
  # LLMGR scores items with f_out; train_llmgr drops an untied LM head.
  params = dict(params)
  params["llm"] = {k: v for k, v in params["llm"].items() if k != "lm_head"}
  return params, llm_cfg


def stage_report(params, llm_cfg, trainable, mesh_shape: Mapping[str, int],
                 rules, *, batch: int, seq_len: int, num_items: int, dtype: str,
                 remat: bool, device_memory_gb: Optional[float]) -> Dict[str, Any]:
  """``sharding.estimate_memory`` of one stage plus its parameter counts."""
  mask = jax.tree_util.tree_map_with_path(
      lambda p, _: labels_lib.param_label(p) in set(trainable), params)
  est = sharding.estimate_memory(
      params, mask, mesh_shape, rules, parallel.LLMGR_PARAM_RULES, batch=batch,
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
  params, llm_cfg = abstract_llmgr_params(config, num_items)
  rules = parallel.logical_rules(config.get("logical_axis_rules", ()))
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
