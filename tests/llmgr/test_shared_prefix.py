"""The shared prompt prefix: run once per batch, the same scores and gradients as the full pass."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbrjax.llmgr import examples as llmgr_data
from sbrjax.llmgr import model as llmgr_lib
from sbrjax.llmgr import prompts as prompts_lib
from tests.llmgr import tiny_model


def _prompt(tokens, slots=()):
  slots = np.asarray(slots, np.int32)
  return prompts_lib.EncodedPrompt(np.asarray(tokens, np.int32), slots, np.zeros_like(slots),
                                   np.zeros(0, np.int32))


def test_shared_prefix_length_stops_at_a_difference_a_slot_and_the_last_token():
  same = [1, 5, 6, 7, 8, 9, 10]
  assert llmgr_data.shared_prefix_length(
      [_prompt(same + [0, 11]), _prompt(same + [0, 12, 13])], minimum=1) == 8
  # The first differing token ends it.
  assert llmgr_data.shared_prefix_length(
      [_prompt(same + [0]), _prompt([1, 5, 6, 4, 8, 9, 10, 0])], minimum=1) == 3
  # A slot ends it, even where the placeholder token ids agree.
  assert llmgr_data.shared_prefix_length(
      [_prompt(same + [0], slots=[5, 7]), _prompt(same + [0], slots=[7])], minimum=1) == 5
  # The last token (the one the head reads) is never in the prefix.
  assert llmgr_data.shared_prefix_length([_prompt(same), _prompt(same + [3])], minimum=1) == 6
  # Below the minimum: not worth a second pass.
  assert llmgr_data.shared_prefix_length([_prompt(same + [0])], minimum=8) == 0


def _setup(cfg):
  data, model, params, enc, pad = tiny_model.build(cfg)
  # Every parameter away from its initial value (LoRA's B and the residual head
  # start at zero), so each one reaches the scores.
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
  params = jax.tree_util.tree_unflatten(treedef, [
      x + 0.02 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
  return data, model, params, enc, pad


@pytest.mark.parametrize("head", ["paper", "residual"])
def test_shared_prefix_scores_and_gradients_equal_the_full_pass(cfg, head):
  cfg.llmgr.head = head
  data, model, params, enc, pad = _setup(cfg)
  assert model.config.shared_prefix  # the config default
  full = llmgr_lib.LLMGR(dataclasses.replace(model.config, shared_prefix=False))
  ex = llmgr_data.behavior_examples(data.train, enc, limit=6)
  batcher = llmgr_data.PromptBatcher([ex], max_len=8, batch_size=8, length_buckets=(128, 192),
                                     pad_id=pad)
  batch = next(batcher.iterate(shuffle=False))  # 6 real rows, 2 padded ones
  # The prefix is the BOS token, the frame's "Instruction: " and the task text
  # up to the first slot (the graph's): the same first slot position in every prompt.
  want_p = int(ex.prompts[0].slot_pos[0])
  assert want_p > 20 and all(int(p.slot_pos[0]) == want_p for p in ex.prompts)
  assert batcher.prefix_len == want_p and batch.prefix_ids.shape == (8, want_p)
  np.testing.assert_array_equal(batch.prefix_ids, np.asarray(batch.input_ids)[:1, :want_p]
                                .repeat(8, 0))
  real = np.asarray(batch.mask)
  shared_logits = np.asarray(model.apply({"params": params}, batch))
  full_logits = np.asarray(full.apply({"params": params}, batch))
  np.testing.assert_allclose(shared_logits[real], full_logits[real], rtol=2e-5, atol=2e-5)
  # Not a vacuous comparison: the prefix reaches the scores.
  other = batch._replace(input_ids=np.asarray(batch.input_ids).copy())
  other.input_ids[:, 1] += 1
  assert not np.allclose(np.asarray(full.apply({"params": params}, other))[real],
                         full_logits[real], atol=1e-4)

  def loss(p, m):
    logits = m.apply({"params": p}, batch)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.targets)
    return jnp.sum(jnp.where(batch.mask, ce, 0.0))

  g_shared = jax.jit(jax.grad(lambda p: loss(p, model)))(params)
  g_full = jax.jit(jax.grad(lambda p: loss(p, full)))(params)
  flat_s = jax.tree_util.tree_leaves_with_path(g_shared)
  flat_f = jax.tree_util.tree_leaves(g_full)
  lora = 0
  for (path, a), b in zip(flat_s, flat_f):
    name = jax.tree_util.keystr(path)
    lora += "lora" in name and bool(np.any(np.asarray(b) != 0))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
  assert lora  # gradients reach LoRA through the broadcast prefix keys and values


def test_mixed_task_batches_share_only_their_common_prefix(cfg):
  cfg.llm.remat = True  # rematerialised blocks take the cache path too
  data, model, params, enc, pad = _setup(cfg)
  assert model.config.llm.remat
  node_text = llmgr_data.node_text_examples(data.num_items, enc, limit=4)
  contrastive = llmgr_data.contrastive_examples(data.train, data.num_items, enc,
                                                num_candidates=5, max_successors=2, limit=4)
  batcher = llmgr_data.PromptBatcher([node_text, contrastive], max_len=8, batch_size=8,
                                     length_buckets=(128, 192), pad_id=pad)
  a, b = node_text.prompts[0].tokens, contrastive.prompts[0].tokens
  common = int(np.nonzero(a[:min(len(a), len(b))] != b[:min(len(a), len(b))])[0][0])
  assert batcher.prefix_len == (common if common >= llmgr_data.MIN_SHARED_PREFIX else 0)
  batch = next(batcher.iterate(shuffle=True, seed=1))
  full = llmgr_lib.LLMGR(dataclasses.replace(model.config, shared_prefix=False))
  real = np.asarray(batch.mask)
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, batch))[real],
                             np.asarray(full.apply({"params": params}, batch))[real],
                             rtol=2e-5, atol=2e-5)
