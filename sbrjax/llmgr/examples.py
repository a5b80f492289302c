"""LLMGR training and evaluation examples: prompts + their sessions, batched.

``PromptBatcher`` turns them into fixed-shape ``PromptBatch``es, what
``sbrjax.llmgr.model.LLMGR`` reads.

Each task turns prepared data into a ``TaskExamples``: a ``Split`` of the
sessions the prompts talk about (so the SBR backbone can run on their
graphs), one encoded prompt per example and the target item.

  * behavior: every example of a split (session -> next item).
  * node_text: every item once (its text -> the item); the session is the
    one-click session [item], which no slot of that prompt reads.
  * contrastive: one per training session with >= 2 clicks: a target node
    drawn from the session's clicks except the last, candidates = its
    successors in the session (capped) mixed with random negative items,
    shuffled; the target is one successor drawn at random.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence

import numpy as np

from sbrjax.data import graphs as graphs_lib
from sbrjax.data.types import Split
from sbrjax.llmgr import prompts as prompts_lib

TASK_IDS = {name: i for i, name in enumerate(prompts_lib.TASKS)}


class PromptBatch(NamedTuple):
  """One batch of prompts (a pytree of arrays).

  Attributes:
    sessions: ``sbrjax.data.graphs.GraphBatch`` of each prompt's session.
    input_ids: int32 [B, L] prompt tokens (right padded).
    attention_mask: int32 [B, L].
    last_pos: int32 [B] index of the last real token.
    slot_pos: int32 [B, S] placeholder positions (L for unused slots).
    slot_src: int32 [B, S] index into [graph | clicks (max_len) | items (Q)].
    items: int32 [B, Q] items listed in the prompt.
    targets: int32 [B] target item.
    mask: bool [B] real examples.
    negatives: int32 [B, K] or None (evaluation).
  """
  sessions: Any
  input_ids: Any
  attention_mask: Any
  last_pos: Any
  slot_pos: Any
  slot_src: Any
  items: Any
  targets: Any
  mask: Any
  negatives: Any = None


@dataclasses.dataclass
class TaskExamples:
  task: str
  sessions: Split
  prompts: List[prompts_lib.EncodedPrompt]
  # behavior: the row of the source split each example came from (the
  # evaluation may subsample it); per-example results are keyed by it.
  source_rows: Optional[np.ndarray] = None

  def __len__(self):
    return len(self.prompts)


def _split_from_sequences(seqs: Sequence[np.ndarray], targets, users, negatives=None) -> Split:
  lengths = np.array([len(s) for s in seqs], np.int64)
  offsets = np.zeros(len(seqs) + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  values = (np.concatenate(seqs).astype(np.int32) if len(seqs) else np.zeros(0, np.int32))
  return Split(values, offsets, np.asarray(targets, np.int32), np.asarray(users, np.int32),
               negatives)


def _subsample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
  if limit and limit < n:
    return np.sort(rng.choice(n, limit, replace=False))
  return np.arange(n)


def behavior_examples(split: Split, encoder: prompts_lib.PromptEncoder, *,
                      limit: int = 0, seed: int = 0) -> TaskExamples:
  idx = _subsample(len(split), limit, np.random.default_rng([seed, 1]))
  sessions = split.select(idx)
  prompts = [encoder.encode("behavior", session=sessions.sequence(i))
             for i in range(len(sessions))]
  return TaskExamples("behavior", sessions, prompts, source_rows=idx)


def node_text_examples(num_items: int, encoder: prompts_lib.PromptEncoder, *,
                       limit: int = 0, seed: int = 0) -> TaskExamples:
  items = _subsample(num_items, limit, np.random.default_rng([seed, 2]))
  seqs = [np.array([i], np.int32) for i in items]
  sessions = _split_from_sequences(seqs, items, np.zeros(len(items)))
  prompts = [encoder.encode("node_text", item=int(i)) for i in items]
  return TaskExamples("node_text", sessions, prompts)


def contrastive_examples(split: Split, num_items: int, encoder: prompts_lib.PromptEncoder, *,
                         num_candidates: int, max_successors: int, limit: int = 0,
                         seed: int = 0) -> TaskExamples:
  if num_candidates < 2 or max_successors < 1 or max_successors >= num_candidates:
    raise ValueError("config.llmgr.num_candidates must be >= 2 and "
                     "1 <= config.llmgr.max_successors < num_candidates.")
  rng = np.random.default_rng([seed, 3])
  eligible = np.flatnonzero(split.lengths >= 2)
  chosen = eligible[_subsample(len(eligible), limit, rng)]
  seqs, targets, users, prompts = [], [], [], []
  for i in chosen:
    seq = split.sequence(i)
    click = int(rng.integers(0, len(seq) - 1))       # any click but the tail
    node = int(seq[click])
    succ = np.unique(seq[1:][seq[:-1] == node])      # items that follow `node`
    if len(succ) > max_successors:
      succ = rng.choice(succ, max_successors, replace=False)
    num_neg = num_candidates - len(succ)
    taken = set(succ.tolist()) | {node}
    negs: List[int] = []
    while len(negs) < num_neg:
      for cand in rng.integers(0, num_items, size=2 * num_neg + 4):
        if int(cand) not in taken:
          taken.add(int(cand))
          negs.append(int(cand))
          if len(negs) == num_neg:
            break
      if len(taken) >= num_items and len(negs) < num_neg:
        raise ValueError(f"Catalog of {num_items} items is too small for "
                         f"{num_candidates} contrastive candidates.")
    candidates = np.concatenate([succ, np.asarray(negs, np.int64)])
    rng.shuffle(candidates)
    seqs.append(seq)
    targets.append(int(rng.choice(succ)))
    users.append(int(split.users[i]))
    prompts.append(encoder.encode("contrastive", item=node, candidates=candidates))
  sessions = _split_from_sequences(seqs, targets, users)
  return TaskExamples("contrastive", sessions, prompts)


class PromptBatcher:
  """Fixed-shape ``PromptBatch``es over the union of several tasks' examples.

  Shapes: the batch size, the slot/item widths (fixed per batcher) and the
  prompt length, rounded up to one of ``length_buckets`` — so a stage
  compiles once per bucket, not per batch.
  """

  def __init__(self, examples: Sequence[TaskExamples], *, max_len: int, batch_size: int,
               length_buckets: Sequence[int], pad_id: int):
    self.batch_size = batch_size
    self.buckets = tuple(sorted(length_buckets))
    self.pad_id = pad_id
    self.prompts = [p for ex in examples for p in ex.prompts]
    if not self.prompts:
      raise ValueError("No prompts to batch: every task produced zero examples.")
    seqs = [ex.sessions.sequence(i) for ex in examples for i in range(len(ex.sessions))]
    targets = np.concatenate([ex.sessions.targets for ex in examples])
    users = np.concatenate([ex.sessions.users for ex in examples])
    negs = [ex.sessions.negatives for ex in examples]
    negatives = (np.concatenate(negs) if all(n is not None for n in negs) else None)
    self.sessions = _split_from_sequences(seqs, targets, users, negatives)
    self.graphs = graphs_lib.build_graphs(self.sessions, max_len)
    self.max_slots = max(1, max(len(p.slot_pos) for p in self.prompts))
    self.max_items = max(1, max(len(p.items) for p in self.prompts))
    longest = max(len(p.tokens) for p in self.prompts)
    prompts_lib.bucket_length(longest, self.buckets)  # raises if one overflows

  def __len__(self):
    return len(self.prompts)

  def num_batches(self) -> int:
    return -(-len(self) // self.batch_size)

  def batch(self, idx: np.ndarray):
    idx = np.asarray(idx, np.int64)
    sessions = graphs_lib.make_batch(self.graphs, idx, self.batch_size)
    chosen = [self.prompts[i] for i in idx]
    length = prompts_lib.bucket_length(max(len(p.tokens) for p in chosen), self.buckets)
    arrays = prompts_lib.collate(chosen, length=length, max_slots=self.max_slots,
                                 max_items=self.max_items, pad_id=self.pad_id)
    n = len(idx)
    pad_rows = self.batch_size - n
    if pad_rows:
      for key, value in arrays.items():
        arrays[key] = np.concatenate([value, np.zeros((pad_rows,) + value.shape[1:],
                                                      value.dtype)])
      arrays["slot_pos"][n:] = length
      arrays["attention_mask"][n:, 0] = 1  # keep padded rows numerically tame
    return PromptBatch(sessions=sessions, input_ids=arrays["input_ids"],
                       attention_mask=arrays["attention_mask"], last_pos=arrays["last_pos"],
                       slot_pos=arrays["slot_pos"], slot_src=arrays["slot_src"],
                       items=arrays["items"], targets=sessions.targets,
                       mask=sessions.graph_mask, negatives=sessions.negatives)

  def iterate(self, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> Iterator:
    n = len(self)
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, self.batch_size):
      yield self.batch(order[start:start + self.batch_size])
