"""Train states and batches placed on a device mesh by sharding rules.

* :func:`tree_shardings_of`: ``NamedSharding``s for a params tree or a
  ``TrainState`` from shapes only (``sbrjax.parallel.rules``).
* :func:`place`: puts a host (or single-device) tree on the mesh with given
  shardings; in a multi-process run every process holds the same full value
  and hands each of its devices only that device's slice.
* :func:`create_train_state`: a ``TrainState`` whose parameters are placed
  leaf by leaf and whose optimiser state is born sharded (``tx.init`` runs
  under ``jax.jit`` with the state's ``out_shardings``, lm1b's
  ``setup_initial_state``), so Adam's moments never exist unsharded.
* :func:`row_shardings`: a batch split along its leading (row) dimension
  over the "batch" mesh axes.

Nothing here knows a model: the parameter rule table comes from the method
(``sbrjax.llmgr.rules`` for LLMGR).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import numpy as np
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sbrjax.parallel import rules as rules_lib


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


def place(tree: Any, shardings: Any) -> Any:
  """``tree`` with every leaf placed by the matching ``NamedSharding``."""
  return jax.tree.map(_to_global, tree, shardings)


def tree_shardings_of(state_or_params, mesh: Mesh, rules: rules_lib.LogicalRules,
                      param_rules: rules_lib.ParamRules,
                      min_sharded_size: Optional[int] = rules_lib.DEFAULT_MIN_SHARDED_SIZE):
  """NamedShardings for a params tree or TrainState, from shapes only."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          state_or_params)
  return rules_lib.tree_shardings(abstract, mesh, rules, param_rules, min_sharded_size)


def create_train_state(apply_fn: Callable, params: Any, tx, mesh: Mesh,
                       rules: rules_lib.LogicalRules, param_rules: rules_lib.ParamRules,
                       min_sharded_size: Optional[int] = rules_lib.DEFAULT_MIN_SHARDED_SIZE):
  """A ``TrainState`` on ``mesh`` whose optimiser state is born sharded.

  Returns:
    ``(state, shardings)``; reuse ``shardings`` as the train step's in/out
    shardings.
  """
  params = place(params, tree_shardings_of(params, mesh, rules, param_rules,
                                           min_sharded_size))
  create = lambda p: train_state.TrainState.create(apply_fn=apply_fn, params=p, tx=tx)
  abstract = jax.eval_shape(create, params)
  shardings = rules_lib.tree_shardings(abstract, mesh, rules, param_rules,
                                       min_sharded_size)
  state = jax.jit(create, in_shardings=(shardings.params,),
                  out_shardings=shardings)(params)
  return state, shardings


def row_shardings(batch: Any, mesh: Mesh, rules: rules_lib.LogicalRules, num_rows: int,
                  replicated: Callable[[Any, Any], Any] = lambda shardings, batch: shardings):
  """NamedShardings splitting every leaf's leading dimension over the batch axes.

  Args:
    batch: a pytree of arrays whose leaves lead with the batch dimension.
    mesh: device mesh.
    rules: logical axis rules (their "batch" entry).
    num_rows: the batch size (leading dimension of the per-row leaves).
    replicated: ``(shardings, batch) -> shardings`` that replaces the
      shardings of leaves which are not per-row (e.g. a batch-global graph)
      with replicated ones.

  Raises:
    ValueError: if the batch size does not divide over the batch axes.
  """
  axes = rules_lib.batch_axes(mesh, rules)
  n = math.prod(mesh.shape[a] for a in axes)
  b = int(num_rows)
  if b % n:
    raise ValueError(f"batch size {b} is not divisible by the {n} devices of the "
                     f"batch mesh axes {axes} (mesh {dict(mesh.shape)}); choose "
                     f"config.train.batch_size / eval.batch_size as a multiple of {n}.")

  def rows(x):
    return NamedSharding(mesh, P(axes if axes else None, *([None] * (np.ndim(x) - 1))))

  return replicated(jax.tree.map(rows, batch), batch)


def replicated_like(tree: Any, mesh: Mesh) -> Any:
  """A fully replicated ``NamedSharding`` for every leaf of ``tree``."""
  rep = NamedSharding(mesh, P())
  return jax.tree.map(lambda _: rep, tree)
