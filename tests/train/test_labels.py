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
