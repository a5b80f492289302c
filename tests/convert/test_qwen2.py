"""Qwen2 (LLM4SBR's LLM family): logits and greedy decoding equal transformers'."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from sbrjax import llm
from sbrjax.convert import hf_llama
from sbrjax.models import generate as generate_lib
from sbrjax.models.llama import LlamaConfig


def _qwen2(tie: bool, seed: int = 0):
  torch.manual_seed(seed)
  cfg = transformers.Qwen2Config(
      vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
      rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=tie,
      initializer_range=0.1, use_sliding_window=False)
  model = transformers.Qwen2ForCausalLM(cfg).float().eval()
  # Non-trivial norms and q/k/v biases (HF initialises biases to zero), so a
  # dropped bias or a misplaced norm cannot pass.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
      elif name.endswith(".bias"):
        p.normal_(0.0, 0.5)
  return model


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def qwen2_dir(request, tmp_path_factory):
  model = _qwen2(tie=request.param)
  path = tmp_path_factory.mktemp("qwen2")
  model.save_pretrained(path, safe_serialization=True)
  return model, str(path)


def test_config_reads_qwen2_biases_rope_and_head(qwen2_dir):
  model, path = qwen2_dir
  cfg = hf_llama.load_hf_config(path)
  assert cfg.attention_bias and cfg.rope_theta == 1_000_000.0
  assert cfg.tie_word_embeddings == model.config.tie_word_embeddings
  params = hf_llama.load_hf_params(path, cfg)
  attn = params["layers_0"]["attn"]
  assert set(attn["q_proj"]) == {"kernel", "bias"} and set(attn["o_proj"]) == {"kernel"}
  assert ("lm_head" in params) != cfg.tie_word_embeddings
  np.testing.assert_array_equal(
      np.asarray(attn["k_proj"]["bias"]),
      model.model.layers[0].self_attn.k_proj.bias.detach().numpy())


def test_logits_match_transformers_with_padding(qwen2_dir):
  model, path = qwen2_dir
  ours, params, tok = llm.load_llm(llm.LLMSpec(source="hf", path=path), tokenizer=False)
  assert tok is None
  rng = np.random.RandomState(0)
  lengths = [11, 6, 1]
  ids = rng.randint(0, 96, size=(3, 11))
  mask = (np.arange(11)[None] < np.array(lengths)[:, None]).astype(np.int32)
  got = np.asarray(jax.jit(lambda p, i, m: ours.apply(
      {"params": p}, i, attention_mask=m).logits)(params, ids, mask))
  for b, n in enumerate(lengths):
    with torch.no_grad():
      ref = model(input_ids=torch.tensor(ids[b:b + 1, :n])).logits[0].numpy()
    assert np.abs(ref).max() > 0.5  # not vacuous
    np.testing.assert_allclose(got[b, :n], ref, atol=1e-4, rtol=0)


def test_greedy_kv_cache_decoding_matches_transformers(qwen2_dir):
  model, path = qwen2_dir
  ours, params, _ = llm.load_llm(llm.LLMSpec(source="hf", path=path), tokenizer=False)
  ids = np.random.RandomState(1).randint(3, 96, size=(1, 7)).astype(np.int32)
  new = generate_lib.generate(ours, params, jnp.asarray(ids), jnp.ones_like(ids), 6)
  with torch.no_grad():
    ref = model.generate(torch.tensor(ids, dtype=torch.long), max_new_tokens=6,
                         do_sample=False, eos_token_id=None, pad_token_id=0)
  np.testing.assert_array_equal(np.asarray(new)[0], ref[0, 7:].numpy())


def test_sliding_window_and_llama_attention_bias_are_refused(tmp_path):
  cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
         "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
         "num_hidden_layers": 1, "num_attention_heads": 2, "use_sliding_window": True}
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="use_sliding_window"):
    LlamaConfig.from_hf_config(str(tmp_path))
  cfg.update(architectures=["LlamaForCausalLM"], model_type="llama",
             use_sliding_window=False, attention_bias=True)
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="attention_bias"):
    LlamaConfig.from_hf_config(str(tmp_path))


def test_qwen2_7b_preset_shape():
  shapes = jax.eval_shape(lambda: llm.init_llm_params(llm.llm_config(
      llm.LLMSpec(source="random", preset="qwen2_7b")), 0))
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
  assert n == 7_615_616_512  # Qwen2-7B's published parameter count
