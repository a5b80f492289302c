"""LLMGR on a device mesh: parameter rules, sharded state, batches and step.

The same config runs on one CPU and on a mesh; only ``config.mesh`` (axis
sizes, e.g. ``{"data": -1, "fsdp": 1, "tensor": 1}``) and
``config.logical_axis_rules`` (empty: :data:`LLMGR_LOGICAL_AXIS_RULES`)
change. The pieces:

* :data:`LLMGR_PARAM_RULES`: ``(regex, logical axes)`` for every leaf of the
  LLMGR tree ``{sbr, llm, f_in, f_out}`` and of its optimiser state (the
  regexes are anchored at the end of the path, which Adam's ``mu``/``nu``
  share with their parameter).
* :func:`create_train_state` / :func:`shard_llmgr_state`: a ``TrainState``
  placed with ``NamedSharding``s derived from ``jax.eval_shape``; the
  optimiser state is born sharded.
* :func:`batch_shardings` / :func:`place_batch`: ``PromptBatch`` rows split
  over the "batch" mesh axes (``("data", "fsdp")``); the session graph
  (jraph node/edge arrays, batch-global node ids) is small and replicated.
* :func:`global_prompt_batch`: per-process batches of a multi-process run
  joined into one global batch (node ids offset per process).
* :func:`make_sharded_train_step`: ``sbrjax.train_llmgr.make_train_step``
  (the one step definition) under ``jax.jit`` with ``in_shardings``,
  ``out_shardings`` and a donated state.

Precision: trainable leaves (LoRA, f_in, f_out, SBR) are float32 and are
their own master copies; frozen LLaMA weights may be stored in bfloat16
(``config.llm.frozen_dtype``) and matmuls run in ``config.llm.dtype``; the
loss and the item logits are float32. The sharded step keeps every leaf's
dtype (tests/test_parallel_llmgr.py checks it).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sbrjax import sharding

# The catalog axis first asks for every device; when "embed" already took
# fsdp (f_out's kernel is [D, M]) it falls back to the remaining axes.
LLMGR_LOGICAL_AXIS_RULES: sharding.LogicalRules = (
    tuple(sharding.DEFAULT_LOGICAL_AXIS_RULES)
    + (("items", ("data", "tensor")), ("items", "tensor")))

_LORA_IN = r"(q_proj|k_proj|v_proj|gate_proj|up_proj)"

LLMGR_PARAM_RULES: sharding.ParamRules = (
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
    # SBR backbone: small, replicated except its item table.
    (r"sbr/(.*/)?item_embedding/embedding$", ("items", None)),
    (r"(^|/)sbr/", sharding.REPLICATED),
)


def logical_rules(config_rules: Optional[Sequence] = None) -> sharding.LogicalRules:
  """``config.logical_axis_rules`` as a tuple; empty -> the LLMGR defaults."""
  if not config_rules:
    return LLMGR_LOGICAL_AXIS_RULES
  out = []
  for entry in config_rules:
    if len(entry) != 2:
      raise ValueError(f"config.logical_axis_rules entry {entry!r} must be a "
                       "(logical_name, mesh_axes) pair.")
    name, axes = entry
    out.append((str(name), axes if axes is None or isinstance(axes, str)
                else tuple(axes)))
  return tuple(out)


def mesh_from_config(mesh_shape: Mapping[str, int],
                     devices: Optional[Sequence[Any]] = None) -> Mesh:
  """``config.mesh`` (axis -> size, one may be -1) as a device mesh."""
  shape = {str(k): int(v) for k, v in dict(mesh_shape).items()}
  unknown = set(shape) - set(sharding.MESH_AXES)
  if unknown:
    raise ValueError(f"config.mesh names unknown axes {sorted(unknown)}; use "
                     f"{sharding.MESH_AXES}.")
  return sharding.make_mesh(shape, devices)


def batch_axes(mesh: Mesh, rules: sharding.LogicalRules = LLMGR_LOGICAL_AXIS_RULES):
  """Mesh axes the batch dimension is split over (the "batch" rule)."""
  spec = sharding.logical_to_mesh_spec(("batch",), rules, mesh)
  axes = spec[0]
  if axes is None:
    return ()
  return (axes,) if isinstance(axes, str) else tuple(axes)


# ---------------------------------------------------------------- state ---


def _to_global(x, target: NamedSharding):
  """Places one array (host or single device) with ``target``."""
  if target.is_fully_addressable:
    return jax.device_put(x, target)
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    # Already global (e.g. the previous stage's parameters): reshard on device.
    return x if x.sharding == target else jax.device_put(x, target)
  # Multi-process: every process holds the same full value and hands each of
  # its devices only that device's slice.
  host = np.asarray(jax.device_get(x))
  return jax.make_array_from_callback(host.shape, target, lambda idx: host[idx])


def state_shardings(state_or_params, mesh: Mesh,
                    rules: sharding.LogicalRules = LLMGR_LOGICAL_AXIS_RULES,
                    param_rules: sharding.ParamRules = LLMGR_PARAM_RULES,
                    min_sharded_size: Optional[int] = sharding.DEFAULT_MIN_SHARDED_SIZE):
  """NamedShardings for a params tree or TrainState, from shapes only."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          state_or_params)
  return sharding.tree_shardings(abstract, mesh, rules, param_rules,
                                 min_sharded_size)


def shard_llmgr_state(state_or_params, mesh: Mesh,
                      rules: sharding.LogicalRules = LLMGR_LOGICAL_AXIS_RULES,
                      param_rules: sharding.ParamRules = LLMGR_PARAM_RULES,
                      min_sharded_size: Optional[int] = sharding.DEFAULT_MIN_SHARDED_SIZE):
  """Places an existing params tree or TrainState on ``mesh`` by the rules.

  Returns:
    ``(placed, shardings)``; reuse ``shardings`` as the step's in/out
    shardings.
  """
  shardings = state_shardings(state_or_params, mesh, rules, param_rules,
                              min_sharded_size)
  placed = jax.tree.map(_to_global, state_or_params, shardings)
  return placed, shardings


def create_train_state(model, params, tx, mesh: Mesh,
                       rules: sharding.LogicalRules = LLMGR_LOGICAL_AXIS_RULES,
                       param_rules: sharding.ParamRules = LLMGR_PARAM_RULES,
                       min_sharded_size: Optional[int] = sharding.DEFAULT_MIN_SHARDED_SIZE):
  """A ``TrainState`` whose params are placed and whose optimiser state is born sharded.

  The parameters (imported or freshly initialised, on host or one device)
  are placed leaf by leaf; ``tx.init`` then runs under ``jax.jit`` with the
  state's ``out_shardings``, so Adam's moments never exist unsharded.

  Returns:
    ``(state, shardings)``.
  """
  params, _ = shard_llmgr_state(params, mesh, rules, param_rules,
                                min_sharded_size)
  create = lambda p: train_state.TrainState.create(apply_fn=model.apply,
                                                   params=p, tx=tx)
  abstract = jax.eval_shape(create, params)
  shardings = sharding.tree_shardings(abstract, mesh, rules, param_rules,
                                      min_sharded_size)
  state = jax.jit(create, in_shardings=(shardings.params,),
                  out_shardings=shardings)(params)
  return state, shardings


# -------------------------------------------------------------- batches ---


def batch_shardings(batch, mesh: Mesh,
                    rules: sharding.LogicalRules = LLMGR_LOGICAL_AXIS_RULES):
  """NamedShardings for a ``PromptBatch``: rows over the batch axes.

  Every leaf whose leading dimension is the batch (tokens, masks, slots,
  targets, negatives, the sessions' positions/lengths/...) is split over the
  "batch" mesh axes; the session graph's node/edge arrays (batch-global node
  ids, sized by node and edge budgets, not by B) are replicated.

  Raises:
    ValueError: if the batch size does not divide over the batch axes.
  """
  axes = batch_axes(mesh, rules)
  n = math.prod(mesh.shape[a] for a in axes)
  b = np.shape(batch.input_ids)[0]
  if b % n:
    raise ValueError(f"batch size {b} is not divisible by the {n} devices of the "
                     f"batch mesh axes {axes} (mesh {dict(mesh.shape)}); choose "
                     f"config.train.batch_size / eval.batch_size as a multiple of {n}.")
  rep = NamedSharding(mesh, P())

  def rows(x):
    return NamedSharding(mesh, P(axes if axes else None,
                                 *([None] * (np.ndim(x) - 1))))

  out = jax.tree.map(rows, batch)
  graph = jax.tree.map(lambda _: rep, batch.sessions.graph)
  return out._replace(sessions=out.sessions._replace(graph=graph))


def place_batch(batch, mesh: Mesh,
                rules: sharding.LogicalRules = LLMGR_LOGICAL_AXIS_RULES):
  """``jax.device_put`` of a host ``PromptBatch`` with :func:`batch_shardings`."""
  return jax.tree.map(_to_global, batch, batch_shardings(batch, mesh, rules))


def concat_prompt_batches(batches: Sequence[Any]):
  """Joins host ``PromptBatch``es (same shapes) into one, in order.

  Row leaves are concatenated; the session graphs are concatenated as jraph
  batches are, with each batch's node ids (edge senders/receivers and click
  positions) offset by the nodes before it. The SBR backbone reads only
  nodes, edges and positions, so every session's outputs are unchanged.
  """
  batches = list(batches)
  if len(batches) == 1:
    return batches[0]
  shapes = {jax.tree.structure(b) for b in batches}
  if len(shapes) != 1:
    raise ValueError("concat_prompt_batches: batches have different structures "
                     f"{shapes}.")
  offsets = np.cumsum([0] + [np.shape(b.sessions.graph.nodes)[0]
                             for b in batches[:-1]])
  shifted = []
  for b, off in zip(batches, offsets):
    g = b.sessions.graph
    g = g._replace(senders=np.asarray(g.senders) + off,
                   receivers=np.asarray(g.receivers) + off)
    s = b.sessions._replace(graph=g, positions=np.asarray(b.sessions.positions) + off)
    shifted.append(b._replace(sessions=s))
  return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]),
                      *shifted)


def global_prompt_batch(local_batch, mesh: Mesh,
                        rules: sharding.LogicalRules = LLMGR_LOGICAL_AXIS_RULES):
  """One global ``PromptBatch`` from every process's own batch.

  Each process builds the batch of its own examples (the same shapes
  everywhere); the small host arrays are exchanged
  (``multihost_utils.process_allgather``), joined in process order with
  :func:`concat_prompt_batches` and placed so that each process transfers
  only its devices' slices. With one process this is :func:`place_batch`.
  """
  if jax.process_count() == 1:
    return place_batch(local_batch, mesh, rules)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  host = jax.tree.map(np.asarray, local_batch)
  gathered = multihost_utils.process_allgather(host, tiled=False)  # [n, ...]
  per_process = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), gathered)
                 for i in range(jax.process_count())]
  return place_batch(concat_prompt_batches(per_process), mesh, rules)


# ----------------------------------------------------------------- step ---


def make_sharded_train_step(model, schedule, trainable_mask, seed: int,
                            mesh: Mesh, state_shardings,
                            rules: sharding.LogicalRules = LLMGR_LOGICAL_AXIS_RULES):
  """``train_llmgr.make_train_step`` jitted with shardings and a donated state.

  The step itself is the single-device one (one definition of the loss,
  gradients and metrics); this only fixes where its inputs and outputs live,
  so the sharded result equals the single-device result up to the order of
  floating-point reductions. Metrics come back replicated.

  Args:
    model: the LLMGR module.
    schedule: learning-rate schedule (for the logged rate).
    trainable_mask: tree of "trainable" / "frozen" (``labels.trainable_mask``).
    seed: dropout seed, as the single-device step.
    mesh: device mesh.
    state_shardings: the TrainState's NamedShardings (from
      :func:`create_train_state`).
    rules: logical axis rules (for the batch axes).

  Returns:
    ``train_step(state, batch) -> (state, metrics)``; ``batch`` may be a host
    ``PromptBatch`` or one already placed by :func:`place_batch`.
  """
  from sbrjax import train_llmgr  # pylint: disable=g-import-not-at-top
  # On a multi-device mesh the step's loss uses the shard_map item head.
  inner = train_llmgr.make_train_step(model, schedule, trainable_mask, seed, mesh=mesh)
  replicated = NamedSharding(mesh, P())
  compiled = {}

  def train_step(state, batch):
    key = jax.tree.structure(batch)
    if key not in compiled:
      compiled[key] = jax.jit(
          lambda s, b: inner(s, b),
          in_shardings=(state_shardings, batch_shardings(batch, mesh, rules)),
          out_shardings=(state_shardings, replicated), donate_argnums=0)
    if any(isinstance(x, np.ndarray) for x in jax.tree.leaves(batch)):
      batch = place_batch(batch, mesh, rules)
    return compiled[key](state, batch)

  return train_step
