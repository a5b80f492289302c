"""sbrjax.llmgr.memory_report: shapes-only per-device memory of the LLMGR stages."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from sbrjax import config as config_lib
from sbrjax.llmgr import config as llmgr_config_lib
from sbrjax.train import labels as labels_lib
from sbrjax.llmgr import memory_report
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import prepared
from sbrjax.llmgr import rules as parallel
from sbrjax.llmgr import train as train_llmgr
from sbrjax.parallel import rules as sharding
from sbrjax.sbr import train as train_sbr

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESH = {"data": 1, "fsdp": 2, "tensor": 2}


@pytest.fixture(scope="module")
def tiny():
  return config_lib.load_config_file(os.path.join(REPO, "configs", "llmgr_tiny.py"))


def _expected(params, trainable, mesh):
  """Leaf-by-leaf: bytes of each local shard, grads/moments of trainable leaves."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  logical = jax.tree.leaves(
      sharding.logical_axes_from_rules(params, parallel.LLMGR_PARAM_RULES),
      is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
  out = dict(params=0, grads=0, optimizer=0)
  for (path, x), names in zip(flat, logical):
    spec = sharding.logical_to_mesh_spec(names, parallel.LLMGR_LOGICAL_AXIS_RULES,
                                         mesh, x.shape)
    shards = sharding.num_shards(spec, mesh)
    size = math.prod(x.shape)
    assert size % shards == 0, path  # tiny dims all divide: exact division
    out["params"] += size * np.dtype(x.dtype).itemsize // shards
    if labels_lib.param_label(path) in trainable:
      out["grads"] += 4 * size // shards
      out["optimizer"] += 8 * size // shards
  return out


@pytest.mark.parametrize("frozen_dtype", ["float32", "bfloat16"])
def test_abstract_params_equal_the_trainer_tree_leaf_by_leaf(tiny, tiny_raw_dir, tmp_path,
                                                             frozen_dtype):
  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "llmgr_tiny.py"))
  cfg.data.manual_dir = tiny_raw_dir
  cfg.data.data_dir = str(tmp_path / "data")
  cfg.llm.frozen_dtype = frozen_dtype
  data = prepared.load_prepared(cfg.data)
  sbr_cfg = train_sbr.sbr_config(cfg, data.num_items)
  sbr_params = train_sbr.init_params(train_sbr.sbr_lib.create_model(sbr_cfg),
                                     graphs_lib.probe_batch(8), 0)
  _, real, _ = train_llmgr.build_model_and_params(cfg, data, sbr_cfg, sbr_params, 0)
  abstract, model_cfg = memory_report.abstract_llmgr_params(cfg, data.num_items)
  flat = lambda t: {labels_lib.path_str(p): (tuple(x.shape), str(x.dtype))
                    for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
  assert flat(abstract) == flat(real)
  assert model_cfg.llm.num_layers == 2 and model_cfg.llm.hidden_size == 64
  paths = flat(abstract)
  assert "llm/layers_1/attn/v_proj/lora/b" in paths
  assert not any(p.startswith("llm/lm_head") for p in paths)
  base_dtype = paths["llm/layers_0/attn/q_proj/kernel"][1]
  assert base_dtype == frozen_dtype and paths["llm/layers_0/attn/q_proj/lora/a"][1] == "float32"


@pytest.mark.parametrize("mesh", [{"data": 1, "fsdp": 1, "tensor": 1}, MESH])
def test_numbers_add_up_leaf_by_leaf(tiny, mesh):
  rep = memory_report.report(tiny, mesh, num_items=30, device_memory_gb=1.0)
  params, _ = memory_report.abstract_llmgr_params(tiny, 30)
  total_bytes = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                    for x in jax.tree.leaves(params))
  assert rep["seq_len"] == 192 and rep["batch"] == 8
  for name, stage in rep["stages"].items():
    trainable = tuple(tiny.stages[name].trainable)
    exp = _expected(params, trainable, mesh)
    assert stage["params"] == exp["params"]
    assert stage["grads"] == exp["grads"]
    assert stage["optimizer"] == exp["optimizer"] == 2 * stage["grads"]
    assert stage["master"] == 0  # float32 trainable leaves are their own master
    assert stage["total"] == sum(stage[k] for k in (
        "params", "grads", "optimizer", "master", "activations"))
    assert stage["fits"] is True
    if mesh["fsdp"] == 1:
      assert stage["params"] == total_bytes
    else:  # Everything big is split; the replicated SBR / norms are small.
      assert total_bytes / 4 < stage["params"] < total_bytes / 2 + 20_000
  assert rep["stages"]["aux"]["grads"] != rep["stages"]["major"]["grads"]


def test_activations_scale_with_batch_and_split_over_batch_axes(tiny):
  one = memory_report.report(tiny, {"data": 1, "fsdp": 1, "tensor": 1}, 30, batch=8)
  two = memory_report.report(tiny, {"data": 2, "fsdp": 1, "tensor": 1}, 30, batch=8)
  a1 = one["stages"]["aux"]["activations"]
  a2 = two["stages"]["aux"]["activations"]
  # Transformer part halves with the per-device batch; the item head's [B, M]
  # logits split over items instead ("items" takes data too).
  assert a2 < a1 and abs(a2 - a1 / 2) <= 2 * 4 * 8 * 30


def test_llama2_7b_on_two_devices_is_sharded_and_fits_80gb():
  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "llmgr_music.py"))
  rep = memory_report.report(cfg, {"data": 1, "fsdp": 2, "tensor": 1}, 900, 80.0)
  aux = rep["stages"]["aux"]
  # 6.6e9 parameters without the unused LM head, bf16, halved by fsdp=2.
  assert 6.5e9 < aux["num_params"] < 6.7e9
  assert abs(aux["params"] - aux["num_params"]) < 0.01 * aux["num_params"]
  assert aux["fits"] is True
  small = memory_report.report(cfg, {"data": 1, "fsdp": 1, "tensor": 1}, 900, 8.0)
  assert small["stages"]["aux"]["fits"] is False
  # Every big LLaMA kernel has a mesh axis on fsdp=2 (MaxText-style check).
  params, _ = memory_report.abstract_llmgr_params(cfg, 900)
  mesh = {"data": 1, "fsdp": 2, "tensor": 1}
  big = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
         if math.prod(x.shape) > 2**20]
  assert big
  for path, x in big:
    logical = sharding.logical_axes_from_rules(
        _at(path, x), parallel.LLMGR_PARAM_RULES)
    spec = jax.tree.leaves(logical, is_leaf=lambda s: isinstance(
        s, jax.sharding.PartitionSpec))[0]
    mspec = sharding.logical_to_mesh_spec(spec, parallel.LLMGR_LOGICAL_AXIS_RULES,
                                          mesh, x.shape)
    assert sharding.num_shards(mspec, mesh) == 2, labels_lib.path_str(path)


def _at(path, leaf):
  """A nested dict holding ``leaf`` at ``path`` (so the rules see its name)."""
  tree = leaf
  for key in reversed(path):
    tree = {key.key: tree}
  return tree


def test_parse_mesh_and_bad_entries():
  assert memory_report.parse_mesh("data:1,fsdp:2") == {"data": 1, "fsdp": 2, "tensor": 1}
  with pytest.raises(ValueError, match="AXIS:SIZE"):
    memory_report.parse_mesh("model:2")
  with pytest.raises(ValueError, match="--num_items"):
    memory_report.abstract_llmgr_params(llmgr_config_lib.llmgr_config(), 0)


def test_command_line_prints_json():
  out = subprocess.run(
      [sys.executable, "-m", "sbrjax.llmgr.memory_report",
       f"--config={os.path.join(REPO, 'configs', 'llmgr_tiny.py')}",
       "--mesh=data:2,fsdp:2", "--num_items=30", "--device_memory_gb=1", "--json"],
      capture_output=True, text=True, timeout=120, cwd=REPO,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  rep = json.loads(out.stdout.strip().splitlines()[-1])
  assert rep["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
  assert set(rep["stages"]) == {"aux", "major"}
  assert rep["stages"]["aux"]["fits"] is True
