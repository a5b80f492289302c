"""Parameter labels: one function of the path decides every parameter's role."""

import jax.numpy as jnp
import pytest

from sbrjax.train import labels


@pytest.mark.parametrize("path,label", [
    ("sbr/encoder/item_embedding/embedding", "sbr"),
    ("llm/layers_3/attn/q_proj/kernel", "llm_base"),
    ("llm/layers_3/attn/q_proj/lora/a", "lora"),
    ("f_in/kernel", "f_in"),
    ("f_out/out/bias", "f_out"),
    ("fusion/w2/kernel", "fusion"),
])
def test_labels_by_path(path, label):
  assert labels.param_label(path) == label


def test_parameter_outside_the_groups_is_an_error_naming_it():
  with pytest.raises(ValueError, match="'head/kernel' matches no label rule"):
    labels.param_label("head/kernel")


def test_label_tree_follows_key_paths():
  tree = {"sbr": {"w": jnp.ones(2)}, "llm": {"q_proj": {"kernel": jnp.ones(2),
                                                        "lora": {"b": jnp.ones(2)}}}}
  assert labels.label_tree(tree) == {"sbr": {"w": "sbr"},
                                     "llm": {"q_proj": {"kernel": "llm_base",
                                                        "lora": {"b": "lora"}}}}


def test_global_graph_leaves_are_constants_that_no_stage_trains():
  assert labels.param_label("sbr/global_graph/neighbors") == "constant"
  assert labels.param_label("sbr/item_embedding/embedding") == "sbr"
  tree = {"sbr": {"global_graph": {"weights": jnp.ones(2)}, "w": jnp.ones(2)}}
  assert labels.trainable_mask(tree, ("sbr",)) == {
      "sbr": {"global_graph": {"weights": "frozen"}, "w": "trainable"}}
  with pytest.raises(ValueError, match="'constant'"):
    labels.trainable_mask(tree, ("sbr", "constant"))


def test_optimizer_with_weight_decay_leaves_global_graph_leaves_unchanged():
  import ml_collections
  import optax
  from sbrjax.train import optim
  train = ml_collections.ConfigDict(dict(optimizer="adam", learning_rate=0.1,
                                         weight_decay=0.5, weight_decay_mode="l2",
                                         grad_clip_norm=0.0))
  params = {"sbr": {"global_graph": {"weights": jnp.full(3, 2.0)}, "w": jnp.ones(3)}}
  tx = optim.make_optimizer(train, optax.constant_schedule(0.1), params, trainable=("sbr",))
  state = tx.init(params)
  grads = {"sbr": {"global_graph": {"weights": jnp.ones(3)}, "w": jnp.ones(3)}}
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert (params["sbr"]["global_graph"]["weights"] == 2.0).all()
  assert (params["sbr"]["w"] != 1.0).all()
