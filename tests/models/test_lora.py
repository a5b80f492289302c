"""Hand-written LoRA: identity at init, merge, freezing under multi_transform."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbrjax.models import lora
from sbrjax.models.llama import Llama, LlamaConfig
from sbrjax.models.lora import LoraConfig

IDS = jnp.asarray(np.random.RandomState(0).randint(0, 128, size=(2, 7)))
MASK = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3])


def _models(targets=("q", "v"), rank=4):
  base_cfg = LlamaConfig.tiny()
  lcfg = LoraConfig(rank=rank, alpha=8.0, targets=targets)
  base = Llama(base_cfg)
  adapted = Llama(base_cfg.replace(lora=lcfg))
  params = base.init(jax.random.PRNGKey(0), IDS)["params"]
  return base, adapted, params, lcfg


def _randomize_b(params, seed=1):
  key = jax.random.PRNGKey(seed)
  def f(path, x):
    names = lora._path_names(path)
    if names[-1] == "b" and "lora" in names:
      return 0.1 * jax.random.normal(jax.random.fold_in(key, hash(names) % 997),
                                     x.shape, x.dtype)
    return x
  return jax.tree_util.tree_map_with_path(f, params)


def test_config_validates_targets():
  assert LoraConfig(targets=("q", "gate")).targets == ("q_proj", "gate_proj")
  with pytest.raises(ValueError, match="qq"):
    LoraConfig(targets=("qq",))
  with pytest.raises(ValueError, match="rank"):
    LoraConfig(rank=0)


@pytest.mark.parametrize("targets", [("q", "v"), ("q", "k", "v", "o", "gate",
                                                  "up", "down")])
def test_fresh_adapter_equals_base_exactly(targets):
  base, adapted, params, lcfg = _models(targets)
  init = adapted.init(jax.random.PRNGKey(0), IDS)["params"]
  # The adapted tree is the base tree plus lora leaves beside the kernels.
  assert jax.tree_util.tree_structure(lora.strip_lora(init)) == \
      jax.tree_util.tree_structure(params)
  with_lora = lora.add_lora(params, lcfg, jax.random.PRNGKey(3))
  assert jax.tree_util.tree_structure(with_lora) == \
      jax.tree_util.tree_structure(init)
  n_adapters = len(lora.lora_params(with_lora)) // 2
  assert n_adapters == 2 * len(targets)  # 2 layers
  for fwd in (lambda m, p: m.apply({"params": p}, IDS, attention_mask=MASK),
              jax.jit(lambda m, p: m.apply({"params": p}, IDS,
                                           attention_mask=MASK),
                      static_argnums=0)):
    ref = fwd(base, params).logits
    got = fwd(adapted, with_lora).logits
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))


def test_adapter_is_used_and_merge_equals_unmerged():
  base, adapted, params, lcfg = _models(("q", "v", "down"))
  p = _randomize_b(lora.add_lora(params, lcfg, jax.random.PRNGKey(3)))
  unmerged = adapted.apply({"params": p}, IDS, attention_mask=MASK).logits
  plain = base.apply({"params": params}, IDS, attention_mask=MASK).logits
  assert np.abs(np.asarray(unmerged - plain)).max() > 1e-3
  merged_params = lora.merge_lora(p, lcfg)
  assert not lora.lora_params(merged_params)
  merged = base.apply({"params": merged_params}, IDS, attention_mask=MASK).logits
  np.testing.assert_allclose(np.asarray(merged), np.asarray(unmerged),
                             atol=1e-5, rtol=0)
  # Also accepts the LlamaConfig that carries the LoraConfig.
  again = lora.merge_lora(p, adapted.config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, merged_params)


def test_lora_dropout_only_when_not_deterministic():
  cfg = LlamaConfig.tiny(lora=LoraConfig(rank=4, dropout=0.5, targets=("q",)))
  model = Llama(cfg)
  p = _randomize_b(model.init(jax.random.PRNGKey(0), IDS)["params"])
  det = model.apply({"params": p}, IDS).logits
  det2 = model.apply({"params": p}, IDS, deterministic=True).logits
  np.testing.assert_array_equal(det, det2)
  sto = model.apply({"params": p}, IDS, deterministic=False,
                    rngs={"dropout": jax.random.PRNGKey(1)}).logits
  assert np.abs(np.asarray(sto - det)).max() > 1e-4


def test_param_label():
  assert lora.param_label("layers_0/attn/q_proj/lora/a") == "lora"
  assert lora.param_label("layers_0/attn/q_proj/kernel") == "llm_base"
  assert lora.param_label("['layers_0']['attn']['v_proj']['lora']['b']") == "lora"
  _, _, params, lcfg = _models()
  labels = lora.param_labels(lora.add_lora(params, lcfg, jax.random.PRNGKey(0)))
  assert labels["layers_1"]["attn"]["v_proj"]["lora"]["b"] == "lora"
  assert labels["layers_1"]["attn"]["v_proj"]["kernel"] == "llm_base"
  assert labels["embed_tokens"]["embedding"] == "llm_base"


def test_only_adapters_change_under_multi_transform():
  _, adapted, params, lcfg = _models(("q", "v"))
  p = lora.add_lora(params, lcfg, jax.random.PRNGKey(3))
  label_map = {"lora": "trainable", "llm_base": "frozen"}
  labels = jax.tree_util.tree_map_with_path(
      lambda path, _: label_map[lora.param_label(path)], p)
  tx = optax.multi_transform({"trainable": optax.adamw(1e-2),
                              "frozen": optax.set_to_zero()}, labels)
  opt_state = tx.init(p)
  # Frozen leaves get no optimizer state: adam moments cover adapters only.
  adam_state = opt_state.inner_states["trainable"].inner_state
  mu_leaves = [x for x in jax.tree_util.tree_leaves(adam_state[0].mu)
               if hasattr(x, "shape") and x.size > 0]
  n_lora = len(lora.lora_params(p))
  assert len(mu_leaves) == n_lora
  assert not jax.tree_util.tree_leaves(opt_state.inner_states["frozen"])

  def loss_fn(p):
    logits = adapted.apply({"params": p}, IDS, attention_mask=MASK).logits
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.mean(jnp.take_along_axis(logp, IDS[:, 1:, None], axis=-1))

  @jax.jit
  def step(p, s):
    grads = jax.grad(loss_fn)(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s

  new, _ = step(p, opt_state)
  for path, old_leaf in jax.tree_util.tree_leaves_with_path(p):
    new_leaf = new
    for k in path:
      new_leaf = new_leaf[k.key]
    if lora.param_label(path) == "lora":
      assert np.abs(np.asarray(new_leaf - old_leaf)).max() > 0, path
    else:
      np.testing.assert_array_equal(np.asarray(new_leaf), np.asarray(old_leaf))


def test_save_and_load_adapter(tmp_path):
  _, adapted, params, lcfg = _models()
  p = _randomize_b(lora.add_lora(params, lcfg, jax.random.PRNGKey(3)))
  path = lora.save_adapter(str(tmp_path / "adapter"), p)
  fresh = lora.add_lora(params, lcfg, jax.random.PRNGKey(9))
  loaded = lora.load_adapter(path, fresh)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, p)
  other = lora.add_lora(params, LoraConfig(rank=4, targets=("q", "k")),
                        jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="k_proj"):
    lora.load_adapter(path, other)
  wrong_rank = lora.add_lora(params, LoraConfig(rank=2, targets=("q", "v")),
                             jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="shape"):
    lora.load_adapter(path, wrong_rank)


def test_bf16_base_with_float32_adapters():
  cfg = LlamaConfig.tiny(param_dtype=jnp.bfloat16, dtype=jnp.bfloat16,
                         lora=LoraConfig(rank=4))
  p = Llama(cfg).init(jax.random.PRNGKey(0), IDS)["params"]
  for path, leaf in jax.tree_util.tree_leaves_with_path(p):
    want = jnp.float32 if lora.param_label(path) == "lora" else jnp.bfloat16
    assert leaf.dtype == want, path
  out = Llama(cfg).apply({"params": p}, IDS)
  assert out.logits.dtype == jnp.float32
