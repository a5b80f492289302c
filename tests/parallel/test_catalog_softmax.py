"""Tests for sbrjax.item_head: catalog-sharded loss, top-k and rank.

The sharded kernels need several devices, which must be simulated before JAX
is imported, so they run once in a subprocess with 4 CPU devices (the
``sharded`` fixture) that compares them with the dense references and prints
JSON; the tests below assert on that JSON. Dense references are checked
in-process against NumPy.
"""

import numpy as np
import pytest
import jax

from sbrjax.parallel import distributed
from sbrjax.parallel import catalog_softmax as item_head
from tests import conftest

_WORKER = r"""
import json
import time
import numpy as np
import jax
import jax.numpy as jnp
from sbrjax.parallel import catalog_softmax as ih
from sbrjax.parallel import mesh as sh

def maxdiff(a, b):
  return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))

res = {"devices": jax.device_count()}
rng = np.random.default_rng(0)
B, D, M = 8, 16, 1003  # 1003 items: not a multiple of 4 (nor of 2)
h = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
w = jnp.asarray(rng.normal(size=(M, D)), jnp.float32)
t = jnp.asarray(np.r_[0, M - 1, rng.integers(0, M, B - 2)], jnp.int32)

dense = lambda h, w: ih.dense_softmax_xent(h, w, t).mean()
dl = dense(h, w)
dg = jax.grad(dense, (0, 1))(h, w)
dv, di = ih.dense_topk(h, w, 20)
dr = ih.dense_target_rank(h, w, t)

# Integer-valued data: many exactly tied scores, identical in every layout.
hi = jnp.asarray(rng.integers(0, 2, size=(B, 4)), jnp.float32)
wi = jnp.asarray(rng.integers(0, 2, size=(M, 4)), jnp.float32)
ti = jnp.asarray(rng.integers(0, M, size=B), jnp.int32)
tie_v, tie_i = ih.dense_topk(hi, wi, 37)
tie_r = ih.dense_target_rank(hi, wi, ti)

def everything(h, w, wp, hi, wi, mesh):
  # All sharded results for one mesh in one jit: one compilation.
  f = lambda h, w: ih.sharded_softmax_xent(h, w, t, mesh).mean()
  fb = lambda h, w: ih.sharded_softmax_xent(
      h, w, t, mesh, axis=("fsdp", "tensor"), batch_axis="data").mean()
  fp = lambda h, w: ih.sharded_softmax_xent(h, w, t, mesh, num_items=M).mean()
  bad = t.at[0].set(M)
  return dict(
      loss=f(h, w), grad=jax.grad(f, (0, 1))(h, w),
      batchsplit=jax.value_and_grad(fb, (0, 1))(h, w),
      padded_grad=jax.grad(fp, (0, 1))(h, wp)[1],
      bad_loss=ih.sharded_softmax_xent(h, w, bad, mesh),
      bad_rank=ih.sharded_target_rank(h, w, bad, mesh),
      topk=ih.sharded_topk(h, w, 20, mesh),
      topk300=ih.sharded_topk(h, w, 300, mesh)[1],
      topk_all=ih.sharded_topk(h, w, M, mesh)[1],
      rank=ih.sharded_target_rank(h, w, t, mesh),
      ties_topk=ih.sharded_topk(hi, wi, 37, mesh),
      ties_rank=ih.sharded_target_rank(hi, wi, ti, mesh))

# Pre-padded table for num_items: the extra rows would dominate if unmasked.
wp = jnp.concatenate([w, jnp.full((5, D), 100.0)])
dense300 = ih.dense_topk(h, w, 300)[1]
for name, shape in {"1x4": (1, 4), "2x2": (2, 2), "4x1": (4, 1)}.items():
  mesh = sh.make_mesh({"data": shape[0], "fsdp": shape[1], "tensor": 1})
  start = time.time()
  o = jax.jit(everything, static_argnums=5)(h, w, wp, hi, wi, mesh)
  r = {}
  r["loss_jit"] = maxdiff(o["loss"], dl)
  r["grad_hidden_jit"] = maxdiff(o["grad"][0], dg[0])
  r["grad_items_jit"] = maxdiff(o["grad"][1], dg[1])
  # Batch split over "data", catalog over the other axes.
  r["batchsplit_loss"] = maxdiff(o["batchsplit"][0], dl)
  r["batchsplit_grad_hidden"] = maxdiff(o["batchsplit"][1][0], dg[0])
  r["batchsplit_grad_items"] = maxdiff(o["batchsplit"][1][1], dg[1])
  r["padded_grad_items"] = maxdiff(o["padded_grad"][:M], dg[1])
  r["padded_rows_grad_absmax"] = float(jnp.max(jnp.abs(o["padded_grad"][M:])))
  r["bad_target_nan"] = bool(jnp.isnan(o["bad_loss"][0]))
  r["bad_target_rank"] = int(o["bad_rank"][0])
  r["topk_ids_equal"] = bool((o["topk"][1] == di).all())
  r["topk_scores"] = maxdiff(o["topk"][0], dv)
  # k larger than a shard (1003 / 4 -> 251 rows) and k = M.
  r["topk300_equal"] = bool((o["topk300"] == dense300).all())
  r["topk_all_is_permutation"] = bool(
      (jnp.sort(o["topk_all"], axis=-1) == jnp.arange(M)[None]).all())
  r["rank_equal"] = bool((o["rank"] == dr).all())
  r["ties_topk_ids_equal"] = bool((o["ties_topk"][1] == tie_i).all())
  r["ties_topk_scores"] = maxdiff(o["ties_topk"][0], tie_v)
  r["ties_rank_equal"] = bool((o["ties_rank"] == tie_r).all())
  r["seconds_jit"] = time.time() - start
  if name == "2x2":  # eager dispatch compiles op by op: slow, so one mesh only
    start = time.time()
    f = lambda h, w: ih.sharded_softmax_xent(h, w, t, mesh).mean()
    r["loss_eager"] = maxdiff(f(h, w), dl)
    r["topk_ids_equal_eager"] = bool((ih.sharded_topk(h, w, 20, mesh)[1] == di).all())
    r["rank_equal_eager"] = bool((ih.sharded_target_rank(h, w, t, mesh) == dr).all())
    r["seconds_eager"] = time.time() - start
  res[name] = r

# Tiny catalog: 5 items on 4 shards leaves a shard with padding only.
mesh = sh.make_mesh({"data": 4})
w5, t5 = w[:5], jnp.asarray([0, 4, 2, 3, 1, 4, 0, 2], jnp.int32)
tiny = jax.jit(lambda h, w, t: (
    ih.sharded_softmax_xent(h, w, t, mesh, axis="data"),
    ih.sharded_topk(h, w, 5, mesh, axis="data")[1],
    ih.sharded_target_rank(h, w, t, mesh, axis="data")))(h, w5, t5)
res["tiny_loss"] = maxdiff(tiny[0], ih.dense_softmax_xent(h, w5, t5))
res["tiny_topk_equal"] = bool((tiny[1] == ih.dense_topk(h, w5, 5)[1]).all())
res["tiny_rank_equal"] = bool((tiny[2] == ih.dense_target_rank(h, w5, t5)).all())
# bf16 inputs: float32 accumulation keeps the loss close to the fp32 one.
res["bf16_loss"] = maxdiff(jax.jit(lambda h, w: ih.sharded_softmax_xent(
    h.astype(jnp.bfloat16), w.astype(jnp.bfloat16), t, mesh, axis="data"))(h, w),
    ih.dense_softmax_xent(h.astype(jnp.bfloat16), w.astype(jnp.bfloat16), t))
print(json.dumps(res))
"""

_MESHES = ("1x4", "2x2", "4x1")


@pytest.fixture(scope="module")
def sharded():
  return distributed.run_python(_WORKER, num_cpu_devices=4, timeout=600,
                                xla_flags=conftest.SUBPROCESS_XLA_FLAGS)


def test_worker_saw_four_devices(sharded):
  assert sharded["devices"] == 4


@pytest.mark.parametrize("mesh", _MESHES)
def test_sharded_loss_and_grads_equal_dense(sharded, mesh):
  r = sharded[mesh]
  for key in ("loss_jit", "grad_hidden_jit", "grad_items_jit",
              "batchsplit_loss", "batchsplit_grad_hidden",
              "batchsplit_grad_items", "padded_grad_items"):
    assert r[key] < 1e-5, (key, r[key])
  assert r["padded_rows_grad_absmax"] == 0.0


def test_sharded_head_not_jitted_equals_dense(sharded):
  r = sharded["2x2"]
  assert r["loss_eager"] < 1e-5
  assert r["topk_ids_equal_eager"]
  assert r["rank_equal_eager"]


@pytest.mark.parametrize("mesh", _MESHES)
def test_out_of_range_target_is_loud(sharded, mesh):
  assert sharded[mesh]["bad_target_nan"]
  assert sharded[mesh]["bad_target_rank"] == 0


@pytest.mark.parametrize("mesh", _MESHES)
def test_sharded_topk_and_rank_equal_dense(sharded, mesh):
  r = sharded[mesh]
  assert r["topk_ids_equal"]
  assert r["topk_scores"] < 1e-5
  assert r["topk300_equal"]
  assert r["topk_all_is_permutation"]  # padded rows never returned
  assert r["rank_equal"]


@pytest.mark.parametrize("mesh", _MESHES)
def test_sharded_topk_and_rank_with_ties_equal_dense(sharded, mesh):
  r = sharded[mesh]
  assert r["ties_topk_ids_equal"]
  assert r["ties_topk_scores"] == 0.0
  assert r["ties_rank_equal"]


def test_catalog_smaller_than_shards_times_rows(sharded):
  assert sharded["tiny_loss"] < 1e-5
  assert sharded["tiny_topk_equal"]
  assert sharded["tiny_rank_equal"]


def test_bf16_inputs_match_dense_bf16(sharded):
  # Same bf16 products, float32 sums in a different order.
  assert sharded["bf16_loss"] < 1e-4


# ----------------------------------------------------------- in-process ---


def _data(seed=0, b=5, d=8, m=37):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, d)).astype(np.float32),
          rng.normal(size=(m, d)).astype(np.float32),
          rng.integers(0, m, size=b).astype(np.int32))


@pytest.mark.parametrize("jit", [False, True])
def test_dense_xent_matches_numpy(jit):
  h, w, t = _data()
  fn = jax.jit(item_head.dense_softmax_xent) if jit else item_head.dense_softmax_xent
  s = (h.astype(np.float64) @ w.T.astype(np.float64))
  ref = np.log(np.exp(s).sum(-1)) - s[np.arange(len(t)), t]
  np.testing.assert_allclose(np.asarray(fn(h, w, t)), ref, atol=1e-5)


def test_dense_rank_is_pessimistic_on_ties():
  h = np.ones((1, 2), np.float32)
  w = np.array([[1, 0], [0, 1], [1, 1], [0, 1], [0, 0]], np.float32)
  # scores: 1, 1, 2, 1, 0. Target 1 (score 1): one better, two tied others.
  ranks = item_head.dense_target_rank(h, w, np.array([1]))
  assert int(ranks[0]) == 4
  assert int(item_head.dense_target_rank(h, w, np.array([2]))[0]) == 1
  assert int(item_head.dense_target_rank(h, w, np.array([4]))[0]) == 5


@pytest.mark.parametrize("jit", [False, True])
def test_dense_rank_matches_numpy(jit):
  h, w, t = _data(1)
  h, w = np.round(h), np.round(w)  # create ties
  fn = jax.jit(item_head.dense_target_rank) if jit else item_head.dense_target_rank
  s = h @ w.T
  st = s[np.arange(len(t)), t][:, None]
  ids = np.arange(w.shape[0])[None]
  ref = 1 + ((s > st) | ((s == st) & (ids != t[:, None]))).sum(-1)
  np.testing.assert_array_equal(np.asarray(fn(h, w, t)), ref)


def test_single_device_or_no_mesh_uses_dense():
  h, w, t = _data()
  mesh = jax.make_mesh((1,), ("data",))
  for m in (None, mesh):
    np.testing.assert_array_equal(
        np.asarray(item_head.sharded_softmax_xent(h, w, t, m)),
        np.asarray(item_head.dense_softmax_xent(h, w, t)))
    np.testing.assert_array_equal(
        np.asarray(item_head.sharded_topk(h, w, 3, m)[1]),
        np.asarray(item_head.dense_topk(h, w, 3)[1]))


def test_num_items_masks_trailing_rows_dense():
  h, w, t = _data()
  wp = np.concatenate([w, np.full((3, w.shape[1]), 50.0, np.float32)])
  np.testing.assert_allclose(
      np.asarray(item_head.sharded_softmax_xent(h, wp, t, None, num_items=37)),
      np.asarray(item_head.dense_softmax_xent(h, w, t)), atol=1e-6)
  assert int(item_head.dense_topk(h, wp, 40 - 3, num_items=37)[1].max()) < 37


def test_bad_shapes_and_k_raise_clear_errors():
  h, w, t = _data()
  with pytest.raises(ValueError, match="same D"):
    item_head.dense_softmax_xent(h, w[:, :3], t)
  with pytest.raises(ValueError, match="targets"):
    item_head.dense_softmax_xent(h, w, t[:2])
  with pytest.raises(ValueError, match="k=38"):
    item_head.sharded_topk(h, w, 38, None)
