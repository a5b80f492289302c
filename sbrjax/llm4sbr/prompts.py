"""LLM4SBR intent-inference prompts.

The paper (and its released code) asks the LLM, once per perspective::

  The order in which users click on items is as follows:
  1. ItemName_ItemID
  ...
  N. ItemName_ItemID
  Please guess an item that the user is interested in in the long-term. (Only output the item name without any explanation.)

with "long-term" replaced by "short-term" for the short-term view. Items are
listed oldest click first, one per line. ``PERSPECTIVES`` maps a perspective
name (the key used in intent files and intent arrays) to the wording put in
the question; pass another mapping to add views.

Truncation: with ``max_items=N`` only the N most recent clicks are listed and
they are numbered 1..N (the LLM sees a shorter session, not a gap).
Newlines and runs of whitespace inside item names are collapsed to one space
so each item stays on its own line.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence

from sbrjax.data.types import Split

PERSPECTIVES: Mapping[str, str] = {
    "long_term": "long-term",
    "short_term": "short-term",
}

HEADER = "The order in which users click on items is as follows:"
QUESTION = ("Please guess an item that the user is interested in in the "
            "{wording}. (Only output the item name without any explanation.)")

_WS = re.compile(r"\s+")


def _clean(text: str) -> str:
  return _WS.sub(" ", str(text)).strip()


def session_prompt(items: Sequence[int], perspective: str,
                   item_texts: Sequence[str],
                   item_ids: Optional[Sequence[str]] = None, *,
                   perspectives: Mapping[str, str] = PERSPECTIVES,
                   max_items: Optional[int] = None) -> str:
  """The prompt for one session and one perspective.

  Args:
    items: dense item ids of the session, oldest first.
    perspective: a key of ``perspectives``.
    item_texts: [num_items] item names.
    item_ids: [num_items] ids shown after the underscore (e.g. the raw ids);
      defaults to the dense id.
    perspectives: perspective name -> wording.
    max_items: keep only the most recent ``max_items`` clicks.

  Returns:
    The prompt text (no chat template).
  """
  if perspective not in perspectives:
    raise KeyError(f"unknown perspective {perspective!r}; choose one of "
                   f"{sorted(perspectives)}")
  if max_items is not None:
    if max_items < 1:
      raise ValueError(f"max_items must be >= 1, got {max_items}")
    items = items[-max_items:]
  if len(items) == 0:
    raise ValueError("cannot build a prompt for an empty session")
  lines = [HEADER]
  for pos, item in enumerate(items, 1):
    item = int(item)
    if not 0 <= item < len(item_texts):
      raise ValueError(f"item id {item} outside [0, {len(item_texts)})")
    label = str(item) if item_ids is None else str(item_ids[item])
    lines.append(f"{pos}. {_clean(item_texts[item])}_{label}")
  lines.append(QUESTION.format(wording=perspectives[perspective]))
  return "\n".join(lines)


def build_prompts(split: Split, item_texts: Sequence[str],
                  item_ids: Optional[Sequence[str]] = None, *,
                  perspectives: Mapping[str, str] = PERSPECTIVES,
                  max_items: Optional[int] = None) -> Dict[str, list]:
  """Prompts for every example of a split.

  Returns:
    perspective name -> list of ``len(split)`` prompt strings (row i is
    example i, whose session index is ``split.users[i]``).
  """
  return {
      name: [session_prompt(split.sequence(i), name, item_texts, item_ids,
                            perspectives=perspectives, max_items=max_items)
             for i in range(len(split))]
      for name in perspectives
  }


def wrap_chat(prompt: str, tokenizer, system: Optional[str] = None) -> str:
  """Wraps a prompt in the tokenizer's chat template, if it has one.

  With ``tokenizer.chat_template`` set, returns
  ``apply_chat_template([system?, user], add_generation_prompt=True)`` as
  text; otherwise returns the prompt unchanged (plain completion models).
  """
  if not getattr(tokenizer, "chat_template", None):
    return prompt
  messages = []
  if system is not None:
    messages.append({"role": "system", "content": system})
  messages.append({"role": "user", "content": prompt})
  return tokenizer.apply_chat_template(messages, tokenize=False,
                                       add_generation_prompt=True)
