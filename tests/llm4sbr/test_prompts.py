"""Tests for sbrjax.llm4sbr.prompts."""

import numpy as np
import pytest
import transformers

from sbrjax.data.types import Split
from sbrjax.llm4sbr import prompts

_TEXTS = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms\n(1995)",
          "Get Shorty (1995)"]
_RAW = ["1", "2", "3", "4"]


def test_long_term_prompt_is_the_papers_wording():
  got = prompts.session_prompt([0, 2, 1], "long_term", _TEXTS, _RAW)
  assert got == (
      "The order in which users click on items is as follows:\n"
      "1. Toy Story (1995)_1\n"
      "2. Four Rooms (1995)_3\n"
      "3. GoldenEye (1995)_2\n"
      "Please guess an item that the user is interested in in the long-term. "
      "(Only output the item name without any explanation.)")


def test_short_term_prompt_and_dense_ids_by_default():
  got = prompts.session_prompt([3, 3], "short_term", _TEXTS)
  assert got == (
      "The order in which users click on items is as follows:\n"
      "1. Get Shorty (1995)_3\n"
      "2. Get Shorty (1995)_3\n"
      "Please guess an item that the user is interested in in the "
      "short-term. (Only output the item name without any explanation.)")


def test_truncation_keeps_most_recent_items_renumbered():
  got = prompts.session_prompt([0, 1, 2, 3], "long_term", _TEXTS, _RAW,
                               max_items=2)
  lines = got.split("\n")
  assert lines[1:3] == ["1. Four Rooms (1995)_3", "2. Get Shorty (1995)_4"]
  assert len(lines) == 4
  # A limit above the length keeps everything.
  assert prompts.session_prompt([0, 1], "long_term", _TEXTS,
                                max_items=10) == prompts.session_prompt(
                                    [0, 1], "long_term", _TEXTS)


def test_custom_perspective_wording():
  views = {**prompts.PERSPECTIVES, "next": "next few minutes"}
  got = prompts.session_prompt([1], "next", _TEXTS, perspectives=views)
  assert got.endswith("interested in in the next few minutes. (Only output "
                      "the item name without any explanation.)")


def test_build_prompts_for_a_split():
  split = Split(seq_values=np.array([0, 1, 3, 2], np.int32),
                seq_offsets=np.array([0, 2, 3, 4]),
                targets=np.array([2, 0, 1], np.int32),
                users=np.array([0, 1, 2], np.int32))
  out = prompts.build_prompts(split, _TEXTS, _RAW)
  assert set(out) == {"long_term", "short_term"}
  assert len(out["long_term"]) == 3
  assert out["short_term"][1] == prompts.session_prompt([3], "short_term",
                                                        _TEXTS, _RAW)


def test_bad_inputs():
  with pytest.raises(KeyError, match="unknown perspective 'mid'"):
    prompts.session_prompt([0], "mid", _TEXTS)
  with pytest.raises(ValueError, match="empty session"):
    prompts.session_prompt([], "long_term", _TEXTS)
  with pytest.raises(ValueError, match=r"item id 9 outside \[0, 4\)"):
    prompts.session_prompt([9], "long_term", _TEXTS)
  with pytest.raises(ValueError, match="max_items"):
    prompts.session_prompt([0], "long_term", _TEXTS, max_items=0)


def _tokenizer(tmp_path, template):
  (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhi\n")
  tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
  tok.chat_template = template
  return tok


def test_chat_template_wrapping(tmp_path):
  template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
              "<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>"
              "{% endif %}")
  tok = _tokenizer(tmp_path, template)
  p = prompts.session_prompt([0], "long_term", _TEXTS)
  assert prompts.wrap_chat(p, tok) == f"<|user|>{p}<|end|><|assistant|>"
  assert prompts.wrap_chat(p, tok, system="Be brief.") == (
      f"<|system|>Be brief.<|end|><|user|>{p}<|end|><|assistant|>")


def test_no_chat_template_returns_prompt(tmp_path):
  tok = _tokenizer(tmp_path, None)
  assert prompts.wrap_chat("plain", tok) == "plain"
