"""LLM4SBR stage 1: LLaMA intent generation, resumable cache, restriction, import."""

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sbrjax.data import digest
from sbrjax.data.types import PreparedData, Split
from sbrjax.llm4sbr import config as l4s_config
from sbrjax.llm4sbr import inference
from sbrjax.llm4sbr import intents as intents_lib


@pytest.fixture(scope="module")
def generator():
  cfg = ml_collections.ConfigDict(dict(source="random", preset="tiny", num_layers=0,
                                       dtype="float32", path=""))
  model, params, tok, _ = inference.load_generator_llm(cfg, seed=0)
  return inference.LLMIntentGenerator(model, params, tok, max_new_tokens=5,
                                      batch_size=4, chat=False, length_bucket=16)


def _prompts(rows=7):
  return {p: [f"session {r} clicks {'x' * (r % 3)} {p}" for r in range(rows)]
          for p in ("long_term", "short_term")}


def test_generator_matches_unbatched_greedy_decoding(generator):
  prompts = ["The user clicked A then B.", "Only C.", "D, E, F and G in a row."]
  batched = generator(prompts)
  single = [generator([p])[0] for p in prompts]
  assert batched == single
  # Reference: greedy decoding without a cache, one token at a time (the
  # prefix right-padded to a fixed width so the forward compiles once).
  tok, model, params = generator.tokenizer, generator.model, generator.params
  width = 64
  fwd = jax.jit(lambda i, m: model.apply({"params": params}, i, attention_mask=m).logits)
  for prompt, text in zip(prompts, batched):
    ids = tok.encode(prompt, add_special_tokens=True)
    n = len(ids)
    for _ in range(generator.max_new_tokens):
      padded = np.zeros((1, width), np.int32)
      padded[0, :len(ids)] = ids
      mask = (np.arange(width) < len(ids)).astype(np.int32)[None]
      nxt = int(jnp.argmax(fwd(padded, mask)[0, len(ids) - 1]))
      if nxt == tok.eos_token_id:
        break
      ids.append(nxt)
    assert text == tok.decode(ids[n:]).strip()


def test_interrupted_and_resumed_generation_equals_uninterrupted(generator, tmp_path):
  prompts = _prompts(7)  # 14 prompts -> chunks of 4: [0,4) [4,8) [8,12) [12,14)
  full = inference.generate_intent_texts(tmp_path / "a", prompts, generator, chunk_size=4)
  calls = []

  class Boom(RuntimeError):
    pass

  def flaky(batch):
    calls.append(len(batch))
    if len(calls) == 3:
      raise Boom()
    return generator(batch)

  with pytest.raises(Boom):
    inference.generate_intent_texts(tmp_path / "b", prompts, flaky, chunk_size=4)
  assert len(list((tmp_path / "b").glob("chunk-*.jsonl"))) == 2
  assert not list((tmp_path / "b").glob(".tmp-*"))
  seen = []

  def counting(batch):
    seen.append(len(batch))
    return generator(batch)

  resumed = inference.generate_intent_texts(tmp_path / "b", prompts, counting, chunk_size=4)
  assert seen == [4, 2]  # only the two unfinished chunks
  assert resumed == full
  assert sorted(full) == [str(r) for r in range(7)]
  assert set(full["3"]) == {"long_term", "short_term"}
  # A complete cache generates nothing.
  inference.generate_intent_texts(tmp_path / "b", prompts,
                                  lambda b: pytest.fail("regenerated"), chunk_size=4)


def test_corrupt_cache_chunk_is_reported(tmp_path):
  d = tmp_path / "s"
  d.mkdir()
  (d / "chunk-000000000-000000004.jsonl").write_text('{"row": 0, "perspective"\n')
  with pytest.raises(ValueError, match="chunk-000000000-000000004.jsonl:1: corrupt"):
    inference.generate_intent_texts(d, _prompts(2), lambda b: b, chunk_size=4)


def _data(distinct: bool = False):
  """Toy llm4sbr data; ``distinct`` gives every session its own clicks."""
  def split(sessions, first_user):
    seqs, targets, users = [], [], []
    for s, length in enumerate(sessions):
      shift = (first_user + s) % 10 if distinct else 0
      for k in range(1, length):  # prefixes of the session
        seqs.append([(j + shift) % 10 for j in range(k)])
        targets.append((k + shift) % 10)
        users.append(first_user + s)
    values = np.concatenate([np.asarray(x, np.int32) for x in seqs])
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in seqs])]).astype(np.int64)
    return Split(values, offsets, np.asarray(targets, np.int32), np.asarray(users, np.int32))
  return PreparedData("toy", "llm4sbr", 10, 30, [str(i) for i in range(10)],
                      [f"item {i}" for i in range(10)], split([3, 5, 4, 6] * 5, 0),
                      split([4, 3], 20), split([5, 2, 6], 22), "fp0")


def test_restrict_data_keeps_whole_sessions_and_longest_prefixes():
  data = _data()
  assert inference.restrict_data(data) is data
  out = inference.restrict_data(data, 0.5, 2, seed=1)
  assert out.fingerprint != data.fingerprint
  assert out.stats["restricted"]["num_train"] == len(out.train)
  for name in inference.SPLITS:
    sp, orig = getattr(out, name), getattr(data, name)
    sessions = np.unique(sp.users)
    assert len(sessions) == max(1, round(0.5 * len(np.unique(orig.users))))
    for s in sessions:
      kept = np.sort(sp.lengths[sp.users == s])
      full = np.sort(orig.lengths[orig.users == s])
      np.testing.assert_array_equal(kept, full[-2:])
  again = inference.restrict_data(data, 0.5, 2, seed=1)
  np.testing.assert_array_equal(again.train.users, out.train.users)
  with pytest.raises(ValueError, match="session_fraction"):
    inference.restrict_data(data, 0.0)


def test_imported_texts_build_validated_arrays(tmp_path):
  data = _data()
  config = l4s_config.llm4sbr_config()
  config.llm4sbr.cache_dir = str(tmp_path / "cache")
  config.llm4sbr.f = 0
  config.text_encoder.max_length = 16
  for name in inference.SPLITS:
    n = len(getattr(data, name))
    with open(tmp_path / f"{name}.jsonl", "w") as f:
      for r in range(n):
        f.write(json.dumps({"session": r, "long_term": f"item {r % 10}",
                            "short_term": f"item {(r + 1) % 10}"}) + "\n")
  config.llm4sbr.intent_texts = str(tmp_path / "{split}.jsonl")
  paths, _ = inference.ensure_intent_arrays(config, data)
  encoder = inference.load_text_encoder(config.text_encoder)
  got = inference.load_split_intents(paths["valid"], data, "valid", encoder.dim,
                                     ("short_term", "long_term"))
  n = len(data.valid)
  want = encoder.encode_texts([f"item {(r + 1) % 10}" for r in range(n)])
  np.testing.assert_allclose(got[:, 0], want, atol=1e-6)
  assert not isinstance(got, np.memmap)  # reordered: an in-memory copy
  same = inference.load_split_intents(paths["valid"], data, "valid", encoder.dim,
                                      ("long_term", "short_term"))
  assert isinstance(same, np.memmap)  # the stored order: stays memory-mapped
  np.testing.assert_array_equal(same[:, 1], got[:, 0])
  with pytest.raises(ValueError, match="fingerprint"):
    intents_lib.load_intent_array(paths["test"], expected_fingerprint="other",
                                  expected_rows=len(data.test), expected_dim=encoder.dim,
                                  perspectives=("long_term",))


def test_text_cache_key_is_content_and_seed_only_for_random_weights(tmp_path):
  cfg = l4s_config.llm4sbr_config()
  cfg.llm.source = "gguf"
  cfg.llm.path = str(tmp_path / "a" / "m.gguf")
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "m.gguf").write_bytes(b"GGUF weights one")
  assert inference.llm_cache_desc(cfg, 0) == inference.llm_cache_desc(cfg, 7)
  # A copy elsewhere is the same LLM; other bytes are another.
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "m.gguf").write_bytes(b"GGUF weights one")
  other = cfg.copy_and_resolve_references()
  other.llm.path = str(tmp_path / "b")  # a directory holding one .gguf
  assert inference.llm_cache_desc(other, 0) == inference.llm_cache_desc(cfg, 0)
  (tmp_path / "b" / "m.gguf").write_bytes(b"GGUF weights two!")
  assert inference.llm_cache_desc(other, 0) != inference.llm_cache_desc(cfg, 0)
  truncated = cfg.copy_and_resolve_references()
  truncated.llm.num_layers = 4  # a truncated LLM writes other texts
  assert inference.llm_cache_desc(truncated, 0) != inference.llm_cache_desc(cfg, 0)
  cfg.llm.source = "random"
  assert inference.llm_cache_desc(cfg, 0) != inference.llm_cache_desc(cfg, 7)
  for split in inference.SPLITS:
    (tmp_path / f"{split}.jsonl").write_text(f'{{"session": 0, "x": "{split}"}}\n')
  cfg.llm4sbr.intent_texts = str(tmp_path / "{split}.jsonl")
  desc = inference.llm_cache_desc(cfg, 0)
  assert set(desc["imported"]) == set(inference.SPLITS)
  assert str(tmp_path) not in json.dumps(desc)  # keyed by bytes, not by path


def _write_texts(tmp_path, data, word):
  for name in inference.SPLITS:
    with open(tmp_path / f"{name}.jsonl", "w") as f:
      for r in range(len(getattr(data, name))):
        f.write(json.dumps({"session": r, "long_term": f"{word} {r % 10}",
                            "short_term": f"{word} {(r + 1) % 10}"}) + "\n")


def test_arrays_rebuilt_when_imported_texts_change_at_the_same_path(tmp_path):
  data = _data()
  config = l4s_config.llm4sbr_config()
  config.llm4sbr.cache_dir = str(tmp_path / "cache")
  config.llm4sbr.f = 2
  config.text_encoder.max_length = 16
  config.llm4sbr.intent_texts = str(tmp_path / "{split}.jsonl")
  _write_texts(tmp_path, data, "item")
  first, _ = inference.ensure_intent_arrays(config, data)
  again, _ = inference.ensure_intent_arrays(config, data)
  assert again == first  # unchanged bytes: the cache is used
  before = np.load(first["test"])
  _write_texts(tmp_path, data, "a rather different film")  # same path, new bytes
  second, summary = inference.ensure_intent_arrays(config, data)
  assert second["test"] != first["test"]
  encoder = inference.load_text_encoder(config.text_encoder)
  got = inference.load_split_intents(second["test"], data, "test", encoder.dim,
                                     ("long_term",))
  assert not np.allclose(got[:, 0], before[:, 0])
  # The arrays folder records what it was built from.
  key = json.loads((second["test"].parent / "key.json").read_text())
  assert key == json.loads(json.dumps(summary["array_key"]))
  assert key["f"] == 2 and key["data"] == data.fingerprint
  # Localized ids beside every split.
  ids, weights = intents_lib.load_localized(second["valid"])
  assert ids.shape == (len(data.valid), 2, 2)
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-5)


def test_texts_regenerated_when_the_llm_file_changes_at_the_same_path(tmp_path):
  data = _data(distinct=True)
  config = l4s_config.llm4sbr_config()
  config.llm4sbr.cache_dir = str(tmp_path / "cache")
  config.text_encoder.max_length = 16
  config.llm.source = "gguf"  # never loaded: generate_fn stands in for it
  gguf = tmp_path / "model.gguf"
  gguf.write_bytes(b"weights of the first model")
  config.llm.path = str(gguf)
  asked = []

  def answer(word):
    def fn(batch):
      asked.append(len(batch))
      return [f"{word} {len(p)}" for p in batch]
    return fn

  first, s1 = inference.ensure_intent_arrays(config, data, generate_fn=answer("one"))
  n_first = sum(asked)
  # Every prompt answered once (a prompt seen in an earlier split is copied).
  generated = sum(s1[f"{s}_generated_texts"] for s in inference.SPLITS)
  reused = sum(s1[f"{s}_reused_texts"] for s in inference.SPLITS)
  assert n_first == generated > 0
  assert generated + reused == 2 * sum(len(getattr(data, s)) for s in inference.SPLITS)
  inference.ensure_intent_arrays(config, data, generate_fn=answer("never"))
  assert sum(asked) == n_first  # the same weights: cached
  gguf.write_bytes(b"weights of a replacement model")  # same path, new bytes
  second, s2 = inference.ensure_intent_arrays(config, data, generate_fn=answer("two"))
  assert sum(asked) == 2 * n_first  # every text generated again
  assert s2["texts_dir"] != s1["texts_dir"] and second["train"] != first["train"]
  key = json.loads((pathlib.Path(s2["texts_dir"]) / "key.json").read_text())
  assert key["llm"]["weights"] == digest.file_digest(gguf)


def test_known_prompts_are_copied_not_generated(generator, tmp_path):
  first = _prompts(5)
  inference.generate_intent_texts(tmp_path / "a" / "train", first, generator, chunk_size=4)
  known = inference.known_texts(sorted((tmp_path / "a").glob("*/chunk-*.jsonl")))
  assert len(known) == 10
  second = {p: v[2:] + [f"a new session {i} {p}" for i in range(3)]
            for p, v in first.items()}  # rows 0-2 seen before, rows 3-5 new
  asked, stats = [], {}

  def counting(batch):
    asked.extend(batch)
    return generator(batch)

  got = inference.generate_intent_texts(tmp_path / "b" / "train", second, counting,
                                        chunk_size=4, known=known, stats=stats)
  assert sorted(asked) == sorted(second[p][r] for p in second for r in range(3, 6))
  assert stats == {"generated": 6, "reused": 6}
  fresh = inference.generate_intent_texts(tmp_path / "c" / "train", second, generator,
                                          chunk_size=4)
  assert got == fresh
  # The reused texts are recorded in the new cache too (with their digests).
  again = inference.known_texts(sorted((tmp_path / "b").glob("*/chunk-*.jsonl")))
  assert again == inference.known_texts(sorted((tmp_path / "c").glob("*/chunk-*.jsonl")))


def test_restrictions_share_generated_texts(tmp_path):
  data = _data(distinct=True)
  config = l4s_config.llm4sbr_config()
  config.llm4sbr.cache_dir = str(tmp_path / "cache")
  config.llm.source = "gguf"  # never loaded: generate_fn stands in for it
  config.text_encoder.max_length = 16
  asked = []

  def answer(batch):
    asked.extend(batch)
    return [f"answer {len(p)}" for p in batch]

  small = inference.restrict_data(data, max_rows_per_session=1)
  _, s1 = inference.ensure_intent_arrays(config, small, generate_fn=answer)
  n_small = len(asked)
  assert n_small == sum(s1[f"{s}_generated_texts"] for s in inference.SPLITS)
  assert n_small + sum(s1[f"{s}_reused_texts"] for s in inference.SPLITS) == \
      2 * sum(len(getattr(small, s)) for s in inference.SPLITS)
  large = inference.restrict_data(data, max_rows_per_session=2)
  _, s2 = inference.ensure_intent_arrays(config, large, generate_fn=answer)
  rows_large = sum(len(getattr(large, s)) for s in inference.SPLITS)
  asked_small, asked_large = set(asked[:n_small]), asked[n_small:]
  assert asked_large and not asked_small & set(asked_large)  # only unseen prompts
  generated = sum(s2[f"{s}_generated_texts"] for s in inference.SPLITS)
  reused = sum(s2[f"{s}_reused_texts"] for s in inference.SPLITS)
  assert generated == len(asked_large) and generated + reused == 2 * rows_large
  assert reused >= n_small  # every row of the small restriction is in the large one
  assert s1["cache"] != s2["cache"]  # two data fingerprints, one text pool


def test_generation_config_eos_ids_end_decoding(tmp_path):
  # Qwen2-Instruct ends a chat turn with <|im_end|>, listed in
  # generation_config.json beside the tokenizer's own eos.
  cfg = ml_collections.ConfigDict(dict(source="hf", path=str(tmp_path)))
  assert inference.generation_eos_ids(cfg) == []
  (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 9]}))
  assert inference.generation_eos_ids(cfg) == [7, 9]
  (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 4}))
  assert inference.generation_eos_ids(cfg) == [4]
  cfg.source = "gguf"
  assert inference.generation_eos_ids(cfg) == []
