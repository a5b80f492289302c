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


def _bf16_round(a):
  return np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32), np.float64)


def test_matmul_float32_is_jnp_dot():
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(3, 5, 16), jnp.float32)
  w = jnp.asarray(rng.randn(16, 8), jnp.float32)
  np.testing.assert_array_equal(lora.matmul(x, w, jnp.float32), jnp.dot(x, w))
  g_mine = jax.grad(lambda x, w: lora.matmul(x, w, jnp.float32).sum(), (0, 1))(x, w)
  g_dot = jax.grad(lambda x, w: jnp.dot(x, w).sum(), (0, 1))(x, w)
  for a, b in zip(g_mine, g_dot):
    np.testing.assert_array_equal(a, b)


def test_matmul_bf16_value_and_grads_equal_numpy():
  """A bf16 product and both gradients: bf16 operands, float64 sums, one bf16 rounding."""
  rng = np.random.RandomState(1)
  x, w = rng.randn(2, 7, 64), rng.randn(64, 24)
  ct = rng.randn(2, 7, 24)
  y, vjp = jax.vjp(lambda x, w: lora.matmul(x, w, jnp.bfloat16),
                   jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
  assert y.dtype == jnp.bfloat16
  dx, dw = vjp(jnp.asarray(ct, jnp.bfloat16))
  assert dx.dtype == dw.dtype == jnp.float32  # cotangents of the float32 inputs
  xb, wb, gb = _bf16_round(x), _bf16_round(w), _bf16_round(ct)
  want = {"y": (y, xb @ wb), "dx": (dx, gb @ wb.T),
          "dw": (dw, xb.reshape(-1, 64).T @ gb.reshape(-1, 24))}
  for name, (got, ref) in want.items():
    got = np.asarray(jnp.asarray(got, jnp.float32), np.float64)
    # Float32 accumulation, then one rounding to bf16 (relative step 2^-8).
    np.testing.assert_allclose(got, _bf16_round(ref), rtol=2**-7, atol=1e-5, err_msg=name)
    # A bf16 accumulation over 64 (or 14) terms would be off by far more than one
    # rounding on some entries; the result is the rounded exact product.
    assert np.mean(got == _bf16_round(ref)) > 0.9, name


def test_matmul_bf16_dots_take_bf16_operands():
  """Forward and backward dots read bf16 operands and accumulate in float32.

  XLA's CPU backend converts both operands of a bf16 -> bf16 dot, and of the
  mixed float32 x bf16 dots plain autodiff writes, to float32 (off its bf16
  kernels); issue 12's bf16 train-step speed-up rests on this property.
  """
  x = jnp.ones((4, 8, 32), jnp.float32)
  w = jnp.ones((32, 16), jnp.bfloat16)
  jaxpr = jax.make_jaxpr(jax.grad(
      lambda x, w: lora.matmul(x, w, jnp.bfloat16).astype(jnp.float32).sum(),
      (0, 1)))(x, w)

  def dots(jpr):
    for eqn in jpr.eqns:
      if eqn.primitive.name == "dot_general":
        yield eqn
      for sub in jax.core.jaxprs_in_params(eqn.params):
        yield from dots(sub)

  found = list(dots(jaxpr.jaxpr))
  assert len(found) == 3  # y, dx, dw
  for eqn in found:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
    assert eqn.params["preferred_element_type"] == jnp.float32, eqn
