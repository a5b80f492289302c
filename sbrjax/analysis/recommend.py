"""Top-K items for new sessions from a trained run (``python -m sbrjax.recommend``).

``Recommender.from_workdir`` reads a run directory (its ``config.json`` and
the best checkpoint of its last stage) and scores sessions with **the run's
own evaluator** (``make_evaluator`` of ``sbrjax.sbr.train``,
``sbrjax.llmgr.train`` or ``sbrjax.llm4sbr.train`` with a dummy target), so
a session gets exactly the top-K items the evaluation wrote for it:

* sbr runs: the backbone (``sbrjax.sbr.export.load_backbone``);
* LLMGR runs: the LLM is loaded as configured (its weights file must be
  present), the LLMGR tree replaced by the checkpoint, and the session
  becomes a behavior prompt;
* LLM4SBR runs: the session's intents are inferred with the run's LLM
  (``config.llm``), encoded and localized as in training; a run whose
  intents were imported (``llm4sbr.intent_texts``) has no LLM to ask, which
  is reported. ``llm4sbr.variant=backbone`` runs need none.

Items are named by dense id (the ids of the per-example files), by the
dataset's raw id (``raw_ids``) or by title; a title matches exactly
(ignoring case) or as the only title containing it.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from sbrjax.analysis import runs as runs_lib
from sbrjax.data.types import Split


class RecommendError(Exception):
  """A request cannot be served (the message says why and what to do)."""


def sessions_split(sessions: Sequence[Sequence[int]]) -> Split:
  """A Split of the sessions (oldest click first) with dummy targets 0."""
  if not sessions:
    raise RecommendError("no sessions to score.")
  seqs = [np.asarray(s, np.int32).reshape(-1) for s in sessions]
  if any(len(s) == 0 for s in seqs):
    raise RecommendError("empty session: give at least one item.")
  offsets = np.zeros(len(seqs) + 1, np.int64)
  np.cumsum([len(s) for s in seqs], out=offsets[1:])
  n = len(seqs)
  return Split(np.concatenate(seqs), offsets, np.zeros(n, np.int32), np.zeros(n, np.int32))


def resolve_items(text: str, item_texts: Sequence[str], *, raw_ids: Optional[Sequence] = None,
                  sep: str = ",") -> List[int]:
  """Dense item ids of ``text``: ``sep``-separated ids or titles.

  Raises:
    RecommendError: naming each unknown item with the closest titles.
  """
  lower = [t.lower() for t in item_texts]
  by_title = {}
  for i, t in enumerate(lower):
    by_title.setdefault(t, i)
  by_raw = {str(r): i for i, r in enumerate(raw_ids)} if raw_ids is not None else None
  out, problems = [], []
  for token in (t.strip() for t in text.split(sep)):
    if not token:
      continue
    if token.lstrip("-").isdigit():
      if by_raw is not None:
        if token in by_raw:
          out.append(by_raw[token])
        else:
          problems.append(f"raw id {token} is not in the catalog")
      elif 0 <= int(token) < len(item_texts):
        out.append(int(token))
      else:
        problems.append(f"item id {token} is outside [0, {len(item_texts)})")
      continue
    key = token.lower()
    if key in by_title:
      out.append(by_title[key])
      continue
    contains = [i for i, t in enumerate(lower) if key in t]
    if len(contains) == 1:
      out.append(contains[0])
      continue
    if len(contains) > 1:
      shown = "; ".join(f"{item_texts[i]!r} (id {i})" for i in contains[:5])
      problems.append(f"{token!r} is ambiguous: {len(contains)} titles contain it, e.g. "
                      f"{shown}")
      continue
    close = difflib.get_close_matches(key, lower, n=3, cutoff=0.0)
    shown = "; ".join(f"{item_texts[lower.index(c)]!r} (id {lower.index(c)})" for c in close)
    problems.append(f"unknown item {token!r}; closest titles: {shown}")
  if problems:
    raise RecommendError("; ".join(problems) + ".")
  if not out:
    raise RecommendError("no items given.")
  return out


@dataclasses.dataclass
class Recommender:
  """Scores sessions with a trained run.

  Attributes:
    run: the run directory.
    item_texts: titles of the catalog.
    raw_ids: the dataset's ids of the catalog.
    top_k: items returned per session.
    build: k -> score_fn, sessions -> (ids int32 [N, k], scores float32 [N, k]);
      called on the first ``recommend`` (LLMGR loads its LLM there), so item
      names are checked before any model is built.
    exclude_seen: leave out the items of the session itself (the evaluation
      protocol ranks every item, so by default they are kept).
  """
  run: runs_lib.Run
  item_texts: Sequence[str]
  raw_ids: Sequence[str]
  top_k: int
  build: Callable[[int], Callable[[List[List[int]]], Tuple[np.ndarray, np.ndarray]]]
  exclude_seen: bool = False
  _score_fn: Optional[Callable] = None
  _built_k: int = 0

  @classmethod
  def from_workdir(cls, workdir: str, top_k: int = 10,
                   exclude_seen: bool = False) -> "Recommender":
    """Loads a run's best checkpoint (raises RecommendError when there is none)."""
    try:
      run = runs_lib.open_run(workdir, require_results=False)
    except runs_lib.RunError as e:
      raise RecommendError(str(e)) from e
    if top_k < 1:
      raise RecommendError(f"--top_k must be >= 1, got {top_k}.")
    try:
      params, _ = runs_lib.restore_best_params(run.stage_best_dir())
    except runs_lib.RunError as e:
      raise RecommendError(str(e)) from e
    data = run.data()
    top_k = min(top_k, data.num_items)
    builder = {"sbr": _sbr_scorer, "llmgr": _llmgr_scorer, "llm4sbr": _llm4sbr_scorer}[run.job]
    return cls(run, list(data.item_texts), list(data.item_raw_ids), top_k,
               lambda k: builder(run, data, params, k), exclude_seen=bool(exclude_seen))

  def resolve(self, text: str, raw_ids: bool = False, sep: str = ",") -> List[int]:
    return resolve_items(text, self.item_texts, raw_ids=self.raw_ids if raw_ids else None,
                         sep=sep)

  def recommend(self, sessions: Sequence[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
    """(ids int32 [N, K], scores float32 [N, K]), best first, one row per session."""
    for s in sessions:
      bad = [int(i) for i in s if not 0 <= int(i) < len(self.item_texts)]
      if bad:
        raise RecommendError(f"item ids {bad} are outside [0, {len(self.item_texts)}).")
    sessions = [list(map(int, s)) for s in sessions]
    n = len(self.item_texts)
    # With exclude_seen, score enough items that top_k remain after the session's own go.
    seen = max(len(set(s)) for s in sessions) if self.exclude_seen else 0
    if seen >= n:
      raise RecommendError(f"a session holds all {n} items of the catalog: nothing is left "
                           "to recommend with --exclude_seen.")
    k = min(n, self.top_k + seen)
    if self._score_fn is None or self._built_k < k:
      self._score_fn, self._built_k = self.build(k), k
    ids, scores = self._score_fn(sessions)
    if not self.exclude_seen:
      return ids[:, :self.top_k], scores[:, :self.top_k]
    keep = min(self.top_k, n - seen)
    out_ids = np.empty((len(sessions), keep), ids.dtype)
    out_scores = np.empty((len(sessions), keep), scores.dtype)
    for row, s in enumerate(sessions):
      fresh = ~np.isin(ids[row], np.asarray(s))
      out_ids[row] = ids[row][fresh][:keep]
      out_scores[row] = scores[row][fresh][:keep]
    return out_ids, out_scores


def _ordered(examples, n: int) -> Tuple[np.ndarray, np.ndarray]:
  order = np.argsort(examples["index"])
  if len(order) != n:
    raise AssertionError(f"evaluated {len(order)} of {n} sessions")
  return examples["top/items"][order], examples["top/scores"][order]


def _check_tree(expected: Any, got: Any, where: str) -> None:
  """Raises RecommendError when two parameter trees differ in paths or shapes."""
  import jax  # pylint: disable=g-import-not-at-top
  from sbrjax.train import labels as labels_lib  # pylint: disable=g-import-not-at-top
  flat = lambda t: {labels_lib.path_str(p): tuple(np.shape(v)) for p, v in
                    jax.tree_util.tree_flatten_with_path(t)[0]}
  a, b = flat(expected), flat(got)
  if a != b:
    missing = sorted(set(a) - set(b))[:3]
    extra = sorted(set(b) - set(a))[:3]
    shape = [k for k in set(a) & set(b) if a[k] != b[k]][:3]
    raise RecommendError(f"the checkpoint in {where} does not fit the model its config.json "
                         f"describes (missing {missing}, unexpected {extra}, shape {shape}).")


def _sbr_scorer(run, data, params, top_k):
  from sbrjax.data import graphs as graphs_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.models import sbr as sbr_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.sbr import train as sbr_train  # pylint: disable=g-import-not-at-top
  cfg = sbr_train.sbr_config(run.config, data.num_items)
  model = sbr_lib.create_model(cfg)
  max_len = int(run.config.data.max_len)
  import jax  # pylint: disable=g-import-not-at-top
  expected = jax.eval_shape(lambda: sbr_train.init_params(model,
                                                          graphs_lib.probe_batch(max_len), 0))
  _check_tree(expected, params, run.stage_best_dir())
  evaluate = sbr_train.make_evaluator(model, tuple(run.config.eval.ks), top_k=top_k)
  bs = int(run.config.eval.batch_size)

  def score(sessions):
    graphs = graphs_lib.build_graphs(sessions_split(sessions), max_len)
    _, ex = evaluate(params, graphs, bs, return_examples=True)
    return _ordered(ex, len(sessions))

  return score


def llmgr_model(run, data, params):
  """(model, prompt encoder, pad id) of an LLMGR run whose checkpoint is ``params``.

  Raises:
    RecommendError: the run's LLM cannot be loaded, or the checkpoint does not
      fit the model its ``config.json`` describes.
  """
  from sbrjax.llmgr import train as llmgr_train  # pylint: disable=g-import-not-at-top
  from sbrjax.sbr import train as sbr_train  # pylint: disable=g-import-not-at-top
  config = run.config
  sbr_cfg = sbr_train.sbr_config(config, data.num_items)
  try:
    model, assembled, tokenizer = llmgr_train.build_model_and_params(
        config, data, sbr_cfg, {"sbr": params["sbr"]}, int(config.seed))
  except (FileNotFoundError, OSError) as e:
    raise RecommendError(f"the run's LLM cannot be loaded ({e}); LLMGR scores through it.") \
        from e
  _check_tree(assembled, params, run.stage_best_dir())
  del assembled
  encoder, pad_id = llmgr_train.make_encoder(config, data, tokenizer)
  return model, encoder, pad_id


def _llmgr_scorer(run, data, params, top_k):
  from sbrjax.llmgr import examples as examples_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.llmgr import train as llmgr_train  # pylint: disable=g-import-not-at-top
  config = run.config
  model, encoder, pad_id = llmgr_model(run, data, params)
  evaluate = llmgr_train.make_evaluator(model, tuple(config.eval.ks), top_k=top_k)

  def score(sessions):
    ex = examples_lib.behavior_examples(sessions_split(sessions), encoder)
    batcher = examples_lib.PromptBatcher(
        [ex], max_len=int(config.data.max_len), batch_size=int(config.eval.batch_size),
        length_buckets=tuple(config.llmgr.length_buckets), pad_id=pad_id)
    _, rows = evaluate(params, batcher, return_examples=True)
    return _ordered(rows, len(sessions))

  return score


def _llm4sbr_scorer(run, data, params, top_k):
  import jax  # pylint: disable=g-import-not-at-top
  from sbrjax.data import graphs as graphs_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.llm4sbr import inference  # pylint: disable=g-import-not-at-top
  from sbrjax.llm4sbr import localize  # pylint: disable=g-import-not-at-top
  from sbrjax.llm4sbr import model as l4s_model  # pylint: disable=g-import-not-at-top
  from sbrjax.llm4sbr import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.llm4sbr import train as l4s_train  # pylint: disable=g-import-not-at-top
  from sbrjax.models import sbr as sbr_lib  # pylint: disable=g-import-not-at-top
  from sbrjax.sbr import train as sbr_train  # pylint: disable=g-import-not-at-top
  config = run.config
  m = config.llm4sbr
  sbr_cfg = sbr_train.sbr_config(config, data.num_items)
  max_len = int(config.data.max_len)
  bs = int(config.eval.batch_size)
  seed = int(config.seed)
  if m.variant == "backbone":
    model, cfg = sbr_lib.create_model(sbr_cfg), None
  else:
    if m.intent_texts:
      raise RecommendError(
          f"{run.workdir}: this LLM4SBR run imported its intent texts "
          f"(llm4sbr.intent_texts={m.intent_texts!r}), so it has no LLM to infer a new "
          "session's intents; it needs one (train with config.llm set).")
    dim = l4s_train.text_dim(config)
    cfg = l4s_train.model_config(config, sbr_cfg, dim)
    model = l4s_model.LLM4SBR(cfg)
  if m.variant != "backbone" and "unused_params" not in run.results:
    raise RecommendError(f"{run.workdir}/results.json is missing or has no 'unused_params' "
                         "(the parameters the trainer pruned); rerun the run's command with "
                         "the same --workdir to finish it.")
  pruned = {path: (tuple(shape), np.float32)
            for path, shape in (run.results.get("unused_params") or {}).items()}
  forward = l4s_train.make_forward(model, cfg, pruned)
  evaluate = l4s_train.make_evaluator(forward, tuple(config.eval.ks), top_k=top_k)
  state: dict = {}

  def intents_of(split: Split) -> Optional[np.ndarray]:
    """float32 [N, P, d] as in training: generate, encode, localize (f)."""
    if cfg is None:
      return None
    if m.intent_control == "zeros":
      return np.zeros((len(split), len(cfg.perspectives), cfg.text_dim), np.float32)
    if "generator" not in state:
      llm, llm_params, tok, _ = inference.load_generator_llm(config.llm, seed)
      state["generator"] = inference.LLMIntentGenerator(
          llm, llm_params, tok, max_new_tokens=int(m.max_new_tokens),
          batch_size=int(m.gen_batch_size), chat=bool(m.chat),
          length_bucket=int(m.length_bucket))
      state["encoder"] = inference.load_text_encoder(config.text_encoder)
      state["items"] = inference.item_embeddings(
          state["encoder"], data, inference.cache_root(config, data),
          int(config.text_encoder.batch_size), inference.encoder_key(config.text_encoder))
    prompts = prompts_lib.build_prompts(split, data.item_texts, data.item_raw_ids,
                                        max_items=int(m.prompt_max_items))
    out = np.zeros((len(split), len(cfg.perspectives), cfg.text_dim), np.float32)
    for p, name in enumerate(cfg.perspectives):
      texts = state["generator"](prompts[name])
      state.setdefault("texts", {})[name] = texts
      emb = state["encoder"].encode_texts(texts, int(config.text_encoder.batch_size))
      out[:, p] = localize.localize(emb, state["items"], int(m.f)) if int(m.f) else emb
    return out

  fused = cfg is not None
  first_split = sessions_split([[0]])
  first = next(l4s_train.with_intents(graphs_lib.iterate_batches(
      graphs_lib.build_graphs(first_split, max_len), bs, shuffle=False, prefetch=0),
      None if not fused else np.zeros((1, len(cfg.perspectives), cfg.text_dim), np.float32)))
  # The trainer drops the backbone leaves the fused model never reads (SR-GNN's
  # W3, ...); the expected tree is the pruned one.
  expected = jax.eval_shape(lambda: l4s_train.init_params(model, first, seed, fused))
  # The trainer dropped the backbone leaves the fused model never reads (SR-GNN's
  # W3, ...) and listed them in results.json; they are zeros to the forward pass.
  expected = l4s_model.prune(expected, pruned)
  _check_tree(expected, params, run.stage_best_dir())

  def score(sessions):
    split = sessions_split(sessions)
    graphs = graphs_lib.build_graphs(split, max_len)
    batches = l4s_train.with_intents(graphs_lib.iterate_batches(graphs, bs, shuffle=False),
                                     intents_of(split))
    _, rows = evaluate(params, batches, return_examples=True)
    return _ordered(rows, len(sessions))

  return score


def format_text(rec: Recommender, session: Sequence[int], ids, scores) -> str:
  """The session and its top-K items as aligned text lines."""
  lines = ["session: " + " -> ".join(f"{rec.item_texts[i]} [{i}]" for i in session)]
  for r, (i, s) in enumerate(zip(ids, scores), 1):
    lines.append(f"{r:>3}. [{int(i):>6}] {float(s):>10.4f}  {rec.item_texts[int(i)]}")
  return "\n".join(lines)


def format_json(rec: Recommender, session: Sequence[int], ids, scores) -> dict:
  return {"session": [int(i) for i in session],
          "items": [{"id": int(i), "raw_id": str(rec.raw_ids[int(i)]),
                     "title": rec.item_texts[int(i)], "score": float(s)}
                    for i, s in zip(ids, scores)]}

