"""LLMGR training and evaluation examples: prompts + their sessions, batched.

``PromptBatcher`` turns them into fixed-shape ``PromptBatch``es, what
``sbrjax.llmgr.model.LLMGR`` reads.

Each task turns prepared data into a ``TaskExamples``: a ``Split`` of the
sessions the prompts talk about (so the SBR backbone can run on their
graphs), one encoded prompt per example and the target item.

  * behavior: every example of a split (session -> next item).
  * node_text: every item once (its text -> the item); the session is the
    one-click session [item], which no slot of that prompt reads.
  * contrastive (``mode="paper"``): one per training session that has a
    node other than its tail node (the item of its last click; sessions are
    the last ``max_len`` clicks the graph batch holds). The target node is
    drawn uniformly from those nodes, so it is never the tail node even when
    the tail item repeats earlier; its succeeding nodes (items that follow
    any of its clicks, at most ``max_successors``, a random subset beyond)
    are mixed with random negative items into a shuffled candidate list, and
    the answer is *all* listed successors: the label of the prompt is the
    uniform distribution over them (``labels``), trained with the same
    softmax cross-entropy over items as the other tasks. A softmax over items
    against a uniform target keeps one head and one loss for every prompt,
    and its optimum splits the probability equally among the successors,
    i.e. it ranks every successor above every other item, which is what
    "select the succeeding nodes" asks; a per-candidate sigmoid would need a
    second output form of f_out for one auxiliary task.
    ``mode="legacy"`` is the sampling before issue 12, kept as a labelled
    option: a click drawn from all but the last (its item may equal the
    tail item) and one successor drawn as the only label.
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
    targets: int32 [B] target item (the first label).
    mask: bool [B] real examples.
    negatives: int32 [B, K] or None (evaluation).
    labels: int32 [B, T] answer items; the prompt's target distribution is
      uniform over its valid labels (one for behavior and node_text).
    label_mask: bool [B, T] valid labels (at least one per real row).
    behavior: bool [B] behavior prompts (the residual head adds the
      backbone's own scores on these rows only); None: every row.
    prefix_ids: int32 [B, P] the first P tokens, the same in every row and
      free of slots (``PromptBatcher.prefix_len``), or None. The model may run
      them once for the whole batch (``LLMGRConfig.shared_prefix``); P is
      static through the array's shape.
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
  labels: Any = None
  label_mask: Any = None
  behavior: Any = None
  prefix_ids: Any = None


@dataclasses.dataclass
class TaskExamples:
  """Prompts of one task with their sessions; ``labels[i]`` lists prompt i's
  answer items (None: the single target ``sessions.targets[i]``)."""
  task: str
  sessions: Split
  prompts: List[prompts_lib.EncodedPrompt]
  # behavior: the row of the source split each example came from (the
  # evaluation may subsample it); per-example results are keyed by it.
  source_rows: Optional[np.ndarray] = None
  labels: Optional[List[np.ndarray]] = None

  def __len__(self):
    return len(self.prompts)

  def label_lists(self) -> List[np.ndarray]:
    if self.labels is not None:
      return self.labels
    return [np.asarray([t], np.int32) for t in self.sessions.targets]


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


CONTRASTIVE_MODES = ("paper", "legacy")


def contrastive_examples(split: Split, num_items: int, encoder: prompts_lib.PromptEncoder, *,
                         num_candidates: int, max_successors: int, limit: int = 0,
                         seed: int = 0, mode: str = "paper") -> TaskExamples:
  """Contrastive structure-aware prompts (see the module docstring)."""
  if num_candidates < 2 or max_successors < 1 or max_successors >= num_candidates:
    raise ValueError("config.llmgr.num_candidates must be >= 2 and "
                     "1 <= config.llmgr.max_successors < num_candidates.")
  if mode not in CONTRASTIVE_MODES:
    raise ValueError(f"config.llmgr.contrastive={mode!r} is not supported; choose one of "
                     f"{', '.join(map(repr, CONTRASTIVE_MODES))}.")
  rng = np.random.default_rng([seed, 3])
  window = lambda i: split.sequence(i)[-encoder.max_len:]  # what the graph batch holds
  if mode == "paper":  # sessions with a node other than the tail node
    eligible = np.asarray([i for i in np.flatnonzero(split.lengths >= 2)
                           if np.any(window(i) != window(i)[-1])], np.int64)
  else:
    eligible = np.flatnonzero(split.lengths >= 2)
  chosen = eligible[_subsample(len(eligible), limit, rng)]
  seqs, targets, users, prompts, labels = [], [], [], [], []
  for i in chosen:
    seq = window(i)
    if mode == "paper":
      nodes = np.unique(seq[seq != seq[-1]])
      node = int(rng.choice(nodes))
      click = int(np.flatnonzero(seq == node)[-1])
    else:
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
    answer = np.sort(succ) if mode == "paper" else np.asarray([rng.choice(succ)])
    seqs.append(seq)
    targets.append(int(answer[0]))
    labels.append(answer.astype(np.int32))
    users.append(int(split.users[i]))
    prompts.append(encoder.encode("contrastive", item=node, click=click,
                                  candidates=candidates))
  sessions = _split_from_sequences(seqs, targets, users)
  return TaskExamples("contrastive", sessions, prompts, labels=labels)


def subset(examples: TaskExamples, idx: np.ndarray) -> TaskExamples:
  """The examples ``idx`` of ``examples`` (same task)."""
  idx = np.asarray(idx, np.int64)
  labels = None if examples.labels is None else [examples.labels[i] for i in idx]
  rows = None if examples.source_rows is None else examples.source_rows[idx]
  return TaskExamples(examples.task, examples.sessions.select(idx),
                      [examples.prompts[i] for i in idx], source_rows=rows, labels=labels)


# Shorter common prefixes are not worth a second pass through the LLM.
MIN_SHARED_PREFIX = 4


def shared_prefix_length(prompts: Sequence[prompts_lib.EncodedPrompt],
                         minimum: int = MIN_SHARED_PREFIX) -> int:
  """Tokens every prompt starts with, before any slot and before its last token.

  Those positions hold the same token embeddings in every row of every batch,
  and causal attention keeps their hidden states independent of what follows,
  so ``LLMGR`` can compute them once per batch. The last token is never in
  the prefix (the head reads it). Returns 0 below ``minimum``.
  """
  first = np.asarray(prompts[0].tokens)
  n = min(len(p.tokens) for p in prompts) - 1
  for p in prompts:
    if len(p.slot_pos):
      n = min(n, int(np.min(p.slot_pos)))
    if n <= 0:
      return 0
    diff = np.nonzero(np.asarray(p.tokens[:n]) != first[:n])[0]
    if diff.size:
      n = int(diff[0])
  return n if n >= minimum else 0


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
    self.labels = [lab for ex in examples for lab in ex.label_lists()]
    self.behavior = np.array([ex.task == "behavior" for ex in examples for _ in ex.prompts],
                             bool)
    self.max_labels = max(len(lab) for lab in self.labels)
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
    self.prefix_len = shared_prefix_length(self.prompts)

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
    labels = np.zeros((n, self.max_labels), np.int32)
    label_mask = np.zeros((n, self.max_labels), bool)
    for row, i in enumerate(idx):
      labels[row, :len(self.labels[i])] = self.labels[i]
      label_mask[row, :len(self.labels[i])] = True
    arrays["labels"], arrays["label_mask"] = labels, label_mask
    arrays["behavior"] = self.behavior[idx]
    prefix = self.prompts[0].tokens[:self.prefix_len] if self.prefix_len else None
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
                       mask=sessions.graph_mask, negatives=sessions.negatives,
                       labels=arrays["labels"], label_mask=arrays["label_mask"],
                       behavior=arrays["behavior"],
                       prefix_ids=None if prefix is None else np.tile(
                           np.asarray(prefix, np.int32), (self.batch_size, 1)))

  def iterate(self, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> Iterator:
    n = len(self)
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, self.batch_size):
      yield self.batch(order[start:start + self.batch_size])
