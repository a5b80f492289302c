"""Contrastive prompts: the target node is never the tail node; the answer is every successor."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbrjax import llm as llm_api
from sbrjax.llmgr import examples as llmgr_data
from sbrjax.llmgr import prompts as prompts_lib
from sbrjax.train import losses

MAX_LEN = 6


def _encoder(**kwargs):
  tok = llm_api.ByteTokenizer()
  return prompts_lib.PromptEncoder(
      tok.encode, bos_id=tok.bos_token_id, placeholder_id=0, max_len=MAX_LEN, max_nodes=4,
      max_text_tokens=4, item_text_tokens=[tok.encode(f" i{i}") for i in range(40)], **kwargs)


def _split(seqs):
  seqs = [np.asarray(s, np.int32) for s in seqs]
  return llmgr_data._split_from_sequences(seqs, np.zeros(len(seqs)), np.arange(len(seqs)))


def _successors(seq, node):
  seq = np.asarray(seq)
  return set(seq[1:][seq[:-1] == node].tolist())


SESSIONS = [
    [1, 2, 3, 2, 4, 3],      # tail node 3 also occurs earlier
    [5, 6, 5],               # tail item 5 repeats: only node 6 may be drawn
    [7, 7, 7],               # only the tail node: no prompt
    [8, 9],
    [20, 21, 22, 23, 24, 25, 26, 21],  # longer than MAX_LEN: its window is the last 6
]


@pytest.mark.parametrize("seed", range(8))
def test_contrastive_target_node_excludes_the_tail_and_answers_all_its_successors(seed):
  enc = _encoder()
  ex = llmgr_data.contrastive_examples(_split(SESSIONS), 40, enc, num_candidates=5,
                                       max_successors=3, seed=seed)
  assert len(ex) == 4  # [7, 7, 7] has no node but its tail node
  for i, prompt in enumerate(ex.prompts):
    window = ex.sessions.sequence(i)
    assert len(window) <= MAX_LEN
    click = int(prompt.slot_src[0]) - 1  # the node slot indexes the clicks block
    node = int(window[click])
    assert node != window[-1]  # never the tail node, even when the tail item repeats
    assert window[click:].tolist().count(node) == 1  # its most recent click
    succ = _successors(window, node)
    assert set(ex.labels[i].tolist()) == succ  # every successor is an answer
    listed = set(prompt.items.tolist())
    assert succ <= listed and node not in listed and len(prompt.items) == 5
    assert ex.sessions.targets[i] in succ


def test_contrastive_answer_is_capped_to_the_listed_successors():
  enc = _encoder()
  seq = [[1, 2, 1, 3, 1, 4, 1, 5, 9]]  # node 1 has four successors, node 9 is the tail
  seen = set()
  for seed in range(12):
    ex = llmgr_data.contrastive_examples(_split(seq), 40, enc, num_candidates=6,
                                         max_successors=2, seed=seed)
    window = ex.sessions.sequence(0)
    node = int(window[ex.prompts[0].slot_src[0] - 1])
    labels = set(ex.labels[0].tolist())
    assert labels <= _successors(window, node) and labels <= set(ex.prompts[0].items.tolist())
    assert len(labels) == min(2, len(_successors(window, node)))
    seen.add(node)
  assert seen <= {1, 3, 4, 5}


def test_legacy_contrastive_draws_clicks_and_one_successor():
  enc = _encoder(node_source="mixed")
  nodes = set()
  for seed in range(20):
    ex = llmgr_data.contrastive_examples(_split([[5, 6, 5]]), 40, enc, num_candidates=4,
                                         max_successors=2, seed=seed, mode="legacy")
    assert len(ex.labels[0]) == 1
    nodes.add(int(ex.prompts[0].items[0]))  # "mixed": the node is the first listed item
  assert nodes == {5, 6}  # the tail item 5 can be drawn (the deviation issue 12 fixes)
  with pytest.raises(ValueError, match="config.llmgr.contrastive"):
    llmgr_data.contrastive_examples(_split(SESSIONS), 40, enc, num_candidates=4,
                                    max_successors=2, mode="one")


def test_batches_carry_every_label_and_the_loss_is_uniform_over_them():
  enc = _encoder()
  ex = llmgr_data.contrastive_examples(_split(SESSIONS), 40, enc, num_candidates=5,
                                       max_successors=3, seed=3)
  beh = llmgr_data.behavior_examples(_split([[3, 4], [5]]), enc)
  batcher = llmgr_data.PromptBatcher([ex, beh], max_len=MAX_LEN, batch_size=8,
                                     length_buckets=(256,), pad_id=0)
  batch = batcher.batch(np.arange(len(batcher)))
  n = len(batcher)
  for row in range(n):
    want = ex.labels[row].tolist() if row < len(ex) else [0]  # behavior: its target (0)
    assert batch.labels[row][batch.label_mask[row]].tolist() == want
  assert not batch.label_mask[n:].any() and batch.mask[:n].all() and not batch.mask[n:].any()

  logits = np.random.default_rng(0).normal(size=(8, 40)).astype(np.float32)
  got = losses.masked_multilabel_xent(jnp.asarray(logits), jnp.asarray(batch.labels),
                                      jnp.asarray(batch.label_mask), jnp.asarray(batch.mask))
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  ref = np.mean([-np.mean(log_p[r, batch.labels[r][batch.label_mask[r]]]) for r in range(n)])
  np.testing.assert_allclose(float(got), ref, rtol=1e-6)
  # One label per row: exactly the single-label cross-entropy.
  one = losses.masked_multilabel_xent(jnp.asarray(logits), jnp.asarray(batch.labels[:, :1]),
                                      jnp.ones((8, 1), bool), jnp.asarray(batch.mask))
  single = losses.masked_xent(jnp.asarray(logits), jnp.asarray(batch.labels[:, 0]),
                              jnp.asarray(batch.mask))
  np.testing.assert_allclose(float(one), float(single), rtol=1e-6)
  # And equal to optax's cross-entropy against the dense uniform distribution.
  dense = np.zeros((n, 40), np.float32)
  for r in range(n):
    lab = batch.labels[r][batch.label_mask[r]]
    dense[r, lab] = 1.0 / len(lab)
  np.testing.assert_allclose(
      float(got), float(optax.softmax_cross_entropy(logits[:n], dense).mean()), rtol=1e-6)
