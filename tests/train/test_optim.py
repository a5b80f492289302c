"""Schedules and the frozen/trainable optimizer split."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbrjax import config as config_lib
from sbrjax.train import optim


def _train(**kw):
  t = config_lib.base_config().train
  for k, v in kw.items():
    t[k] = v
  return t


def test_step_schedule_decays_every_n_epochs():
  s = optim.make_schedule(_train(schedule="step", decay_epochs=3, decay_rate=0.1), 10, 100)
  np.testing.assert_allclose([s(0), s(29), s(30), s(60)], [1e-3, 1e-3, 1e-4, 1e-5], rtol=1e-5)


def test_cosine_schedule_ends_at_zero_with_and_without_warmup():
  s = optim.make_schedule(_train(schedule="cosine", warmup_steps=0), 10, 100)
  assert float(s(0)) == pytest.approx(1e-3) and float(s(100)) == pytest.approx(0.0, abs=1e-9)
  s = optim.make_schedule(_train(schedule="cosine", warmup_steps=10), 10, 100)
  assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1e-3)


def test_unknown_schedule_and_optimizer_name_the_key():
  with pytest.raises(ValueError, match="config.train.schedule"):
    optim.make_schedule(_train(schedule="linear"), 10, 100)
  with pytest.raises(ValueError, match="config.train.optimizer"):
    optim.make_optimizer(_train(optimizer="sgd"), optim.make_schedule(_train(), 1, 1),
                         {"sbr": {"w": jnp.ones(2)}}, ("sbr",))


def test_frozen_labels_get_zero_updates_and_no_state():
  params = {"sbr": {"w": jnp.ones(3)}, "llm": {"k": jnp.ones(4), "q": {"lora": {"a": jnp.ones(2)}}}}
  tx = optim.make_optimizer(_train(optimizer="adamw", weight_decay=0.1),
                            optim.make_schedule(_train(), 1, 1), params, ("lora",))
  state = tx.init(params)
  sizes = sorted(x.size for x in jax.tree_util.tree_leaves(state) if x.ndim > 0)
  assert sizes == [2, 2]  # Adam moments of the one LoRA leaf only
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  assert float(jnp.abs(updates["sbr"]["w"]).max()) == 0.0
  assert float(jnp.abs(updates["llm"]["k"]).max()) == 0.0
  assert float(jnp.abs(updates["llm"]["q"]["lora"]["a"]).max()) > 0.0


def test_unknown_trainable_label_is_refused():
  with pytest.raises(ValueError, match="Unknown trainable labels"):
    optim.make_optimizer(_train(), optim.make_schedule(_train(), 1, 1),
                         {"sbr": {"w": jnp.ones(2)}}, ("encoder",))


def _labelled_params():
  k = jax.random.split(jax.random.PRNGKey(0), 5)
  return {"sbr": {"w": jax.random.normal(k[0], (3, 2))},
          "f_out": {"out": {"kernel": jax.random.normal(k[1], (4, 5))}},
          "f_in": {"kernel": jax.random.normal(k[2], (2, 4))},
          "llm": {"k": jax.random.normal(k[3], (6,)),
                  "q": {"lora": {"a": jax.random.normal(k[4], (2, 2))}}}}


def test_per_label_rates_scale_each_label_and_leave_frozen_leaves_bit_identical():
  params = _labelled_params()
  grads = jax.tree_util.tree_map(lambda x: jnp.sin(3.0 * x) + 0.1, params)
  train = _train(optimizer="adamw", weight_decay=0.01, schedule="cosine", warmup_steps=2,
                 learning_rate=1e-3)
  sched = optim.make_schedule(train, 10, 20)
  rates = {"sbr": 1e-4, "f_out": 5e-3, "lora": 0.0}  # lora: 0 -> the stage's rate
  tx = optim.make_optimizer(train, sched, params, ("sbr", "f_out", "lora"),
                            label_learning_rates=rates)
  state = tx.init(params)
  p = params
  for _ in range(3):  # step 0 is all warm-up (rate 0); steps 1, 2 move
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  # Frozen labels (f_in, llm base) are bit-identical; no state was made for them.
  np.testing.assert_array_equal(np.asarray(p["f_in"]["kernel"]), np.asarray(params["f_in"]["kernel"]))
  np.testing.assert_array_equal(np.asarray(p["llm"]["k"]), np.asarray(params["llm"]["k"]))
  sizes = sorted(x.size for x in jax.tree_util.tree_leaves(state) if x.ndim > 0)
  assert sizes == sorted(2 * [6] + 2 * [20] + 2 * [4])  # Adam moments of sbr, f_out, lora

  # Each trainable label moves exactly as a lone AdamW at its own peak rate would.
  def alone(leaf, grad, peak):
    ref_train = _train(optimizer="adamw", weight_decay=0.01, schedule="cosine",
                       warmup_steps=2, learning_rate=peak)
    ref = optax.adamw(optim.make_schedule(ref_train, 10, 20), weight_decay=0.01)
    s, x = ref.init(leaf), leaf
    for _ in range(3):
      u, s = ref.update(grad, s, x)
      x = optax.apply_updates(x, u)
    return np.asarray(x)

  for path, peak in ((("sbr", "w"), 1e-4), (("f_out", "out", "kernel"), 5e-3),
                     (("llm", "q", "lora", "a"), 1e-3)):
    leaf, grad, got = params, grads, p
    for key in path:
      leaf, grad, got = leaf[key], grad[key], got[key]
    assert not np.array_equal(np.asarray(got), np.asarray(leaf)), path
    np.testing.assert_allclose(np.asarray(got), alone(leaf, grad, peak), rtol=1e-6, atol=1e-7)


def test_per_label_rates_keep_one_global_clip_over_trainable_leaves():
  params = _labelled_params()
  grads = jax.tree_util.tree_map(lambda x: 100.0 * jnp.ones_like(x), params)
  train = _train(optimizer="adam", weight_decay=0.0, schedule="constant", grad_clip_norm=1.0)
  sched = optim.make_schedule(train, 1, 1)
  one = optim.make_optimizer(train, sched, params, ("sbr", "f_out"))
  per = optim.make_optimizer(train, sched, params, ("sbr", "f_out"),
                             label_learning_rates={"sbr": 1e-3})  # = the base rate
  u1, _ = one.update(grads, one.init(params), params)
  u2, _ = per.update(grads, per.init(params), params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u1, u2)
  with pytest.raises(ValueError, match="Per-label learning rates"):
    optim.make_optimizer(train, sched, params, ("sbr",), label_learning_rates={"gnn": 1e-3})
