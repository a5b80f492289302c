"""LLM4SBR stage 1: intent inference, cached texts, intent arrays per split.

What a "session" is here: the ``llm4sbr`` data protocol gives one example
row per session (``data.augmentation="last"``, MovieLens by default) or one
per prefix ``[v1..vk] -> v(k+1)`` (``"prefixes"``, Amazon); ``split.users[i]``
is the session row ``i`` came from. The model needs an intent for every row
(a row sees only its own prefix, so intents of longer prefixes would leak
the target), hence intents are keyed by ``(split, row, perspective)`` and the
intent array's row ``i`` belongs to example ``i``; the sidecar's "session"
ids are the row indices as strings.

Flow, each step resumable and cached on disk:

1. prompts: ``llm4sbr.prompts.build_prompts`` per perspective, the most
   recent ``prompt_max_items`` clicks listed, wrapped in the chat template
   when the tokenizer has one;
2. texts: batched KV-cache greedy decoding with the sbrjax LLaMA
   (``LLMIntentGenerator``), written by ``generate_intent_texts`` in chunks;
   each chunk is one JSON-lines file moved into place with ``os.replace``,
   so a killed run keeps every finished chunk and a rerun generates only the
   rest (chunks cover fixed key ranges, so batches and outputs are the same
   as in an uninterrupted run). Every record carries its prompt's digest, so
   another restriction or preparation with the same LLM settings copies the
   texts of prompts already answered instead of generating them again.
   Texts produced elsewhere can be imported
   instead (``config.llm4sbr.intent_texts``, read with
   ``intents.read_intent_texts``);
3. arrays: texts and item titles embedded by the text encoder (MiniLM),
   localized onto the catalog with the f most similar items (eqs. 3-4) and
   written by ``intents.build_intent_array`` as float32 [rows, P, d_text]
   with the chosen items' ids and weights beside them.

Every cache is keyed by digests of what it was computed from (``text_key``,
``array_key``, the item-embedding key; ``sbrjax.data.digest``) and records
that key as ``key.json``: a replaced LLM file, changed imported texts or
another encoder give a new key and a rebuild, never a stale reuse.

``restrict_data`` implements the documented data reduction used when
generation for every row does not fit the budget (a seeded fraction of
sessions, at most N prefix rows per session).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from sbrjax import errors
from sbrjax import fileio
from sbrjax import llm as llm_api
from sbrjax.data import digest as digest_lib
from sbrjax.data.types import PreparedData, Split
from sbrjax.llm4sbr import intents as intents_lib
from sbrjax.llm4sbr import prompts as prompts_lib
from sbrjax.models import generate as generate_lib

PathLike = intents_lib.PathLike

SPLITS = ("train", "valid", "test")
CACHE_VERSION = 2
GenerateFn = Callable[[List[str]], List[str]]


# --------------------------------------------------------------------------
# Data restriction (a stated reduction).


def _restrict_split(split: Split, keep_sessions: np.ndarray,
                    max_rows_per_session: int) -> Split:
  keep = np.isin(split.users, keep_sessions)
  if max_rows_per_session > 0:
    # Rows of a session are consecutive prefixes; keep its longest N.
    idx = np.flatnonzero(keep)
    users = split.users[idx]
    rank_from_end = np.zeros(len(idx), np.int64)
    for s in np.unique(users):
      rows = np.flatnonzero(users == s)
      order = np.argsort(-split.lengths[idx[rows]], kind="stable")
      rank_from_end[rows[order]] = np.arange(len(rows))
    keep = np.zeros(len(split), bool)
    keep[idx[rank_from_end < max_rows_per_session]] = True
  return split.select(np.flatnonzero(keep))


def restrict_data(data: PreparedData, session_fraction: float = 1.0,
                  max_rows_per_session: int = 0, seed: int = 0) -> PreparedData:
  """A seeded subset of each split's sessions (and of their prefix rows).

  Args:
    data: prepared ``llm4sbr``-protocol data.
    session_fraction: fraction in (0, 1] of the sessions of every split kept
      (at least one per split); all of a kept session's rows stay unless
      ``max_rows_per_session`` caps them.
    max_rows_per_session: > 0 keeps only the N longest prefixes of a session.
    seed: selection seed.

  Returns:
    ``data`` itself when nothing is dropped, else a copy whose fingerprint
    hashes the parent fingerprint and these settings.
  """
  if not 0.0 < session_fraction <= 1.0:
    raise errors.ConfigError(f"config.llm4sbr.session_fraction must be in (0, 1], got "
                     f"{session_fraction}")
  if max_rows_per_session < 0:
    raise errors.ConfigError("config.llm4sbr.max_rows_per_session must be >= 0, got "
                     f"{max_rows_per_session}")
  if session_fraction == 1.0 and max_rows_per_session == 0:
    return data
  splits = {}
  for k, name in enumerate(SPLITS):
    split = getattr(data, name)
    sessions = np.unique(split.users)
    n = max(1, int(round(session_fraction * len(sessions))))
    rng = np.random.default_rng([seed, k])
    keep = np.sort(rng.choice(sessions, size=n, replace=False))
    splits[name] = _restrict_split(split, keep, max_rows_per_session)
  key = json.dumps({"parent": data.fingerprint, "fraction": session_fraction,
                    "max_rows": max_rows_per_session, "seed": seed},
                   sort_keys=True)
  fp = hashlib.sha256(key.encode()).hexdigest()[:16]
  stats = dict(data.stats, restricted={
      "session_fraction": session_fraction,
      "max_rows_per_session": max_rows_per_session, "seed": seed,
      **{f"num_{s}": len(splits[s]) for s in SPLITS}})
  return dataclasses.replace(data, fingerprint=fp, stats=stats, **splits)


# --------------------------------------------------------------------------
# The generating LLM.


def generation_eos_ids(llm_cfg) -> List[int]:
  """eos ids of an HF directory's ``generation_config.json`` (empty otherwise)."""
  if llm_cfg.source != "hf" or not llm_cfg.path:
    return []
  path = os.path.join(llm_cfg.path, "generation_config.json")
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    eos = json.load(f).get("eos_token_id")
  if eos is None:
    return []
  return [int(e) for e in (eos if isinstance(eos, list) else [eos])]


def load_generator_llm(llm_cfg, seed: int = 0):
  """(Llama, params, tokenizer, description) from ``config.llm`` (``sbrjax.llm.load_llm``)."""
  spec = llm_api.LLMSpec.from_config(llm_cfg)
  model, params, tok = llm_api.load_llm(spec, seed=seed)
  if spec.source == "random":
    desc = {"source": "random", "preset": spec.preset, "seed": seed,
            "num_layers": model.config.num_layers}
  else:
    path = spec.location()
    desc = {"source": spec.source, "path": os.path.basename(os.path.normpath(path)),
            "num_layers": model.config.num_layers, "dtype": spec.dtype}
  return model, params, tok, desc


class LLMIntentGenerator:
  """Prompts -> generated texts with batched KV-cache greedy decoding.

  Each batch is padded to ``batch_size`` rows and to a multiple of
  ``length_bucket`` tokens so decoding compiles once per bucket.
  """

  def __init__(self, model, params, tokenizer, *, max_new_tokens: int,
               batch_size: int, chat: bool = True, length_bucket: int = 32,
               eos_ids: Sequence[int] = ()):
    if max_new_tokens < 1 or batch_size < 1 or length_bucket < 1:
      raise ValueError("max_new_tokens, batch_size and length_bucket must be >= 1")
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.max_new_tokens = int(max_new_tokens)
    self.batch_size = int(batch_size)
    self.length_bucket = int(length_bucket)
    self.chat = bool(chat) and bool(getattr(tokenizer, "chat_template", None))
    eos = tokenizer.eos_token_id
    # The tokenizer's eos plus any the model's generation config lists (a
    # chat model such as Qwen2-Instruct ends a turn with <|im_end|>).
    self.eos = list(dict.fromkeys(([] if eos is None else [int(eos)]) +
                                  [int(e) for e in eos_ids]))
    pad = tokenizer.pad_token_id
    self.pad = int(pad if pad is not None else (eos if eos is not None else 0))

  def token_ids(self, prompt: str) -> List[int]:
    if self.chat:
      text = prompts_lib.wrap_chat(prompt, self.tokenizer)
      ids = self.tokenizer.encode(text, add_special_tokens=False)
    else:
      ids = self.tokenizer.encode(prompt, add_special_tokens=True)
    if not ids:
      raise ValueError(f"prompt encodes to zero tokens: {prompt[:60]!r}")
    return list(ids)

  def __call__(self, prompts: Sequence[str]) -> List[str]:
    out: List[str] = []
    for start in range(0, len(prompts), self.batch_size):
      part = [self.token_ids(p) for p in prompts[start:start + self.batch_size]]
      width = max(len(x) for x in part)
      width = -(-width // self.length_bucket) * self.length_bucket
      ids = np.full((self.batch_size, width), self.pad, np.int32)  # [B, P]
      mask = np.zeros((self.batch_size, width), np.int32)
      for r in range(self.batch_size):
        row = part[r] if r < len(part) else part[0][:1]  # filler rows
        ids[r, :len(row)] = row
        mask[r, :len(row)] = 1
      new = generate_lib.generate(self.model, self.params, ids, mask,
                                  self.max_new_tokens, eos_token_id=self.eos or None,
                                  pad_token_id=self.pad)
      for row in np.asarray(new)[:len(part)].tolist():
        for e in self.eos:
          if e in row:
            row = row[:row.index(e)]
        out.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
    return out


# --------------------------------------------------------------------------
# The resumable text cache.


def _read_chunks(split_dir: pathlib.Path) -> Dict[Tuple[int, str], str]:
  done: Dict[Tuple[int, str], str] = {}
  for path in sorted(split_dir.glob("chunk-*.jsonl")):
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        try:
          rec = json.loads(line)
          done[(int(rec["row"]), str(rec["perspective"]))] = str(rec["text"])
        except (json.JSONDecodeError, KeyError, ValueError) as e:
          raise errors.DataError(f"{path}:{lineno}: corrupt intent cache record ({e}); "
                           "delete the file to regenerate its chunk") from e
  return done


def prompt_digest(prompt: str) -> str:
  """The key under which a prompt's text can be reused by other caches."""
  return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:24]


def known_texts(chunk_files: Iterable[PathLike]) -> Dict[str, str]:
  """prompt digest -> text from cache chunks that record their prompt's digest.

  Unreadable lines are skipped here (their own cache reports them when it is
  used); chunks written before digests were recorded contribute nothing.
  """
  known: Dict[str, str] = {}
  for path in chunk_files:
    try:
      with open(path, encoding="utf-8") as f:
        for line in f:
          try:
            rec = json.loads(line)
          except json.JSONDecodeError:
            continue
          if isinstance(rec, dict) and "prompt_sha" in rec and "text" in rec:
            known[str(rec["prompt_sha"])] = str(rec["text"])
    except OSError:
      continue
  return known


def _write_atomic(path: pathlib.Path, lines: Sequence[str]) -> None:
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jsonl")
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.writelines(lines)
    f.flush()
    os.fsync(f.fileno())
  fileio.publish(tmp, path)


def generate_intent_texts(split_dir, prompts: Mapping[str, Sequence[str]],
                          generate_fn: GenerateFn, chunk_size: int = 256,
                          progress: bool = False,
                          known: Optional[Mapping[str, str]] = None,
                          stats: Optional[Dict[str, int]] = None
                          ) -> Dict[str, Dict[str, str]]:
  """Generates (or reads from cache) the intent text of every row.

  Args:
    split_dir: cache folder of one split (created).
    prompts: perspective -> [rows] prompt texts (``prompts.build_prompts``).
    generate_fn: prompts -> texts, in order.
    chunk_size: prompts per chunk file. Chunk ``c`` always covers keys
      ``[c * chunk_size, (c + 1) * chunk_size)`` of the row-major key list
      ``[(row, perspective) for row for perspective]``.
    progress: log one line per chunk.
    known: prompt digest -> text (``known_texts``) produced by the same LLM
      settings for other data (another restriction, split or preparation);
      such prompts are copied instead of generated. Greedy texts depend only
      on the prompt, up to the numerics of batch padding.
    stats: filled with ``generated`` and ``reused`` counts.

  Returns:
    row (str) -> {perspective: text}, the format of
    ``intents.read_intent_texts``.
  """
  split_dir = pathlib.Path(split_dir)
  split_dir.mkdir(parents=True, exist_ok=True)
  names = list(prompts)
  rows = len(prompts[names[0]]) if names else 0
  if any(len(prompts[p]) != rows for p in names):
    raise ValueError("every perspective needs one prompt per row")
  keys = [(r, p) for r in range(rows) for p in names]
  done = _read_chunks(split_dir)
  known = known or {}
  counts = {"generated": 0, "reused": 0}
  t0, made = time.perf_counter(), 0
  for start in range(0, len(keys), chunk_size):
    chunk = keys[start:start + chunk_size]
    todo = [k for k in chunk if k not in done]
    if not todo:
      continue
    digests = [prompt_digest(prompts[p][r]) for r, p in todo]
    fresh = [i for i, d in enumerate(digests) if d not in known]
    texts = [known.get(d) for d in digests]
    if fresh:
      made_now = generate_fn([prompts[todo[i][1]][todo[i][0]] for i in fresh])
      if len(made_now) != len(fresh):
        raise ValueError(f"generate_fn returned {len(made_now)} texts for "
                         f"{len(fresh)} prompts")
      for i, t in zip(fresh, made_now):
        texts[i] = t
    lines = [json.dumps({"row": r, "perspective": p, "prompt_sha": d, "text": t}) + "\n"
             for (r, p), d, t in zip(todo, digests, texts)]
    end = start + len(chunk)
    _write_atomic(split_dir / f"chunk-{start:09d}-{end:09d}.jsonl", lines)
    done.update(zip(todo, texts))
    counts["generated"] += len(fresh)
    counts["reused"] += len(todo) - len(fresh)
    made += len(fresh)
    if progress:
      rate = made / max(time.perf_counter() - t0, 1e-9)
      logging.info("intents %s: %d/%d (%.2f prompts/s)", split_dir.name,
                   min(end, len(keys)), len(keys), rate)
  if stats is not None:
    stats.update(counts)
  return {str(r): {p: done[(r, p)] for p in names} for r in range(rows)}


def write_texts_jsonl(path, texts: Mapping[str, Mapping[str, str]],
                      perspectives: Sequence[str]) -> pathlib.Path:
  """Writes texts as ``{"session": row, <perspective>: text}`` lines."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [json.dumps({"session": sid, **{p: texts[sid][p] for p in perspectives}})
           + "\n" for sid in texts]
  _write_atomic(path, lines)
  return path


# --------------------------------------------------------------------------
# Intent arrays of a run.


def _digest(obj: Any) -> str:
  return digest_lib.tree_digest(obj)


def cache_root(config, data: PreparedData) -> pathlib.Path:
  """``config.llm4sbr.cache_dir`` or ``<data dir>/llm4sbr/<fingerprint>``."""
  base = config.llm4sbr.cache_dir or os.path.join(
      config.data.data_dir or os.environ.get("SBRJAX_DATA_DIR") or
      os.path.expanduser("~/.cache/sbrjax"), "llm4sbr")
  return pathlib.Path(base) / data.fingerprint


def text_key(config, llm_desc: Mapping[str, Any]) -> Dict[str, Any]:
  """What the intent texts depend on (besides the prompts' data)."""
  m = config.llm4sbr
  return {"version": CACHE_VERSION, "llm": dict(llm_desc),
          "prompt_max_items": int(m.prompt_max_items),
          "max_new_tokens": int(m.max_new_tokens), "chat": bool(m.chat)}


# Files of an HF directory that decide what it generates: weights, config,
# tokenizer. Other files (README, licences, PyTorch .bin copies) do not.
_HF_IDENTITY = ("*.safetensors", "*.json", "tokenizer.model", "*.tiktoken", "*.txt")


def weights_digest(source: str, location: str) -> str:
  """Content digest of an LLM's weights (and, for HF, config + tokenizer).

  GGUF: the file's bytes (a directory holding one .gguf: that file). HF
  directory: the digests of its safetensors, JSON and tokenizer files by
  name. The path itself is not part of it: a file replaced at the same path
  gets a new digest, a copy elsewhere keeps it.
  """
  path = pathlib.Path(location)
  if source == "gguf":
    if path.is_dir():
      ggufs = sorted(path.glob("*.gguf"))
      if len(ggufs) != 1:
        raise errors.ModelFileError(f"config.llm.path={location!r} holds {len(ggufs)} .gguf files; "
                         "point it at one.")
      path = ggufs[0]
    return digest_lib.file_digest(path)
  files = sorted({f for pattern in _HF_IDENTITY for f in path.glob(pattern) if f.is_file()})
  if not any(f.suffix == ".safetensors" for f in files):
    raise errors.MissingModelFile(f"config.llm.path={location!r} holds no *.safetensors.")
  return digest_lib.tree_digest({f.name: digest_lib.file_digest(f) for f in files},
                                length=64)


def imported_texts_digests(pattern: str) -> Dict[str, str]:
  """split -> digest of the bytes of ``pattern.format(split=split)``."""
  out = {}
  for split in SPLITS:
    path = pattern.format(split=split)
    if not os.path.isfile(path):
      raise errors.MissingDataError(f"config.llm4sbr.intent_texts={pattern!r}: no file {path} "
                              f"for the {split} split.")
    out[split] = digest_lib.file_digest(path)
  return out


def llm_cache_desc(config, seed: int) -> Dict[str, Any]:
  """What identifies the intent texts' source in the cache key (by content).

  Imported texts: the digest of each split's file. Generated texts: the
  LLM's weights digest (``weights_digest``), its layer truncation and dtypes.
  Greedy decoding of loaded weights does not depend on the training seed, so
  runs with other seeds share its texts; only ``llm.source="random"`` weights
  (tests) are drawn from the seed.
  """
  if config.llm4sbr.intent_texts:
    return {"imported": imported_texts_digests(config.llm4sbr.intent_texts)}
  spec = llm_api.LLMSpec.from_config(config.llm)
  desc = {"source": spec.source, "num_layers": int(spec.num_layers), "dtype": spec.dtype,
          "frozen_dtype": spec.frozen_dtype or spec.dtype}
  if spec.source == "random":
    desc.update(preset=spec.preset, seed=int(seed))
  else:
    desc["weights"] = weights_digest(spec.source, spec.location())
  return desc


def encoder_location(te_cfg) -> str:
  """The text encoder's HF BERT directory (all-MiniLM-L6-v2 by default)."""
  from sbrjax.convert import hf_bert  # pylint: disable=g-import-not-at-top
  return te_cfg.path or str(hf_bert.ensure_minilm_dir())


def encoder_key(te_cfg) -> Dict[str, Any]:
  """The text encoder's identity: its files' digest and the token limit."""
  location = encoder_location(te_cfg)
  return {"name": os.path.basename(os.path.normpath(location)),
          "weights": digest_lib.file_digest(location),
          "max_length": int(te_cfg.max_length)}


def array_key(texts_id: str, enc_key: Mapping[str, Any], config, data: PreparedData,
              perspectives: Sequence[str]) -> Dict[str, Any]:
  """What an intent array depends on; its digest names the arrays folder."""
  return {"version": CACHE_VERSION, "texts": texts_id, "encoder": dict(enc_key),
          "f": int(config.llm4sbr.f), "perspectives": list(perspectives),
          "data": data.fingerprint}


def write_key(path: pathlib.Path, key: Mapping[str, Any]) -> None:
  """Records a cache's key description beside it (JSON, atomically)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
  with os.fdopen(fd, "w") as f:
    json.dump(key, f, indent=2, sort_keys=True, default=str)
  fileio.publish(tmp, path)


def load_text_encoder(te_cfg):
  """The frozen sentence encoder (all-MiniLM-L6-v2 by default)."""
  from sbrjax.convert import hf_bert  # pylint: disable=g-import-not-at-top
  return hf_bert.TextEncoder.from_pretrained(encoder_location(te_cfg),
                                             max_length=int(te_cfg.max_length))


def item_embeddings(encoder, data: PreparedData, root: pathlib.Path, batch_size: int,
                    enc_key: Mapping[str, Any]) -> np.ndarray:
  """float32 [num_items, d] text embeddings of item titles (cached).

  Keyed by the encoder's identity (``encoder_key``) and the data fingerprint
  (which covers the item texts); the key is recorded in ``items-<key>.json``.
  """
  key = {"version": CACHE_VERSION, "encoder": dict(enc_key), "data": data.fingerprint}
  path = root / f"items-{_digest(key)}.npy"
  if path.is_file():
    arr = np.load(path)
    if arr.shape == (data.num_items, encoder.dim) and np.isfinite(arr).all():
      return arr
  arr = encoder.encode_texts(list(data.item_texts), batch_size=batch_size)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
  with os.fdopen(fd, "wb") as f:
    np.save(f, arr)
  fileio.publish(tmp, path)
  write_key(path.with_suffix(".json"), key)
  return arr


def load_split_intents(path, data: PreparedData, split: str, dim: int,
                       perspectives: Sequence[str]) -> np.ndarray:
  """Validated float32 [rows, P, d] for ``split`` in ``perspectives`` order.

  The file stays memory-mapped (batches gather their rows from it) when it
  holds exactly these perspectives in this order; an ablation that drops or
  reorders perspectives gets an in-memory copy of the columns it uses.
  """
  arr = intents_lib.load_intent_array(
      path, expected_fingerprint=data.fingerprint,
      expected_rows=len(getattr(data, split)), expected_dim=dim,
      perspectives=perspectives)
  if tuple(arr.perspectives) == tuple(perspectives):
    return arr.values
  return np.ascontiguousarray(arr.select(list(perspectives)), np.float32)


class _LazyGenerator:
  """prompts -> texts; the LLM loads on the first missing text only."""

  def __init__(self, config, seed: int, generate_fn: Optional[GenerateFn],
               summary: Dict[str, Any]):
    self.config, self.seed, self.generate_fn, self.summary = config, seed, generate_fn, summary
    self.generator = None

  def __call__(self, prompt_batch):
    if self.generate_fn is not None:
      return self.generate_fn(prompt_batch)
    if self.generator is None:
      m = self.config.llm4sbr
      t0 = time.perf_counter()
      model, params, tok, _ = load_generator_llm(self.config.llm, self.seed)
      self.generator = LLMIntentGenerator(
          model, params, tok, max_new_tokens=int(m.max_new_tokens),
          batch_size=int(m.gen_batch_size), chat=bool(m.chat),
          length_bucket=int(m.length_bucket),
          eos_ids=generation_eos_ids(self.config.llm))
      self.summary["llm_load_seconds"] = time.perf_counter() - t0
    return self.generator(prompt_batch)


def ensure_intent_texts(config, data: PreparedData, split: str, *, texts_id: str,
                        tkey: Mapping[str, Any], generate: GenerateFn,
                        summary: Dict[str, Any],
                        known: Optional[Dict[str, str]] = None
                        ) -> Dict[str, Dict[str, str]]:
  """row (str) -> {perspective: text} of one split, imported or generated.

  Generated texts live in ``<cache>/texts/<texts_id>/<split>/`` (resumable
  chunks) with the key description in ``key.json``; texts of prompts that the
  same LLM settings answered for other data (``known``) are copied.
  """
  m = config.llm4sbr
  names = tuple(prompts_lib.PERSPECTIVES)  # texts always hold both views
  sp = getattr(data, split)
  if m.intent_texts:
    return intents_lib.read_intent_texts(
        m.intent_texts.format(split=split), names,
        expected_sessions=[str(i) for i in range(len(sp))], allow_empty=True)
  root = cache_root(config, data)
  text_dir = root / "texts" / texts_id
  prompts = prompts_lib.build_prompts(
      sp, data.item_texts, data.item_raw_ids, max_items=int(m.prompt_max_items))
  write_key(text_dir / "key.json", tkey)
  if known is None:  # texts of the same LLM settings for other data
    known = known_texts(sorted(root.parent.glob(f"*/texts/{texts_id}/*/chunk-*.jsonl")))
  t0 = time.perf_counter()
  counts: Dict[str, int] = {}
  texts = generate_intent_texts(text_dir / split, prompts, generate, known=known,
                                stats=counts, chunk_size=int(m.gen_chunk), progress=True)
  summary[f"{split}_generate_seconds"] = time.perf_counter() - t0
  summary[f"{split}_generated_texts"] = counts.get("generated", 0)
  summary[f"{split}_reused_texts"] = counts.get("reused", 0)
  write_texts_jsonl(text_dir / f"{split}.jsonl", texts, names)
  summary["texts_dir"] = str(text_dir)
  return texts


def ensure_intent_arrays(config, data: PreparedData, *, seed: int = 0,
                         generate_fn: Optional[GenerateFn] = None
                         ) -> Tuple[Dict[str, pathlib.Path], Dict[str, Any]]:
  """Builds (or finds) the intent array of every split.

  Every cache is keyed by the content it was computed from (a stale one is
  rebuilt under a new key, never reused): texts by ``text_key`` (the LLM's
  weights digest or the imported files' digests, prompt settings), arrays by
  ``array_key`` (texts, the encoder's weights digest and max_length, f,
  perspectives, data fingerprint), item embeddings by encoder and data. Each
  folder records its key in ``key.json``. Texts come from
  ``config.llm4sbr.intent_texts`` when set, else from the cache, else from
  the LLM. ``generate_fn`` (prompts -> texts) replaces the loaded LLM only
  for missing texts (tests, external runners); the cache is still keyed by
  ``config.llm``, so it must stand for that model.

  Beside each ``<split>.npy`` the localized item ids and weights are written
  (``intents.build_intent_array``).

  Returns:
    (split -> array path, a summary with timings and counts).
  """
  m = config.llm4sbr
  root = cache_root(config, data)
  names = tuple(prompts_lib.PERSPECTIVES)  # texts always hold both views
  summary: Dict[str, Any] = {"cache": str(root)}
  tkey = text_key(config, llm_cache_desc(config, seed))
  texts_id = _digest(tkey)
  enc_key = encoder_key(config.text_encoder)
  akey = array_key(texts_id, enc_key, config, data, names)
  array_dir = root / "arrays" / _digest(akey)
  summary["array_key"] = akey
  encoder = items = None
  paths: Dict[str, pathlib.Path] = {}
  generate = _LazyGenerator(config, seed, generate_fn, summary)
  for split in SPLITS:
    sp = getattr(data, split)
    out = array_dir / f"{split}.npy"
    paths[split] = out
    if out.is_file() and intents_lib.sidecar_path(out).is_file():
      continue
    texts = ensure_intent_texts(config, data, split, texts_id=texts_id, tkey=tkey,
                                generate=generate, summary=summary)
    if encoder is None:
      encoder = load_text_encoder(config.text_encoder)
      items = item_embeddings(encoder, data, root, int(config.text_encoder.batch_size),
                              enc_key)
      write_key(array_dir / "key.json", akey)
    t0 = time.perf_counter()
    intents_lib.build_intent_array(
        out, texts, [str(i) for i in range(len(sp))], names,
        lambda t: encoder.encode_texts(t, int(config.text_encoder.batch_size)),
        items, int(m.f), dataset=data.name, split=split, encoder=encoder.name,
        fingerprint=data.fingerprint)
    summary[f"{split}_encode_seconds"] = time.perf_counter() - t0
    summary[f"{split}_blank_texts"] = sum(
        1 for t in texts.values() for p in names if not t[p].strip())
  summary.setdefault("texts_dir", str(root / "texts" / texts_id))
  return paths, summary
