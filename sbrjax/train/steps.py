"""The one train step every method uses, and its jit wrapper.

``make_train_step`` builds the un-jitted step from a method's loss function;
``jit_train_step`` compiles it, either on one device (donated state) or on a
mesh with the state's and the batch's shardings. The SBR backbones, LLMGR and
LLM4SBR all train through these two functions, so a metric means the same
thing on every TensorBoard run:

* ``loss`` and the loss function's named parts;
* ``grad_norm``: global L2 norm of the gradients of the *trainable* leaves
  (those the optimizer updates; frozen leaves' gradients are computed by
  autodiff but never applied, so they are left out);
* ``param_norm``: global L2 norm of the trainable leaves before the update;
* ``learning_rate``: the schedule's value at this step.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

LossFn = Callable[[Any, Any, jax.Array], Any]  # (params, batch, rng) -> (loss, parts)


def _trainable_leaves(tree: Any, trainable_mask: Optional[Any]):
  leaves = jax.tree.leaves(tree)
  if trainable_mask is None:
    return leaves
  flags = jax.tree.leaves(trainable_mask)
  if len(flags) != len(leaves):
    raise ValueError(f"trainable_mask has {len(flags)} leaves, the parameters "
                     f"{len(leaves)}; build it from the same tree (labels.trainable_mask).")
  return [x for x, flag in zip(leaves, flags) if flag == "trainable"]


def make_train_step(loss_fn: LossFn, schedule: optax.Schedule, dropout_key: jax.Array, *,
                    trainable_mask: Optional[Any] = None):
  """``train_step(state, batch) -> (state, metrics)``, not jitted.

  Args:
    loss_fn: ``(params, batch, rng) -> (scalar loss, dict of scalar parts)``;
      ``rng`` is the step's dropout key.
    schedule: the learning-rate schedule (logged).
    dropout_key: folded with the global step, so a resumed run draws the same
      dropout masks as an uninterrupted one.
    trainable_mask: tree of "trainable" / "frozen" like the parameters
      (``sbrjax.train.labels.trainable_mask``); None: every leaf trains. It
      only selects the leaves the norms cover: the optimizer itself
      (``optax.multi_transform``) already leaves frozen leaves unchanged.
  """

  def train_step(state, batch):
    rng = jax.random.fold_in(dropout_key, state.step)
    (loss, parts), grads = jax.value_and_grad(
        lambda params: loss_fn(params, batch, rng), has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    return new_state, {
        "loss": loss, **parts,
        "grad_norm": optax.global_norm(_trainable_leaves(grads, trainable_mask)),
        "param_norm": optax.global_norm(_trainable_leaves(state.params, trainable_mask)),
        "learning_rate": schedule(state.step)}

  return train_step


def jit_train_step(train_step: Callable, *, mesh=None, state_shardings: Any = None,
                   batch_shardings: Optional[Callable[[Any], Any]] = None,
                   place_batch: Optional[Callable[[Any], Any]] = None):
  """Compiles ``train_step`` with a donated state.

  Without ``mesh``: ``jax.jit(train_step, donate_argnums=0)``. With a mesh:
  jitted with ``in_shardings=(state_shardings, batch_shardings(batch))`` and
  ``out_shardings=(state_shardings, replicated metrics)``, one executable per
  batch structure; host batches are placed with ``place_batch`` first. The
  step function is the same either way, so a sharded step equals the
  single-device step up to the order of floating-point reductions.
  """
  if mesh is None:
    return jax.jit(train_step, donate_argnums=0)
  if state_shardings is None or batch_shardings is None or place_batch is None:
    raise ValueError("jit_train_step on a mesh needs state_shardings, batch_shardings "
                     "and place_batch.")
  replicated = NamedSharding(mesh, P())
  compiled = {}

  def step(state, batch):
    key = jax.tree.structure(batch)
    if key not in compiled:
      compiled[key] = jax.jit(
          train_step, in_shardings=(state_shardings, batch_shardings(batch)),
          out_shardings=(state_shardings, replicated), donate_argnums=0)
    if any(isinstance(x, np.ndarray) for x in jax.tree.leaves(batch)):
      batch = place_batch(batch)
    return compiled[key](state, batch)

  return step
