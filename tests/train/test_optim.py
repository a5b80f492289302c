"""Schedules and the frozen/trainable optimizer split."""

import jax
import jax.numpy as jnp
import numpy as np
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
