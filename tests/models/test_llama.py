"""LLaMA decoder: rotary embeddings, masks, embeddings input, precision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbrjax.models.llama import (Llama, LlamaConfig, apply_rotary, param_shapes,
                                 rotary_cos_sin)

IDS = jnp.asarray(np.random.RandomState(0).randint(0, 128, size=(3, 8)))


@pytest.fixture(scope="module")
def tiny():
  model = Llama(LlamaConfig.tiny())
  params = model.init(jax.random.PRNGKey(0), IDS)["params"]
  # Non-unit norm scales so norm placement matters.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 1.3 if p[-1].key == "scale" else x * 4.0, params)
  return model, params


def test_rotary_matches_complex_reference():
  rng = np.random.RandomState(0)
  b, l, h, d, theta = 2, 5, 3, 16, 500.0
  x = rng.randn(b, l, h, d).astype(np.float32)
  for hi, atol in ((64, 1e-5), (4000, 5e-4)):
    pos = rng.randint(0, hi, size=(b, l))
    cos, sin = rotary_cos_sin(jnp.asarray(pos), d, theta)
    got = np.asarray(apply_rotary(jnp.asarray(x), cos, sin))
    # Rotate-half pairs coordinate i with i + d/2: one complex number each.
    z = x[..., :d // 2] + 1j * x[..., d // 2:]
    freqs = 1.0 / theta ** (np.arange(0, d, 2) / d)
    z = z * np.exp(1j * pos[:, :, None, None] * freqs)
    ref = np.concatenate([z.real, z.imag], axis=-1)
    # Angles are formed in float32 (as HF does). Below 4096 rad their rounding
    # is <= 1.2e-4 rad (half of float32's spacing 2.4e-4), times |z| <= ~3:
    # hence 5e-4 for long positions; short ones are held to 1e-5.
    np.testing.assert_allclose(got, ref, atol=atol, rtol=0)
  # Rotation preserves norms and is relative: <R(m)q, R(n)k> depends on m - n.
  q, k = x[:1, :1], x[1:, :1]
  def dot(m, n):
    cq, sq = rotary_cos_sin(jnp.asarray([[m]]), d, theta)
    ck, sk = rotary_cos_sin(jnp.asarray([[n]]), d, theta)
    return np.sum(np.asarray(apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)),
                  axis=-1)
  np.testing.assert_allclose(dot(7, 3), dot(104, 100), atol=1e-4)


def test_param_paths_are_readable(tiny):
  _, params = tiny
  flat = {"/".join(k.key for k in p) for p, _ in
          jax.tree_util.tree_leaves_with_path(params)}
  for path in ("embed_tokens/embedding", "layers_0/attn/q_proj/kernel",
               "layers_1/attn/o_proj/kernel", "layers_0/mlp/gate_proj/kernel",
               "layers_0/mlp/down_proj/kernel", "layers_0/input_layernorm/scale",
               "layers_0/post_attention_layernorm/scale", "norm/scale",
               "lm_head/kernel"):
    assert path in flat
  assert params["layers_0"]["attn"]["k_proj"]["kernel"].shape == (64, 32)  # GQA


def test_jit_equals_eager_and_embeds_equal_ids(tiny):
  model, params = tiny
  mask = jnp.asarray([[1] * 8, [1] * 5 + [0] * 3, [1] + [0] * 7])
  eager = model.apply({"params": params}, IDS, attention_mask=mask)
  jitted = jax.jit(lambda p: model.apply({"params": p}, IDS,
                                         attention_mask=mask))(params)
  np.testing.assert_allclose(eager.logits, jitted.logits, atol=1e-5, rtol=0)
  emb = model.apply({"params": params}, IDS, method=model.embed)
  assert emb.shape == (3, 8, 64)
  via_embeds = model.apply({"params": params}, inputs_embeds=emb,
                           attention_mask=mask)
  np.testing.assert_array_equal(via_embeds.logits, eager.logits)
  no_logits = model.apply({"params": params}, IDS, attention_mask=mask,
                          return_logits=False)
  assert no_logits.logits is None
  np.testing.assert_array_equal(no_logits.hidden_states, eager.hidden_states)
  with pytest.raises(ValueError, match="exactly one"):
    model.apply({"params": params}, IDS, inputs_embeds=emb)


def test_init_from_embeds_creates_embedding():
  model = Llama(LlamaConfig.tiny())
  p = model.init(jax.random.PRNGKey(0), inputs_embeds=jnp.zeros((1, 3, 64)))
  assert p["params"]["embed_tokens"]["embedding"].shape == (128, 64)


def test_padding_does_not_leak_and_is_finite(tiny):
  model, params = tiny
  fwd = jax.jit(lambda i, m: model.apply({"params": params}, i,
                                         attention_mask=m).logits)
  mask = jnp.asarray([[1] * 5 + [0] * 3] * 3)
  a = fwd(IDS, mask)
  other = IDS.at[:, 5:].set(7)  # different tokens in the padding
  b = fwd(other, mask)
  np.testing.assert_array_equal(a[:, :5], b[:, :5])
  alone = fwd(IDS[:, :5], jnp.ones((3, 5), jnp.int32))
  np.testing.assert_allclose(a[:, :5], alone, atol=1e-5, rtol=0)
  # A row of padding only stays finite.
  empty = fwd(IDS, jnp.zeros((3, 8), jnp.int32))
  assert np.all(np.isfinite(np.asarray(empty)))


def test_causality(tiny):
  model, params = tiny
  a = model.apply({"params": params}, IDS).logits
  b = model.apply({"params": params}, IDS.at[:, 6:].set(3)).logits
  np.testing.assert_array_equal(a[:, :6], b[:, :6])
  assert np.abs(np.asarray(a[:, 6:] - b[:, 6:])).max() > 1e-4


def test_gqa_equals_mha_with_repeated_kv_heads():
  gqa = Llama(LlamaConfig.tiny())
  mha = Llama(LlamaConfig.tiny(num_kv_heads=4))
  p = gqa.init(jax.random.PRNGKey(1), IDS)["params"]
  p_mha = jax.tree_util.tree_map(lambda x: x, p)
  for i in range(2):
    for name in ("k_proj", "v_proj"):
      k = p[f"layers_{i}"]["attn"][name]["kernel"].reshape(64, 2, 16)
      p_mha[f"layers_{i}"]["attn"][name] = {
          "kernel": jnp.repeat(k, 2, axis=1).reshape(64, 64)}
  np.testing.assert_allclose(gqa.apply({"params": p}, IDS).logits,
                             mha.apply({"params": p_mha}, IDS).logits,
                             atol=1e-5, rtol=0)


def test_remat_and_tied_embeddings():
  cfg = LlamaConfig.tiny(tie_word_embeddings=True)
  model = Llama(cfg)
  p = model.init(jax.random.PRNGKey(0), IDS)["params"]
  assert "lm_head" not in p
  ref = model.apply({"params": p}, IDS)
  np.testing.assert_allclose(
      ref.logits, ref.hidden_states @ p["embed_tokens"]["embedding"].T,
      atol=1e-5, rtol=0)
  remat = Llama(cfg.replace(remat=True))
  loss = lambda m: (lambda q: jnp.sum(m.apply({"params": q}, IDS).logits ** 2))
  g_ref = jax.grad(loss(model))(p)
  g_remat = jax.jit(jax.grad(loss(remat)))(p)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5),
      g_ref, g_remat)


def test_bf16_forward_close_to_fp32(tiny):
  model, params = tiny
  ref = model.apply({"params": params}, IDS).logits
  bf_cfg = LlamaConfig.tiny(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  bf_params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
  got = Llama(bf_cfg).apply({"params": bf_params}, IDS).logits
  assert got.dtype == jnp.float32
  scale = float(jnp.abs(ref).max())
  err = float(jnp.abs(got - ref).max())
  # bf16 has an 8-bit mantissa (rel. step 2^-8 ~ 0.4%); two layers of matmuls
  # over bf16 weights stay within 3% of the largest logit here.
  assert err < 0.03 * scale, (err, scale)
  assert float(jnp.mean(jnp.argmax(got, -1) == jnp.argmax(ref, -1))) > 0.9


def test_presets_and_param_count():
  shapes = param_shapes(LlamaConfig.llama2_7b(param_dtype=jnp.bfloat16))
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
  assert n == 6_738_415_616  # Llama-2-7b
  smol = LlamaConfig.smollm2_135m()
  assert (smol.head_dim, smol.num_kv_heads, smol.tie_word_embeddings) == (64, 3, True)
  n_smol = sum(int(np.prod(x.shape)) for x in
               jax.tree_util.tree_leaves(param_shapes(smol)))
  assert n_smol == 134_515_008  # SmolLM2-135M
  assert LlamaConfig.llama2_13b().num_layers == 40
  with pytest.raises(ValueError, match="num_kv_heads"):
    LlamaConfig.tiny(num_kv_heads=3)


def test_from_hf_config_dict():
  cfg = LlamaConfig.from_hf_config({
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
      "num_hidden_layers": 1, "num_attention_heads": 2,
      "num_key_value_heads": 1, "rope_parameters": {"rope_theta": 5e5,
                                                    "rope_type": "default"},
      "rms_norm_eps": 1e-5, "tie_word_embeddings": True})
  assert (cfg.head_dim, cfg.rope_theta, cfg.num_kv_heads) == (4, 5e5, 1)
  with pytest.raises(ValueError, match="gpt2"):
    LlamaConfig.from_hf_config({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
