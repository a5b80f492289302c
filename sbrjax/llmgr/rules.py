"""Where LLMGR's parameters and batches live on a device mesh.

* :data:`LLMGR_PARAM_RULES`: ``(regex, logical axes)`` for every leaf of the
  LLMGR tree ``{sbr, llm, f_in, f_out}`` and of its optimiser state (the
  regexes are anchored at the end of the path, which Adam's ``mu``/``nu``
  share with their parameter).
* :data:`LLMGR_LOGICAL_AXIS_RULES`: the default logical -> mesh table; the
  catalog axis asks for every device and, when "embed" already took fsdp
  (f_out's kernel is [D, M]), falls back to the remaining axes.
* :func:`batch_shardings` / :func:`place_batch`: ``PromptBatch`` rows split
  over the "batch" mesh axes; the session graph (jraph node/edge arrays,
  batch-global node ids, sized by budgets rather than by B) is replicated.

Precision: trainable leaves (LoRA, f_in, f_out, SBR) are float32 and are
their own master copies; frozen LLaMA weights may be stored in bfloat16
(``config.llm.frozen_dtype``) and matmuls run in ``config.llm.dtype``; the
loss and the item logits are float32.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from jax.sharding import Mesh

from sbrjax.parallel import rules as rules_lib
from sbrjax.parallel import state as state_lib

LLMGR_LOGICAL_AXIS_RULES: rules_lib.LogicalRules = (
    tuple(rules_lib.DEFAULT_LOGICAL_AXIS_RULES)
    + (("items", ("data", "tensor")), ("items", "tensor")))

_LORA_IN = r"(q_proj|k_proj|v_proj|gate_proj|up_proj)"

LLMGR_PARAM_RULES: rules_lib.ParamRules = (
    # LoRA adapters: a [in, r], b [r, out]; the rank axis is never split.
    (_LORA_IN + r"/lora/a$", ("embed", "lora_rank")),
    (r"o_proj/lora/a$", ("heads", "lora_rank")),
    (r"down_proj/lora/a$", ("mlp", "lora_rank")),
    (r"q_proj/lora/b$", ("lora_rank", "heads")),
    (r"(k_proj|v_proj)/lora/b$", ("lora_rank", "kv_heads")),
    (r"(gate_proj|up_proj)/lora/b$", ("lora_rank", "mlp")),
    (r"(o_proj|down_proj)/lora/b$", ("lora_rank", "embed")),
    # LLaMA base weights (kernels are [in, out]).
    (r"llm/embed_tokens/embedding$", ("vocab", "embed")),
    (r"q_proj/kernel$", ("embed", "heads")),
    (r"(k_proj|v_proj)/kernel$", ("embed", "kv_heads")),
    (r"o_proj/kernel$", ("heads", "embed")),
    (r"(gate_proj|up_proj)/kernel$", ("embed", "mlp")),
    (r"down_proj/kernel$", ("mlp", "embed")),
    (r"llm/lm_head/kernel$", ("embed", "vocab")),
    (r"llm/(.*/)?[a-z_]*norm/scale$", ("norm",)),
    # f_in: [d_sbr, D] projection of SBR vectors into the LLM.
    (r"f_in/kernel$", (None, "embed")),
    (r"f_in/bias$", (None,)),
    # f_out: [D, M] item head (an optional [D, H] hidden layer before it).
    (r"f_out/out/kernel$", ("embed", "items")),
    (r"f_out/out/bias$", ("items",)),
    (r"f_out/hidden/kernel$", ("embed", None)),
    (r"f_out/hidden/bias$", (None,)),
    # Tied head: [D or H, d_sbr] projection into the SBR space, an item bias;
    # the residual head has a second pair for behavior prompts.
    (r"f_out/(proj|proj_behavior)/kernel$", ("embed", None)),
    (r"f_out/(proj|proj_behavior)/bias$", (None,)),
    (r"f_out/(item_bias|bias_behavior)$", ("items",)),
    # SBR backbone: small, replicated except its item table.
    (r"sbr/(.*/)?item_embedding/embedding$", ("items", None)),
    (r"(^|/)sbr/", rules_lib.REPLICATED),
)


def logical_rules(config_rules: Optional[Sequence] = None) -> rules_lib.LogicalRules:
  """``config.logical_axis_rules``; empty -> :data:`LLMGR_LOGICAL_AXIS_RULES`."""
  return rules_lib.logical_rules(config_rules, LLMGR_LOGICAL_AXIS_RULES)


def batch_shardings(batch, mesh: Mesh,
                    rules: rules_lib.LogicalRules = LLMGR_LOGICAL_AXIS_RULES):
  """NamedShardings of a ``PromptBatch``: rows over the batch axes, graph replicated."""

  def graph_replicated(shardings, b):
    graph = state_lib.replicated_like(b.sessions.graph, mesh)
    return shardings._replace(sessions=shardings.sessions._replace(graph=graph))

  return state_lib.row_shardings(batch, mesh, rules, np.shape(batch.input_ids)[0],
                                 graph_replicated)


def place_batch(batch, mesh: Mesh, rules: rules_lib.LogicalRules = LLMGR_LOGICAL_AXIS_RULES):
  """A host ``PromptBatch`` put on ``mesh`` with :func:`batch_shardings`."""
  return state_lib.place(batch, batch_shardings(batch, mesh, rules))
