"""Sharded LLMGR training and evaluation against the single-device step and evaluator.

One subprocess with 4 simulated CPU devices builds the tiny LLMGR
(configs/llmgr_tiny.py on a synthetic ml-100k-format dataset), takes two
train steps of stage 1 (aux: node_text + contrastive prompts; LoRA, f_in,
f_out train) and of stage 2 (major: behavior prompts; SBR and f_out train)
on one device, then the same steps on sharded meshes (stage 1: data x fsdp
1x4 and data x tensor 2x2; stage 2: data x fsdp 2x2 and 4x1), evaluates with the catalog-sharded
evaluator on a 4-device mesh and the dense one, and prints one JSON line.
Batch size 8.

Tolerance: 1e-5 absolute on every parameter after two AdamW steps (lr 1e-3)
and on the loss in float32: sharding only reorders floating-point sums. The
bfloat16 run (bf16 frozen base, bf16 matmuls) checks dtypes and agrees with
its single-device twin to 2e-2 on the loss (bf16 has 8 mantissa bits).
"""

import numpy as np
import pytest

from sbrjax.parallel import distributed
from tests import conftest

_WORKER = r"""
import json, os, tempfile
import numpy as np
import jax
import jax.numpy as jnp
import ml_collections
from flax.training import train_state
from sbrjax import config as config_lib
from sbrjax.train import labels as labels_lib, optim
from sbrjax.llmgr import rules as parallel
from sbrjax.llmgr import train as train_llmgr
from sbrjax.parallel import mesh as mesh_lib
from sbrjax.parallel import state as state_lib
from sbrjax.sbr import train as train_sbr
from sbrjax.data import graphs as graphs_lib, prepared, rawfiles
from sbrjax.llmgr import examples as llmgr_data

tmp = tempfile.mkdtemp()
rows = rawfiles.synthetic_ratings(num_users=40, num_items=30, per_user=14)
rawfiles.write_grouplens_100k(tmp, rows, {i: f"Movie {i} (1990)" for i in range(1, 31)})
cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "llmgr_tiny.py"))
cfg.data.manual_dir = tmp
cfg.data.data_dir = os.path.join(tmp, "data")
data = prepared.load_prepared(cfg.data)
sbr_cfg = train_sbr.sbr_config(cfg, data.num_items)
sbr_model = train_sbr.sbr_lib.create_model(sbr_cfg)
first = graphs_lib.make_batch(graphs_lib.build_graphs(data.train, 8), np.arange(2), 2)
sbr_params = train_sbr.init_params(sbr_model, first, 0)
res = {"devices": jax.device_count()}

def build(c):
  model, params, tok = train_llmgr.build_model_and_params(c, data, sbr_cfg, sbr_params, 0)
  enc, pad = train_llmgr.make_encoder(c, data, tok)
  return model, params, enc, pad

def stage_batch(stage, enc, pad):
  if stage == "aux":
    ex = [llmgr_data.node_text_examples(data.num_items, enc, limit=4),
          llmgr_data.contrastive_examples(data.train, data.num_items, enc,
                                          num_candidates=5, max_successors=2, limit=4)]
  else:
    ex = [llmgr_data.behavior_examples(data.train, enc, limit=8)]
  b = llmgr_data.PromptBatcher(ex, max_len=8, batch_size=8,
                               length_buckets=(128, 192), pad_id=pad)
  return next(b.iterate(shuffle=False))

def optimizer(c, params, stage):
  tcfg = ml_collections.ConfigDict(c.train.to_dict())
  tcfg.learning_rate = float(c.stages[stage].learning_rate)
  sched = optim.make_schedule(tcfg, 10, 10)
  trainable = tuple(c.stages[stage].trainable)
  tx = optim.make_optimizer(tcfg, sched, params, trainable)
  return tx, sched, labels_lib.trainable_mask(params, trainable)

def host(tree):
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)).astype(np.float32), tree)

def max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in
             zip(jax.tree.leaves(host(a)), jax.tree.leaves(host(b))))

def spec(x):
  return str(tuple(x.sharding.spec))

MESHES = {"data1_fsdp4": {"data": 1, "fsdp": 4, "tensor": 1},
          "data2_fsdp2": {"data": 2, "fsdp": 2, "tensor": 1},
          "data4_fsdp1": {"data": 4, "fsdp": 1, "tensor": 1},
          "data2_tensor2": {"data": 2, "fsdp": 1, "tensor": 2}}

AUX_MESHES = ("data1_fsdp4", "data2_tensor2")
MAJOR_MESHES = ("data2_fsdp2", "data4_fsdp1")

def run(c, stage, meshes, steps=2):
  model, params, enc, pad = build(c)
  # Host copies: the donating steps delete the device buffers they are given.
  params = jax.tree.map(np.asarray, params)
  batch = stage_batch(stage, enc, pad)
  tx, sched, mask = optimizer(c, params, stage)
  out = {"batch_rows": int(batch.input_ids.shape[0])}
  state = train_state.TrainState.create(apply_fn=model.apply,
                                        params=jax.tree.map(jnp.asarray, params), tx=tx)
  step = train_llmgr.jitted_train_step(model, sched, mask, 0)
  ref_losses = []
  for _ in range(steps):
    state, m = step(state, batch)
    ref_losses.append(float(m["loss"]))
  ref = host(state.params)
  out["ref_loss"] = ref_losses
  out["changed"] = {}
  before = params
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(before)[0],
                          jax.tree.leaves(ref)):
    label = labels_lib.param_label(path)
    out["changed"][label] = out["changed"].get(label, False) or bool(np.any(a != b))
  for name, shape in meshes.items():
    mesh = mesh_lib.mesh_from_config(shape)
    sstate, shardings = state_lib.create_train_state(model.apply, params, tx, mesh,
                                                     parallel.LLMGR_LOGICAL_AXIS_RULES,
                                                     parallel.LLMGR_PARAM_RULES)
    sstep = train_llmgr.jitted_train_step(model, sched, mask, 0, mesh, shardings)
    placed = parallel.place_batch(batch, mesh)
    losses = []
    for i in range(steps):
      sstate, m = sstep(sstate, placed if i else batch)  # host batch first
      losses.append(float(m["loss"]))
    p = sstate.params
    layer = p["llm"]["layers_0"]
    out[name] = {
        "param_diff": max_diff(ref, p),
        "loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
        "loss_dtype": str(m["loss"].dtype), "grad_norm_dtype": str(m["grad_norm"].dtype),
        "dtypes": {labels_lib.path_str(k): str(v.dtype) for k, v in
                   jax.tree_util.tree_flatten_with_path(p)[0]},
        "step": int(sstate.step),
        "q_kernel_spec": spec(layer["attn"]["q_proj"]["kernel"]),
        "q_lora_b_spec": spec(layer["attn"]["q_proj"]["lora"]["b"]),
        "down_kernel_spec": spec(layer["mlp"]["down_proj"]["kernel"]),
        "f_out_kernel_spec": spec(p["f_out"]["out"]["kernel"]),
        "embed_spec": spec(p["llm"]["embed_tokens"]["embedding"]),
        "input_ids_spec": spec(placed.input_ids),
        "graph_nodes_spec": spec(placed.sessions.graph.nodes),
        "input_ids_shard_rows": int(placed.input_ids.addressable_shards[0].data.shape[0]),
    }
    if stage == "aux":
      mu = [x for k, x in jax.tree_util.tree_flatten_with_path(sstate.opt_state)[0]
            if "q_proj/lora/b" in labels_lib.path_str(k)]
      out[name]["opt_q_lora_b_spec"] = spec(mu[0])
  return out

# Each stage on the meshes whose layouts it adds (compiles dominate the cost):
# stage 1 on pure FSDP and on data x tensor, stage 2 on data x fsdp and pure data.
res["aux"] = run(cfg, "aux", {k: MESHES[k] for k in AUX_MESHES})
res["major"] = run(cfg, "major", {k: MESHES[k] for k in MAJOR_MESHES})

# bf16 compute, bf16 frozen base, float32 trainable leaves.
bcfg = ml_collections.ConfigDict(cfg.to_dict())
bcfg.llm.dtype = "bfloat16"
bcfg.llm.frozen_dtype = "bfloat16"
res["bf16_aux"] = run(bcfg, "aux", {"data2_fsdp2": MESHES["data2_fsdp2"]})

# A batch that does not divide over the batch axes is refused clearly.
model, params, enc, pad = build(cfg)
b6 = llmgr_data.PromptBatcher([llmgr_data.behavior_examples(data.train, enc, limit=6)],
                              max_len=8, batch_size=6, length_buckets=(128, 192),
                              pad_id=pad)
try:
  parallel.place_batch(next(b6.iterate(shuffle=False)), mesh_lib.mesh_from_config(
      {"data": 4, "fsdp": 1, "tensor": 1}))
  res["bad_batch_error"] = ""
except ValueError as e:
  res["bad_batch_error"] = str(e)

# The catalog-sharded evaluator (4 devices) against the dense one: the test
# split in batches of 8 (the last one padded), sampled and full ranks.
ev_batcher = llmgr_data.PromptBatcher([llmgr_data.behavior_examples(data.test, enc)],
                                      max_len=8, batch_size=8, length_buckets=(128, 192),
                                      pad_id=pad)
ks = (1, 5, 10)
dense, dense_rows = train_llmgr.make_evaluator(model, ks)(params, ev_batcher,
                                                          return_examples=True)
ev_mesh = mesh_lib.mesh_from_config({"data": 4, "fsdp": 1, "tensor": 1})
sparams = state_lib.place(params, state_lib.tree_shardings_of(
    params, ev_mesh, parallel.LLMGR_LOGICAL_AXIS_RULES, parallel.LLMGR_PARAM_RULES))
sharded, sharded_rows = train_llmgr.make_evaluator(model, ks, ev_mesh)(
    sparams, ev_batcher, return_examples=True)
res["eval"] = {"count": dense["count"], "examples": len(ev_batcher),
               "metric_diff": max(abs(dense[k] - sharded[k]) for k in dense),
               "keys_equal": sorted(dense) == sorted(sharded),
               "ranks_equal": all(np.array_equal(dense_rows[k], sharded_rows[k])
                                  for k in dense_rows if k != "top/scores"),
               "top_scores_diff": float(np.max(np.abs(dense_rows["top/scores"] -
                                                      sharded_rows["top/scores"]))),
               "rank_keys": sorted(dense_rows)}
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def worker():
  import os  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return distributed.run_python(f"REPO = {repo!r}\n" + _WORKER,
                                num_cpu_devices=4, timeout=900,
                                xla_flags=conftest.SUBPROCESS_XLA_FLAGS)


pytestmark = pytest.mark.slow  # one ~2 CPU-minute subprocess (compiles dominate)


def test_worker_sees_four_devices(worker):
  assert worker["devices"] == 4


@pytest.mark.parametrize("stage,mesh", [("aux", "data1_fsdp4"), ("aux", "data2_tensor2"),
                                        ("major", "data2_fsdp2"), ("major", "data4_fsdp1")])
def test_sharded_step_equals_single_device_step(worker, stage, mesh):
  got = worker[stage][mesh]
  assert got["param_diff"] < 1e-5, got["param_diff"]
  assert got["loss_diff"] < 1e-5, got["loss_diff"]
  assert got["step"] == 2
  assert worker[stage]["batch_rows"] == 8


@pytest.mark.parametrize("stage,trained", [("aux", {"lora", "f_in", "f_out"}),
                                           ("major", {"sbr", "f_out"})])
def test_reference_step_trains_only_the_stage_labels(worker, stage, trained):
  changed = {k for k, v in worker[stage]["changed"].items() if v}
  assert changed == trained


def test_parameters_and_batch_are_sharded_as_the_rules_say(worker):
  # Specs name mesh axes, size-1 ones included.
  fsdp4 = worker["aux"]["data1_fsdp4"]
  assert fsdp4["q_kernel_spec"] == "('fsdp', 'tensor')"  # [embed, heads]
  assert fsdp4["down_kernel_spec"] == "('tensor', 'fsdp')"  # [mlp, embed]
  assert fsdp4["embed_spec"] == "('tensor', 'fsdp')"  # [vocab, embed]
  assert fsdp4["f_out_kernel_spec"] == "('fsdp', ('data', 'tensor'))"
  assert fsdp4["opt_q_lora_b_spec"] == fsdp4["q_lora_b_spec"] == "(None, 'tensor')"
  assert fsdp4["input_ids_spec"] == "(('data', 'fsdp'), None)"
  assert fsdp4["input_ids_shard_rows"] == 2
  assert fsdp4["graph_nodes_spec"] == "()"
  tensor = worker["aux"]["data2_tensor2"]
  assert tensor["embed_spec"] == "(None, 'fsdp')"  # vocab 259 does not split by 2
  # 30 items do not split over data x tensor = 4: the catalog falls back to data.
  assert tensor["f_out_kernel_spec"] == "('fsdp', 'data')"
  assert tensor["input_ids_shard_rows"] == 4


def test_float32_step_keeps_float32_everywhere(worker):
  got = worker["major"]["data2_fsdp2"]
  assert set(got["dtypes"].values()) == {"float32"}
  assert got["loss_dtype"] == "float32"


def test_bf16_step_keeps_bf16_base_and_float32_trainable_leaves(worker):
  got = worker["bf16_aux"]["data2_fsdp2"]
  for path, dtype in got["dtypes"].items():
    base = path.startswith("llm/") and "/lora/" not in path
    assert dtype == ("bfloat16" if base else "float32"), (path, dtype)
  assert got["loss_dtype"] == "float32" and got["grad_norm_dtype"] == "float32"
  assert got["loss_diff"] < 2e-2
  assert np.isfinite(worker["bf16_aux"]["ref_loss"]).all()


def test_indivisible_batch_is_refused_naming_the_fix(worker):
  msg = worker["bad_batch_error"]
  assert "batch size 6" in msg and "multiple of 4" in msg


def test_catalog_sharded_evaluator_equals_the_dense_one(worker):
  ev = worker["eval"]
  assert ev["count"] == ev["examples"] > 8  # several batches, the last one padded
  assert ev["keys_equal"] and ev["metric_diff"] == 0.0
  assert ev["ranks_equal"]
  assert {"rank/full", "rank/sampled", "index", "target", "top/items"} <= set(ev["rank_keys"])
  assert ev["top_scores_diff"] < 1e-5  # top items (sharded_topk) equal above, scores close
