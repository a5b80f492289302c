"""LLMGR instruction prompts as token ids plus placeholder slots (Guo et al.).

A template is text with placeholders. Its text pieces are tokenized once;
each prompt is those pieces interleaved with placeholder positions whose
input vectors the hybrid encoding layer fills in (``sbrjax.llmgr.model``).

Frame (``frame``): the paper writes all three prompts as
``Instruction: <task text> Response:`` (Section 3, Fig. 2); ``FRAMES["paper"]``
wraps each template so, and the item head reads the hidden state of the
frame's last token (the ":" of "Response:"), the position a decoder would
start answering from. ``FRAMES["none"]`` is the bare task text (the head then
reads the final "." token), kept as a labelled option.

Placeholders and the vector each one receives (the *source*):
  * ``{graph}``: the SBR session representation (``final``) of the session.
    Hidden (removed with the space before it) when the backbone reads no
    session graph (``graph_slot=False``; paper Section 4.3).
  * ``{nodes}``: one slot per click of the session, oldest first (repeated
    items appear once per click). When the session has more clicks than
    ``max_nodes`` the most recent ``max_nodes`` are kept.
  * ``{node}``: the contrastive prompt's target node, a click of the session
    (its most recent click of that item).
  * ``{candidates}``: one slot per listed candidate item.
  * ``{text}``: not a vector slot: the item's text tokens, truncated to
    ``max_text_tokens`` (counted in ``PromptStats``).

Sources are indexed per example into the table
``[graph (1) | clicks (max_len) | listed items (Q)]`` so one gather serves
every prompt type. ``{nodes}`` and ``{node}`` index the *clicks* block, whose
rows the model fills from the configured node source (``table``: the clicked
item's ID embedding; ``gnn``: the click's state after message passing), so
an in-session node gets the same kind of vector in every prompt.
``{candidates}`` index the listed-items block (always ID embeddings: most
candidates are outside the session and have no node state, and giving the
in-session successors another kind of vector would reveal the answer). The
target is a label of the item head, never part of the prompt, so no
truncation can drop it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

TEMPLATES: Dict[str, str] = {
    # Behavior-pattern modeling (the major task).
    "behavior": ("Please recommend a suitable next item according to the session graph "
                 "and its corresponding nodes {graph} {nodes}."),
    # Node-context aligning (auxiliary).
    "node_text": "Please tell me which node the textual information {text} belongs to.",
    # Contrastive structure-aware (auxiliary).
    "contrastive": ("Given a target node ID and a candidate node ID list, select the "
                    "succeeding nodes of the target node {node} {candidates}."),
}
TASKS = tuple(TEMPLATES)
# (text before, text after) the task text; "paper" is the paper's frame.
FRAMES: Dict[str, tuple] = {
    "paper": ("Instruction: ", "\nResponse:"),
    "none": ("", ""),
}
# What fills the clicks block (see the module doc). "mixed" is the encoding
# before issue 12, kept as a labelled option: GNN states for the behavior
# prompt's nodes but an ID-embedding row for the contrastive target node.
NODE_SOURCES = ("table", "gnn", "mixed")
_PLACEHOLDER = re.compile(r"\{(graph|nodes|node|candidates|text)\}")


@dataclasses.dataclass(frozen=True)
class TokenizedTemplate:
  """Text pieces (token ids) and the placeholder that follows each piece."""
  pieces: tuple          # tuple of tuples of token ids, len = len(holes) + 1
  holes: tuple           # placeholder names in order


def tokenize_template(template: str, tokenize: Callable[[str], List[int]]) -> TokenizedTemplate:
  """Splits ``template`` at its placeholders and tokenizes each text piece once."""
  pieces, holes, last = [], [], 0
  for match in _PLACEHOLDER.finditer(template):
    pieces.append(tuple(tokenize(template[last:match.start()])))
    holes.append(match.group(1))
    last = match.end()
  pieces.append(tuple(tokenize(template[last:])))
  return TokenizedTemplate(tuple(pieces), tuple(holes))


@dataclasses.dataclass
class PromptStats:
  """Counts of documented fallbacks, reported in the results JSON."""
  sessions_truncated: int = 0     # more clicks than max_nodes: oldest dropped
  texts_truncated: int = 0        # item text longer than max_text_tokens
  prompts: int = 0


@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
  tokens: np.ndarray        # int32 [n] token ids (placeholders hold placeholder_id)
  slot_pos: np.ndarray      # int32 [s] positions of vector slots in ``tokens``
  slot_src: np.ndarray      # int32 [s] source index (see module doc)
  items: np.ndarray         # int32 [q] item ids listed in the prompt ({candidates}; and
                            # {node} with node_source "mixed")


class PromptEncoder:
  """Builds token ids and slots for the three LLMGR prompts."""

  def __init__(self, tokenize: Callable[[str], List[int]], *, bos_id: Optional[int],
               placeholder_id: int, max_len: int, max_nodes: int, max_text_tokens: int,
               item_text_tokens: Sequence[Sequence[int]], frame: str = "paper",
               graph_slot: bool = True, node_source: str = "table"):
    """Args:
      tokenize: text -> token ids, without special tokens.
      bos_id: prepended to every prompt (None: nothing prepended).
      placeholder_id: token id written at slot positions (its embedding is
        replaced, so any id in the vocabulary works).
      max_len: the session length of graph batches (source table width).
      max_nodes: most node slots in a behavior prompt.
      max_text_tokens: most item-text tokens in a node_text prompt.
      item_text_tokens: token ids of every item's text, tokenized once.
      frame: a key of ``FRAMES`` (config.llmgr.prompt_frame).
      graph_slot: False hides ``{graph}`` (backbones without a session graph).
      node_source: a key of ``NODE_SOURCES`` (config.llmgr.node_source); only
        "mixed" changes the encoding: the contrastive target node is then a
        listed item (an ID-embedding row) while behavior nodes stay clicks.
    """
    if max_nodes < 1 or max_nodes > max_len:
      raise ValueError(f"max_nodes must be in [1, max_len={max_len}], got {max_nodes}; "
                       "set config.llmgr.max_nodes.")
    if frame not in FRAMES:
      raise ValueError(f"config.llmgr.prompt_frame={frame!r} is not supported; choose one "
                       f"of {', '.join(map(repr, FRAMES))}.")
    if node_source not in NODE_SOURCES:
      raise ValueError(f"config.llmgr.node_source={node_source!r} is not supported; choose "
                       f"one of {', '.join(map(repr, NODE_SOURCES))}.")
    before, after = FRAMES[frame]
    self.templates = {}
    for name, body in TEMPLATES.items():
      if not graph_slot:
        body = body.replace(" {graph}", "")
      self.templates[name] = tokenize_template(before + body + after, tokenize)
    self.frame = frame
    self.node_source = node_source
    self.graph_slot = graph_slot
    self.bos = [] if bos_id is None else [int(bos_id)]
    self.placeholder_id = int(placeholder_id)
    self.max_len = max_len
    self.max_nodes = max_nodes
    self.max_text_tokens = max_text_tokens
    self.item_text_tokens = item_text_tokens
    self.stats = PromptStats()

  def encode(self, task: str, *, session: Sequence[int] = (), item: int = -1,
             click: int = -1, candidates: Sequence[int] = ()) -> EncodedPrompt:
    """One prompt.

    Args:
      task: "behavior", "node_text" or "contrastive".
      session: the session's clicks (behavior); only its length matters here,
        the vectors come from the graph batch.
      item: the item whose text is shown (node_text), or the target node's
        item (contrastive).
      click: the target node's click index in the session as the graph batch
        holds it (its last ``max_len`` clicks; contrastive).
      candidates: candidate items (contrastive), in prompt order.
    """
    if task not in self.templates:
      raise ValueError(f"Unknown prompt task {task!r}; choose one of {TASKS}.")
    tmpl = self.templates[task]
    tokens = list(self.bos)
    slot_pos, slot_src, items = [], [], []
    self.stats.prompts += 1
    for piece, hole in zip(tmpl.pieces, tmpl.holes + (None,)):
      tokens.extend(piece)
      if hole == "graph":
        slot_pos.append(len(tokens))
        slot_src.append(0)
        tokens.append(self.placeholder_id)
      elif hole == "nodes":
        n = min(len(session), self.max_len)
        if n < 1:
          raise ValueError("A behavior prompt needs a session with at least one click.")
        keep = min(n, self.max_nodes)
        if keep < len(session):
          self.stats.sessions_truncated += 1
        # Click positions of the (max_len-truncated) session, most recent `keep`.
        for c in range(n - keep, n):
          slot_pos.append(len(tokens))
          slot_src.append(1 + c)
          tokens.append(self.placeholder_id)
      elif hole == "node" and self.node_source == "mixed":
        slot_pos.append(len(tokens))
        slot_src.append(1 + self.max_len + len(items))
        items.append(int(item))
        tokens.append(self.placeholder_id)
      elif hole == "node":
        if not 0 <= click < self.max_len:
          raise ValueError(f"A contrastive prompt's target node needs its click index in "
                           f"[0, max_len={self.max_len}), got {click}.")
        slot_pos.append(len(tokens))
        slot_src.append(1 + click)
        tokens.append(self.placeholder_id)
      elif hole == "candidates":
        for it in candidates:
          slot_pos.append(len(tokens))
          slot_src.append(1 + self.max_len + len(items))
          items.append(int(it))
          tokens.append(self.placeholder_id)
      elif hole == "text":
        text = list(self.item_text_tokens[item])
        if len(text) > self.max_text_tokens:
          self.stats.texts_truncated += 1
          text = text[:self.max_text_tokens]
        tokens.extend(text)
    return EncodedPrompt(np.asarray(tokens, np.int32), np.asarray(slot_pos, np.int32),
                         np.asarray(slot_src, np.int32), np.asarray(items, np.int32))


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= n; raises if the prompt fits none."""
  for b in sorted(buckets):
    if n <= b:
      return b
  raise ValueError(f"A prompt of {n} tokens exceeds the largest length bucket "
                   f"{max(buckets)}; add a larger config.llmgr.length_buckets entry or lower "
                   "config.llmgr.max_nodes / max_text_tokens.")


def collate(prompts: Sequence[EncodedPrompt], *, length: int, max_slots: int, max_items: int,
            pad_id: int) -> Dict[str, np.ndarray]:
  """Right-pads prompts to one shape.

  Returns:
    input_ids int32 [B, length], attention_mask int32 [B, length],
    last_pos int32 [B] (last real token), slot_pos int32 [B, S] (``length``
    for unused slots, which a scatter with mode="drop" ignores),
    slot_src int32 [B, S], items int32 [B, Q] with items_mask.
  """
  b = len(prompts)
  ids = np.full((b, length), pad_id, np.int32)
  mask = np.zeros((b, length), np.int32)
  slot_pos = np.full((b, max_slots), length, np.int32)
  slot_src = np.zeros((b, max_slots), np.int32)
  items = np.zeros((b, max_items), np.int32)
  items_mask = np.zeros((b, max_items), bool)
  last = np.zeros(b, np.int32)
  for i, p in enumerate(prompts):
    n = len(p.tokens)
    if n > length:
      raise ValueError(f"Prompt of {n} tokens does not fit length {length}.")
    if len(p.slot_pos) > max_slots or len(p.items) > max_items:
      raise ValueError(f"Prompt has {len(p.slot_pos)} slots / {len(p.items)} items; the "
                       f"batch allows {max_slots} / {max_items}.")
    ids[i, :n] = p.tokens
    mask[i, :n] = 1
    last[i] = n - 1
    slot_pos[i, :len(p.slot_pos)] = p.slot_pos
    slot_src[i, :len(p.slot_src)] = p.slot_src
    items[i, :len(p.items)] = p.items
    items_mask[i, :len(p.items)] = True
  return {"input_ids": ids, "attention_mask": mask, "last_pos": last, "slot_pos": slot_pos,
          "slot_src": slot_src, "items": items, "items_mask": items_mask}
