"""HF safetensors / GGUF import: logits equal transformers' on random models."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch
import transformers

from sbrjax.convert import hf_llama
from sbrjax.models.llama import Llama, LlamaConfig


def _hf_model(num_kv_heads, tie=False, seed=0):
  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(
      vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=num_kv_heads,
      max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
      tie_word_embeddings=tie, initializer_range=0.1)
  model = transformers.LlamaForCausalLM(cfg).float().eval()
  # Non-trivial norm weights so a misplaced norm cannot pass.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
  return model


@pytest.fixture(scope="module", params=[("mha", 4, False), ("gqa", 2, False),
                                        ("gqa_tied", 2, True)],
                ids=lambda p: p[0])
def hf_dir(request, tmp_path_factory):
  name, kv, tie = request.param
  model = _hf_model(kv, tie)
  path = tmp_path_factory.mktemp(name)
  model.save_pretrained(path, safe_serialization=True)
  return model, str(path)


def _hf_logits(model, ids, mask=None, position_ids=None):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(np.asarray(ids)),
                attention_mask=None if mask is None else torch.tensor(np.asarray(mask)),
                position_ids=None if position_ids is None else torch.tensor(
                    np.asarray(position_ids)))
  return out.logits.float().numpy()


def _ours(path, dtype=jnp.float32):
  cfg = hf_llama.load_hf_config(path)
  params = hf_llama.load_hf_params(path, cfg, dtype=dtype)
  return Llama(cfg), params


def test_logits_match_hf_unpadded(hf_dir):
  model, path = hf_dir
  ours, params = _ours(path)
  ids = np.random.RandomState(0).randint(0, 96, size=(2, 11))
  ref = _hf_logits(model, ids)
  got = ours.apply({"params": params}, jnp.asarray(ids)).logits
  assert np.abs(ref).max() > 0.5  # the check is not vacuous
  np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=0)
  got_jit = jax.jit(lambda p, i: ours.apply({"params": p}, i).logits)(params, ids)
  np.testing.assert_allclose(np.asarray(got_jit), ref, atol=1e-4, rtol=0)


def test_logits_match_hf_right_and_left_padding(hf_dir):
  model, path = hf_dir
  ours, params = _ours(path)
  rng = np.random.RandomState(1)
  lengths = [9, 4, 1]
  ids = rng.randint(0, 96, size=(3, 9))
  right = (np.arange(9)[None] < np.array(lengths)[:, None]).astype(np.int32)
  fwd = jax.jit(lambda p, i, m: ours.apply({"params": p}, i,
                                           attention_mask=m).logits)
  got = np.asarray(fwd(params, ids, right))
  ref = _hf_logits(model, ids, right)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(got[b, :n], ref[b, :n], atol=1e-4, rtol=0)
    alone = _hf_logits(model, ids[b:b + 1, :n])[0]
    np.testing.assert_allclose(got[b, :n], alone, atol=1e-4, rtol=0)
  # Left padding: default position ids count real tokens, so each row equals
  # the unpadded sequence (HF needs the position ids passed explicitly).
  left_ids = np.zeros_like(ids)
  left = np.zeros_like(right)
  for b, n in enumerate(lengths):
    left_ids[b, 9 - n:] = ids[b, :n]
    left[b, 9 - n:] = 1
  got_left = np.asarray(fwd(params, left_ids, left))
  pos = np.maximum(np.cumsum(left, -1) - 1, 0)
  ref_left = _hf_logits(model, left_ids, left, pos)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(got_left[b, 9 - n:], got[b, :n], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_left[b, 9 - n:], ref_left[b, 9 - n:],
                               atol=1e-4, rtol=0)
    assert np.all(np.isfinite(got_left[b]))


def test_sharded_checkpoint_with_index(tmp_path):
  model = _hf_model(2, seed=3)
  model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
  assert os.path.exists(tmp_path / hf_llama.INDEX_FILE)
  shards = hf_llama.list_shards(str(tmp_path))
  assert len(shards) > 1
  ours, params = _ours(str(tmp_path))
  ids = np.random.RandomState(2).randint(0, 96, size=(2, 7))
  np.testing.assert_allclose(
      np.asarray(ours.apply({"params": params}, ids).logits),
      _hf_logits(model, ids), atol=1e-4, rtol=0)


def test_missing_shard_names_file(tmp_path):
  model = _hf_model(2, seed=3)
  model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
  shard = sorted(hf_llama.list_shards(str(tmp_path)))[-1]
  os.remove(tmp_path / shard)
  with pytest.raises(FileNotFoundError, match=shard):
    hf_llama.load_hf_params(str(tmp_path))


def test_wrong_shape_names_tensor(tmp_path):
  from safetensors.numpy import save_file
  model = _hf_model(2)
  model.save_pretrained(tmp_path, safe_serialization=True)
  tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  tensors["model.layers.1.self_attn.k_proj.weight"] = np.zeros((16, 64),
                                                               np.float32)
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.k_proj"
                     r"\.weight.*model\.safetensors.*\(16, 64\)"):
    hf_llama.load_hf_params(str(tmp_path))


def test_unexpected_and_missing_tensors(tmp_path):
  from safetensors.numpy import save_file
  model = _hf_model(2)
  model.save_pretrained(tmp_path, safe_serialization=True)
  tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  extra = dict(tensors, **{"model.layers.7.mlp.up_proj.weight":
                           tensors["model.layers.0.mlp.up_proj.weight"]})
  save_file(extra, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=r"model\.layers\.7\.mlp\.up_proj"):
    hf_llama.load_hf_params(str(tmp_path))
  del tensors["model.norm.weight"]
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match="norm/scale"):
    hf_llama.load_hf_params(str(tmp_path))


def test_unsupported_architecture(tmp_path):
  cfg = {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
         "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
         "num_hidden_layers": 1, "num_attention_heads": 2}
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="MistralForCausalLM"):
    hf_llama.load_hf_params(str(tmp_path))
  cfg.update(architectures=["LlamaForCausalLM"], model_type="llama",
             rope_scaling={"rope_type": "linear", "factor": 2.0})
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="rope_scaling"):
    LlamaConfig.from_hf_config(str(tmp_path))


def test_bf16_import_and_orbax_roundtrip(hf_dir, tmp_path):
  model, path = hf_dir
  ours, params = _ours(path, dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(params))
  hf_llama.save_params(tmp_path / "ckpt", params)
  restored = hf_llama.restore_params(tmp_path / "ckpt")
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
      params, restored)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(restored))


def test_bf16_safetensors_read(tmp_path):
  model = _hf_model(2).to(torch.bfloat16)
  model.save_pretrained(tmp_path, safe_serialization=True)
  ref = {k: v.float().numpy() for k, v in model.state_dict().items()}
  params = hf_llama.load_hf_params(str(tmp_path), dtype=jnp.float32)
  np.testing.assert_array_equal(
      np.asarray(params["layers_1"]["attn"]["q_proj"]["kernel"]),
      ref["model.layers.1.self_attn.q_proj.weight"].T)
  np.testing.assert_array_equal(np.asarray(params["embed_tokens"]["embedding"]),
                                ref["model.embed_tokens.weight"])


# ----------------------------------------------------------------------------
# GGUF: a file written the way llama.cpp's converter writes LLaMA.


def _permute(w, n_head):
  """llama.cpp convert_hf_to_gguf's q/k row permutation."""
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _write_gguf(model, path, qtype=None, arch="llama", extra=None):
  import gguf
  c = model.config
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(c.num_hidden_layers)
  w.add_context_length(c.max_position_embeddings)
  w.add_embedding_length(c.hidden_size)
  w.add_feed_forward_length(c.intermediate_size)
  w.add_head_count(c.num_attention_heads)
  w.add_head_count_kv(c.num_key_value_heads)
  w.add_rope_freq_base(10000.0)
  w.add_layer_norm_rms_eps(c.rms_norm_eps)
  sd = {k: v.detach().numpy().astype(np.float32)
        for k, v in model.state_dict().items()}
  names = {"model.embed_tokens.weight": "token_embd.weight",
           "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
  block = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
           "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
           "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
           "post_attention_layernorm": "ffn_norm"}
  written = {}
  for k, v in sd.items():
    if k in names:
      name = names[k]
    else:
      i, rest = k[len("model.layers."):].split(".", 1)
      name = f"blk.{i}.{block[rest[:-len('.weight')]]}.weight"
    if name.endswith("attn_q.weight"):
      v = _permute(v, c.num_attention_heads)
    elif name.endswith("attn_k.weight"):
      v = _permute(v, c.num_key_value_heads)
    if qtype is not None and v.ndim == 2:
      w.add_tensor(name, gguf.quants.quantize(v, qtype),
                   raw_dtype=qtype)
      v = gguf.quants.dequantize(gguf.quants.quantize(v, qtype), qtype)
    else:
      w.add_tensor(name, v)
    written[name] = v
  for name, (data, raw_dtype) in (extra or {}).items():
    w.add_tensor(name, data, raw_dtype=raw_dtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return written


@pytest.mark.parametrize("num_kv_heads", [4, 2])
def test_gguf_f32_logits_match_hf(tmp_path, num_kv_heads):
  from sbrjax.convert import gguf as gguf_convert
  model = _hf_model(num_kv_heads, seed=4)
  _write_gguf(model, tmp_path / "m.gguf")
  cfg, params = gguf_convert.load_gguf(str(tmp_path / "m.gguf"))
  assert (cfg.num_kv_heads, cfg.num_layers, cfg.tie_word_embeddings) == (
      num_kv_heads, 2, False)
  ids = np.random.RandomState(5).randint(0, 96, size=(2, 9))
  got = jax.jit(lambda p: Llama(cfg).apply({"params": p}, ids).logits)(params)
  np.testing.assert_allclose(np.asarray(got), _hf_logits(model, ids),
                             atol=1e-4, rtol=0)


def test_gguf_q8_0_dequantized_and_unpermuted(tmp_path):
  import gguf
  from sbrjax.convert import gguf as gguf_convert
  model = _hf_model(2, seed=6)
  written = _write_gguf(model, tmp_path / "q.gguf", qtype=gguf.GGMLQuantizationType.Q8_0)
  _, params = gguf_convert.load_gguf(str(tmp_path / "q.gguf"))
  q = written["blk.1.attn_q.weight"]  # permuted + quantization round trip
  np.testing.assert_array_equal(
      np.asarray(params["layers_1"]["attn"]["q_proj"]["kernel"]),
      gguf_convert.unpermute_qk(q, 4).T)
  k = written["blk.0.attn_k.weight"]
  np.testing.assert_array_equal(
      np.asarray(params["layers_0"]["attn"]["k_proj"]["kernel"]),
      gguf_convert.unpermute_qk(k, 2).T)
  ref_k = model.state_dict()["model.layers.0.self_attn.k_proj.weight"].numpy()
  np.testing.assert_allclose(gguf_convert.unpermute_qk(k, 2), ref_k,
                             atol=np.abs(ref_k).max() / 100)  # 8-bit blocks


def test_gguf_unsupported_quant_type_names_tensor(tmp_path):
  import gguf as g
  from sbrjax.convert import gguf as gguf_convert
  # Q8_K (llama.cpp's intermediate type) has no dequantizer in gguf-py.
  path = tmp_path / "bad.gguf"
  w = g.GGUFWriter(str(path), "llama")
  for fn, v in (("add_block_count", 1), ("add_embedding_length", 256),
                ("add_feed_forward_length", 256), ("add_head_count", 2)):
    getattr(w, fn)(v)
  w.add_tensor("token_embd.weight", np.zeros((4, 292), np.uint8),
               raw_dtype=g.GGMLQuantizationType.Q8_K)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(ValueError, match=r"token_embd\.weight.*Q8_K"):
    gguf_convert.load_gguf(str(path))


def test_gguf_unsupported_architecture(tmp_path):
  model = _hf_model(2, seed=6)
  _write_gguf(model, tmp_path / "g.gguf", arch="gemma")
  from sbrjax.convert import gguf as gguf_convert
  with pytest.raises(ValueError, match="gemma"):
    gguf_convert.load_gguf(str(tmp_path / "g.gguf"))


def test_load_llm_caches_converted_params(hf_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from sbrjax import llm
  from sbrjax.models.lora import LoraConfig
  model, src = hf_dir
  path = str(tmp_path / "model")
  shutil.copytree(src, path)
  cache = str(tmp_path / "params")
  m1, p1, tok = llm.load_llm(path, dtype=jnp.float32, params_cache=cache,
                             tokenizer=False)
  assert tok is None and os.path.isdir(cache)
  from sbrjax.convert import hf_llama as hf_llama_lib  # pylint: disable=g-import-not-at-top
  real = hf_llama_lib.load_hf_params
  hf_llama_lib.load_hf_params = None  # the second load must come from the cache
  try:
    m2, p2, _ = llm.load_llm(path, dtype=jnp.float32, params_cache=cache,
                             tokenizer=False, lora=LoraConfig(rank=2))
  finally:
    hf_llama_lib.load_hf_params = real
  assert m2.config.lora.rank == 2
  ids = np.random.RandomState(7).randint(0, 96, size=(1, 5))
  np.testing.assert_array_equal(m1.apply({"params": p1}, ids).logits,
                                m2.apply({"params": p2}, ids).logits)
  np.testing.assert_allclose(np.asarray(m1.apply({"params": p1}, ids).logits),
                             _hf_logits(model, ids), atol=1e-4, rtol=0)
  # Other weights saved at the same path: converted again, never the stale tree.
  other = _hf_model(model.config.num_key_value_heads, model.config.tie_word_embeddings,
                    seed=11)
  other.save_pretrained(path, safe_serialization=True)
  m3, p3, _ = llm.load_llm(path, dtype=jnp.float32, params_cache=cache, tokenizer=False)
  np.testing.assert_allclose(np.asarray(m3.apply({"params": p3}, ids).logits),
                             _hf_logits(other, ids), atol=1e-4, rtol=0)
  assert len([d for d in os.listdir(cache) if d != "source.json"]) == 1
