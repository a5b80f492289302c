"""Tests for sbrjax.parallel (mesh, rules, state, estimate, distributed).

Multi-device behaviour needs simulated CPU devices, fixed before JAX is
imported, so it runs in a few subprocesses (each prints one JSON line):
  * a 4-device worker: rule errors, sharded state creation, a sharded train
    step against a single-device one and an Orbax save;
  * a 2-device worker restoring that checkpoint onto 1 and 2 devices;
  * two jax.distributed processes on 127.0.0.1 with 2 devices each.
Pure functions (rule tables, memory estimate, env parsing) run in-process.
"""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sbrjax.parallel import distributed
from sbrjax.parallel import estimate
from sbrjax.parallel import mesh as mesh_lib
from sbrjax.parallel import rules as sharding
from tests import conftest

_PRELUDE = r"""
import json, time
import numpy as np
import jax
import jax.numpy as jnp
import flax.linen as nn
import optax
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec as P
from sbrjax.parallel import mesh as mesh_lib
from sbrjax.parallel import rules as sh
from sbrjax.parallel import state as state_lib

class MLP(nn.Module):
  hidden: int = 64
  out: int = 8

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.out)(x)

PARAM_RULES = (
    (r"Dense_0/kernel$", ("embed", "mlp")),
    (r"Dense_0/bias$", ("mlp",)),
    (r"Dense_1/kernel$", ("mlp", "embed")),
    (r"Dense_1/bias$", ("embed",)),
)
RULES = sh.DEFAULT_LOGICAL_AXIS_RULES

def spec_str(s):
  return str(tuple(s.spec))
"""

_WORKER4 = _PRELUDE + r"""
import sys
ckpt_dir = sys.argv[1] if len(sys.argv) > 1 else None
res = {"devices": jax.device_count()}
mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 1})

# make_mesh: wrong product names the sizes.
try:
  mesh_lib.make_mesh({"data": 3, "fsdp": 1})
  res["bad_mesh_error"] = ""
except ValueError as e:
  res["bad_mesh_error"] = str(e)
res["mesh_minus_one"] = dict(mesh_lib.make_mesh({"data": -1, "tensor": 2}).shape)

# A parameter without a rule raises naming it.
model = MLP()
x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16)), jnp.float32)
y = jnp.asarray(np.random.default_rng(1).normal(size=(8, 8)), jnp.float32)
init = lambda key: model.init(key, x)
params0 = init(jax.random.key(0))["params"]
tx = optax.adam(1e-2)
try:
  state_lib.create_train_state(model.apply, params0, tx, mesh, RULES, PARAM_RULES[:2])
  res["ruleless_error"] = ""
except ValueError as e:
  res["ruleless_error"] = str(e)

# A big parameter left replicated raises naming it.
class Big(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(2048, use_bias=False, name="proj")(x)
big_params = Big().init(jax.random.key(0), jnp.zeros((1, 1024)))["params"]
try:
  state_lib.create_train_state(Big().apply, big_params, tx, mesh, RULES,
                               ((r"proj/kernel", ("norm", "kv")),))
  res["big_error"] = ""
except ValueError as e:
  res["big_error"] = str(e)
big, big_sh = state_lib.create_train_state(
    Big().apply, big_params, tx, mesh, RULES, ((r"proj/kernel", ("embed", "mlp")),))
res["big_ok_spec"] = spec_str(big.params["proj"]["kernel"].sharding)

# Train state created sharded; the optimizer moments follow their params.
def make_state(key):
  return train_state.TrainState.create(apply_fn=model.apply, params=init(key)["params"], tx=tx)
# Small test model: a low threshold makes the size check apply to it.
state, shardings = state_lib.create_train_state(model.apply, params0, tx, mesh, RULES,
                                                PARAM_RULES, min_sharded_size=512)
k0 = state.params["Dense_0"]["kernel"]
res["kernel0_spec"] = spec_str(k0.sharding)
res["kernel0_shard_shape"] = list(k0.addressable_shards[0].data.shape)
res["kernel1_spec"] = spec_str(state.params["Dense_1"]["kernel"].sharding)
res["mu_kernel0_spec"] = spec_str(state.opt_state[0].mu["Dense_0"]["kernel"].sharding)
res["step_spec"] = spec_str(state.step.sharding)

# The same init on one device gives the same values.
one = make_state(jax.random.key(0))
res["init_equal"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
    jax.tree.leaves(one.params), jax.tree.leaves(state.params)))

# Sharded train step (batch over ("data", "fsdp")) == single-device step.
def loss_fn(params, x, y):
  return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

def step(state, x, y):
  loss, grads = jax.value_and_grad(loss_fn)(state.params, x, y)
  return state.apply_gradients(grads=grads), loss

batch_sharding = NamedSharding(mesh, P(("data", "fsdp"), None))
sharded_step = jax.jit(step, in_shardings=(shardings, batch_sharding, batch_sharding),
                       out_shardings=(shardings, NamedSharding(mesh, P())),
                       donate_argnums=0)
single_step = jax.jit(step)
xs, ys = jax.device_put(x, batch_sharding), jax.device_put(y, batch_sharding)
for _ in range(3):
  state, loss_s = sharded_step(state, xs, ys)
  one, loss_1 = single_step(one, x, y)
res["train_param_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
    jax.tree.leaves(one.params), jax.tree.leaves(state.params)))
res["train_loss_diff"] = abs(float(loss_s) - float(loss_1))
res["train_kernel0_spec_after"] = spec_str(state.params["Dense_0"]["kernel"].sharding)

if ckpt_dir:
  import orbax.checkpoint as ocp
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(ckpt_dir, state.params)
  ckptr.wait_until_finished()
  res["saved_sum"] = float(sum(jnp.sum(l) for l in jax.tree.leaves(state.params)))
  res["saved"] = jax.tree.map(lambda a: np.asarray(a).tolist(), state.params)
print(json.dumps(res))
"""

_RESTORE2 = _PRELUDE + r"""
import sys
import orbax.checkpoint as ocp
ckpt_dir = sys.argv[1]
res = {"devices": jax.device_count()}
abstract = jax.eval_shape(lambda: MLP().init(jax.random.key(0), jnp.zeros((8, 16)))["params"])
ckptr = ocp.StandardCheckpointer()
for n in (1, 2):
  mesh = mesh_lib.make_mesh({"data": 1, "fsdp": n}, devices=jax.devices()[:n])
  shard = sh.tree_shardings(abstract, mesh, RULES, PARAM_RULES, min_sharded_size=None)
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shard)
  restored = ckptr.restore(ckpt_dir, target)
  res[f"restored{n}"] = jax.tree.map(lambda a: np.asarray(a).tolist(), restored)
  k = restored["Dense_0"]["kernel"]
  res[f"restored{n}_spec"] = spec_str(k.sharding)
  res[f"restored{n}_devices"] = len(k.sharding.device_set)
  res[f"restored{n}_shard_shape"] = list(k.addressable_shards[0].data.shape)
print(json.dumps(res))
"""

_TWO_PROCESS = r"""
import json
import numpy as np
from sbrjax.parallel import distributed as dist
initialized = dist.initialize_from_env(initialization_timeout=60)
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from sbrjax.parallel import mesh as mesh_lib
from sbrjax.parallel import state as state_lib
mesh = mesh_lib.make_mesh({"data": 4})
pi = jax.process_index()
# Every process holds the whole host value; each transfers only its devices' rows.
full = np.array([0.0, 1.0, 10.0, 11.0], np.float32)
g = state_lib.place({"x": full}, {"x": NamedSharding(mesh, P("data"))})["x"]
own = sorted(float(s.data[0]) for s in g.addressable_shards)
total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(g)
psum = jax.shard_map(lambda x: jax.lax.psum(x, "data"), mesh=mesh,
                     in_specs=P("data"), out_specs=P())(g)
gathered = jax.shard_map(lambda x: jax.lax.all_gather(x, "data", tiled=True),
                         mesh=mesh, in_specs=P("data"), out_specs=P(),
                         check_vma=False)(g)
print(json.dumps(dict(
    initialized=initialized, process_index=pi, process_count=jax.process_count(),
    devices=jax.device_count(), local_devices=jax.local_device_count(),
    global_shape=list(g.shape), total=float(total), own=own,
    psum=np.asarray(psum.addressable_data(0)).tolist(),
    gathered=np.asarray(gathered.addressable_data(0)).tolist())))
"""


def _run_file(code, tmp_path, name, args, devices):
  # run_python takes code for `python -c`; argv goes through a wrapper.
  path = tmp_path / name
  path.write_text(code)
  wrapper = (f"import sys, runpy; sys.argv = [{str(path)!r}] + {list(args)!r}; "
             f"runpy.run_path({str(path)!r}, run_name='__main__')")
  return distributed.run_python(wrapper, num_cpu_devices=devices, timeout=300,
                                xla_flags=conftest.SUBPROCESS_XLA_FLAGS)


@pytest.fixture(scope="module")
def worker4(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sharding")
  ckpt = tmp / "ckpt"
  res = _run_file(_WORKER4, tmp, "worker4.py", [str(ckpt)], 4)
  res["ckpt_dir"] = str(ckpt)
  res["tmp"] = tmp
  return res


def test_worker_has_four_devices(worker4):
  assert worker4["devices"] == 4


def test_make_mesh_wrong_product_raises(worker4):
  msg = worker4["bad_mesh_error"]
  assert "3 devices" in msg and "4 are available" in msg
  assert worker4["mesh_minus_one"] == {"data": 2, "tensor": 2}


def test_param_without_rule_raises_naming_it(worker4):
  msg = worker4["ruleless_error"]
  assert "'Dense_1/kernel' with shape (64, 8)" in msg
  assert "'Dense_1/bias' with shape (8,)" in msg
  assert "match no sharding rule" in msg


def test_big_replicated_param_raises_naming_it(worker4):
  msg = worker4["big_error"]
  assert "proj/kernel (1024, 2048)" in msg
  assert worker4["big_ok_spec"] == "('fsdp', 'tensor')"


def test_state_is_created_with_expected_shardings(worker4):
  assert worker4["kernel0_spec"] == "('fsdp', 'tensor')"
  assert worker4["kernel0_shard_shape"] == [8, 64]  # 16 rows over fsdp=2
  assert worker4["kernel1_spec"] == "('tensor', 'fsdp')"
  assert worker4["mu_kernel0_spec"] == "('fsdp', 'tensor')"
  assert worker4["step_spec"] == "()"
  assert worker4["init_equal"] == 0.0


def test_sharded_train_step_equals_single_device(worker4):
  assert worker4["train_param_diff"] < 1e-5
  assert worker4["train_loss_diff"] < 1e-5
  assert worker4["train_kernel0_spec_after"] == "('fsdp', 'tensor')"


def test_orbax_checkpoint_restores_on_fewer_devices(worker4):
  res = _run_file(_RESTORE2, worker4["tmp"], "restore2.py",
                  [worker4["ckpt_dir"]], 2)
  assert res["devices"] == 2
  saved = jax.tree.map(np.asarray, worker4["saved"])
  for n in (1, 2):
    restored = jax.tree.map(np.asarray, res[f"restored{n}"])
    jax.tree.map(np.testing.assert_array_equal, restored, saved)
    assert res[f"restored{n}_devices"] == n
  assert res["restored1_shard_shape"] == [16, 64]
  assert res["restored2_shard_shape"] == [8, 64]
  assert res["restored2_spec"] == "('fsdp', None)"  # no tensor axis here


def test_two_processes_on_loopback_psum_and_all_gather():
  outs = distributed.run_local_processes(_TWO_PROCESS, num_processes=2,
                                         devices_per_process=2, timeout=120)
  for pi, out in enumerate(outs):
    assert out["initialized"] and out["process_index"] == pi
    assert out["process_count"] == 2
    assert out["devices"] == 4 and out["local_devices"] == 2
    assert out["global_shape"] == [4]
    assert out["total"] == 22.0  # 0 + 1 + 10 + 11
    assert out["psum"] == [22.0]
    assert out["gathered"] == [0.0, 1.0, 10.0, 11.0]
  assert outs[0]["own"] == [0.0, 1.0] and outs[1]["own"] == [10.0, 11.0]


# ----------------------------------------------------------- in-process ---

_MESH = {"data": 2, "fsdp": 2, "tensor": 2}
_RULES = sharding.DEFAULT_LOGICAL_AXIS_RULES


def test_logical_to_mesh_spec_maps_and_avoids_reusing_axes():
  spec = sharding.logical_to_mesh_spec(("batch", "length", "embed"), _RULES,
                                       _MESH)
  # "embed" wants fsdp, already taken by "batch": replicated instead.
  assert spec == P(("data", "fsdp"), None, None)
  assert sharding.logical_to_mesh_spec(("embed", "mlp"), _RULES,
                                       _MESH) == P("fsdp", "tensor")
  assert sharding.logical_to_mesh_spec(
      ("items", None), _RULES, _MESH) == P(("data", "fsdp", "tensor"), None)


def test_logical_to_mesh_spec_fallbacks_and_missing_axes():
  rules = (("embed", "fsdp"), ("embed", "tensor"), ("mlp", "fsdp"))
  # Second rule for "embed" is used when fsdp is taken.
  assert sharding.logical_to_mesh_spec(("mlp", "embed"), rules,
                                       _MESH) == P("fsdp", "tensor")
  # Mesh axes absent from the mesh are dropped.
  assert sharding.logical_to_mesh_spec(("items",), _RULES,
                                       {"data": 4}) == P("data")
  # Indivisible dims drop trailing axes: 1003 rows stay whole, 6 rows -> data.
  assert sharding.logical_to_mesh_spec(("items",), _RULES, _MESH,
                                       (1003,)) == P(None)
  assert sharding.logical_to_mesh_spec(("items",), _RULES, _MESH,
                                       (6,)) == P("data")


def test_unknown_logical_name_raises():
  with pytest.raises(ValueError, match="'embd' has no entry"):
    sharding.logical_to_mesh_spec(("embd",), _RULES, _MESH)


def test_param_rules_first_match_rank_check_and_scalars():
  tree = {"params": {"a": {"kernel": jax.ShapeDtypeStruct((4, 8), np.float32),
                           "scale": jax.ShapeDtypeStruct((8,), np.float32)}},
          "step": jax.ShapeDtypeStruct((), np.int32)}
  rules = ((r"kernel$", ("embed", "mlp")), (r"a/", ("norm",)))
  out = sharding.logical_axes_from_rules(tree, rules)
  assert out["params"]["a"]["kernel"] == P("embed", "mlp")
  assert out["params"]["a"]["scale"] == P("norm")
  assert out["step"] == P()
  with pytest.raises(ValueError, match=r"'params/a/kernel'.*2 entries, not 1"):
    sharding.logical_axes_from_rules(
        {"params": {"a": {"kernel": jax.ShapeDtypeStruct((4,), np.float32)}}},
        rules)
  with pytest.raises(ValueError, match="'params/a/scale' with shape .8,. match"):
    sharding.logical_axes_from_rules(tree, rules[:1])


def test_make_mesh_single_device_in_process():
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  assert dict(mesh.shape) == {"data": 1}
  with pytest.raises(ValueError, match="more than one -1"):
    mesh_lib.make_mesh({"data": -1, "fsdp": -1})


def test_estimate_memory_counts_params_optimizer_and_master():
  shapes = {"params": {
      "embed": jax.ShapeDtypeStruct((1000, 64), np.dtype("bfloat16")),
      "lora": jax.ShapeDtypeStruct((64, 8), np.float32)}}
  rules = ((r"embed$", ("vocab", "embed")), (r"lora$", ("embed", "lora_rank")))
  mask = {"params": {"embed": False, "lora": True}}
  mesh = {"data": 1, "fsdp": 2, "tensor": 2}
  est = estimate.estimate_memory(
      shapes, mask, mesh, _RULES, rules, batch=4, seq_len=16, hidden=64,
      layers=2, num_heads=4, dtype="bfloat16", num_items=1000, vocab_size=50,
      device_memory_bytes=2**20)
  # embed: 1000/2 x 64/2 bf16; lora: 64/2 x 8 fp32.
  assert est["params"] == 500 * 32 * 2 + 32 * 8 * 4
  assert est["grads"] == 32 * 8 * 4
  assert est["optimizer"] == 2 * 32 * 8 * 4
  assert est["master"] == 0  # the trainable leaf is already float32
  # b = 4 / (data*fsdp) = 2, t = 2: s*b*h*(10 + (24 + 5*a*s/h)/t) per layer
  per_layer = 16 * 2 * 64 * (10 + (24 + 5 * 4 * 16 / 64) / 2)
  # Item head: whole batch (its axes are all catalog axes), 1000 / 4 items.
  # Token head: b=2, s=16, 50 / tensor=2 -> 25 columns.
  logits = 2 * 4 * 4 * 250 + 2 * 4 * 2 * 16 * 25
  assert est["activations"] == int(2 * per_layer + logits)
  assert est["total"] == sum(est[k] for k in ("params", "grads", "optimizer",
                                              "master", "activations"))
  assert est["fits"] is True
  tight = estimate.estimate_memory(
      shapes, None, mesh, _RULES, rules, batch=4, seq_len=16, hidden=64,
      layers=2, num_heads=4, device_memory_bytes=est["total"])
  assert tight["master"] == 500 * 32 * 4  # bf16 trainable -> fp32 master
  assert tight["fits"] is False


def test_distributed_args_from_env():
  assert distributed.distributed_args_from_env({}) is None
  assert distributed.distributed_args_from_env(
      {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
  args = distributed.distributed_args_from_env({
      "SBRJAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
      "SBRJAX_NUM_PROCESSES": "4", "SBRJAX_PROCESS_ID": "3",
      "SBRJAX_LOCAL_DEVICE_IDS": "0,1"})
  assert args == dict(coordinator_address="10.0.0.1:1234", num_processes=4,
                      process_id=3, local_device_ids=[0, 1])
  slurm = distributed.distributed_args_from_env({
      "SLURM_JOB_ID": "4097", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
      "SLURM_JOB_NODELIST": "gpu[003-004,010],cpu1"})
  assert slurm == dict(coordinator_address="gpu003:61441", num_processes=2,
                       process_id=1, local_device_ids=None)
  with pytest.raises(ValueError, match="SBRJAX_PROCESS_ID"):
    distributed.distributed_args_from_env(
        {"SBRJAX_COORDINATOR_ADDRESS": "h:1", "SBRJAX_NUM_PROCESSES": "2"})
  with pytest.raises(ValueError, match="outside"):
    distributed.distributed_args_from_env({
        "SBRJAX_COORDINATOR_ADDRESS": "h:1", "SBRJAX_NUM_PROCESSES": "2",
        "SBRJAX_PROCESS_ID": "2"})


def test_first_slurm_host():
  assert distributed.first_slurm_host("node001") == "node001"
  assert distributed.first_slurm_host("node001,host2") == "node001"
  assert distributed.first_slurm_host("node[007-015],host2") == "node007"
  assert distributed.first_slurm_host("node[001,007-015]") == "node001"


def test_subprocess_xla_flags_follow_the_device_count():
  code = "import json, os; print(json.dumps(os.environ['XLA_FLAGS'].split()))"
  flags = distributed.run_python(code, num_cpu_devices=3, timeout=60,
                                 xla_flags="--xla_backend_optimization_level=0")
  assert flags[-2:] == ["--xla_force_host_platform_device_count=3",
                        "--xla_backend_optimization_level=0"]
  assert sum(f.startswith("--xla_force_host_platform_device_count") for f in flags) == 1
