"""Model-agnostic sharding rules: logical axis names -> mesh axes, parameter paths -> logical axes.

The picture (Flax lm1b / MaxText / EasyLM):

* A **mesh** names the device axes, e.g. ``{"data": 2, "fsdp": 2,
  "tensor": 1}`` (``sbrjax.parallel.mesh``).
* Every array dimension carries a **logical** name ("batch", "embed",
  "mlp", "items", ...). A config-held table of **logical axis rules**
  (:data:`DEFAULT_LOGICAL_AXIS_RULES`) maps logical names to mesh axes, so
  the same model runs on one CPU or a multi-host mesh by changing the table.
* Parameters get their logical names from a table of **parameter rules**:
  ``(regex, logical axes)`` pairs matched with ``re.search`` against the
  parameter's path (:func:`param_path`, e.g. ``"params/Dense_0/kernel"``).
  Imported checkpoints carry no Flax annotations, so the path table is the
  one source of truth; a parameter that matches no rule is an error
  (EasyLM), and a big parameter left replicated on a model-parallel mesh is an
  error too (MaxText's ``assert_params_sufficiently_sharded``).
* ``sbrjax.parallel.state.create_sharded_state`` traces the init function with
  :func:`jax.eval_shape`, derives the shardings from the abstract tree and
  runs the init under ``jax.jit(..., out_shardings=...)`` so the state is
  born sharded and never materialises on one device (lm1b's
  ``setup_initial_state``).
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Optional, Sequence, Tuple, Union

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# (the dimension is split over their product, major to minor) or None.
MeshAxes = Union[None, str, Tuple[str, ...]]
LogicalRules = Sequence[Tuple[str, MeshAxes]]
# (regex over param_path, logical axis names; one per dimension, None = never
# sharded).
ParamRules = Sequence[Tuple[str, Optional[Tuple[Optional[str], ...]]]]
# Logical axes of a parameter rule that replicates its matches at any rank.
REPLICATED = None

# Canonical mesh axis order: data parallel (outermost, slowest links), fully
DEFAULT_LOGICAL_AXIS_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("items", ("data", "fsdp", "tensor")),
    ("lora_rank", None),
    ("norm", None),
)

# Parameters with more elements than this must be sharded over more than one
# device whenever the mesh has model-parallel axes (see check_params_sharded).
DEFAULT_MIN_SHARDED_SIZE = 2**20

def param_path(path) -> str:
  """``"params/Dense_0/kernel"``: the slash-joined key path the rules match."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _as_tuple(axes: MeshAxes) -> Tuple[str, ...]:
  if axes is None:
    return ()
  if isinstance(axes, str):
    return (axes,)
  return tuple(axes)


def _axes_size(mesh_shape: Mapping[str, int], axes: Sequence[str]) -> int:
  return math.prod(mesh_shape[a] for a in axes)


def _mesh_shape(mesh: Union[Mesh, Mapping[str, int]]) -> Mapping[str, int]:
  return dict(mesh.shape) if isinstance(mesh, Mesh) else dict(mesh)


def logical_to_mesh_spec(logical: Sequence[Optional[str]],
                         rules: LogicalRules,
                         mesh: Union[Mesh, Mapping[str, int]],
                         shape: Optional[Sequence[int]] = None) -> P:
  """Maps logical axis names of one array to a mesh ``PartitionSpec``.

  For each dimension the first rule for its logical name whose mesh axes are
  present in the mesh and not already used by an earlier dimension wins (a
  name may be listed several times as fallbacks, as in Flax). Mesh axes
  absent from the mesh are dropped. When ``shape`` is given, trailing mesh
  axes are dropped until the dimension divides evenly (so e.g. a 1003-row
  table stays replicated instead of failing); :func:`check_params_sharded`
  catches the big arrays this leaves replicated.

  Args:
    logical: one logical name (or None) per dimension.
    rules: logical axis rules.
    mesh: a Mesh or a ``{"axis": size}`` mapping.
    shape: the array shape, for the divisibility fallback.

  Returns:
    A PartitionSpec over mesh axis names.

  Raises:
    ValueError: a logical name has no rule at all (typo guard).
  """
  mshape = _mesh_shape(mesh)
  known = {name for name, _ in rules}
  used = set()
  spec = []
  for dim, name in enumerate(logical):
    if name is None:
      spec.append(None)
      continue
    if name not in known:
      raise ValueError(
          f"logical axis {name!r} has no entry in the logical axis rules "
          f"({sorted(known)}); add e.g. ({name!r}, None) to the rules.")
    chosen: Tuple[str, ...] = ()
    for rule_name, axes in rules:
      if rule_name != name:
        continue
      axes = tuple(a for a in _as_tuple(axes) if a in mshape)
      if used.intersection(axes):
        continue
      if shape is not None:
        while axes and shape[dim] % _axes_size(mshape, axes):
          axes = axes[:-1]
      chosen = axes
      break
    used.update(chosen)
    if not chosen:
      spec.append(None)
    elif len(chosen) == 1:
      spec.append(chosen[0])
    else:
      spec.append(chosen)
  return P(*spec)


def logical_axes_from_rules(tree, param_rules: ParamRules):
  """Gives every array leaf its logical axes from ``(regex, axes)`` rules.

  Rules are tried in order with ``re.search`` against :func:`param_path`;
  the first match wins. A rule whose axes are ``None`` (:data:`REPLICATED`)
  replicates every parameter it matches, whatever its rank. Rank-0 leaves (step counters, Adam's count) need no
  rule and get ``P()``.

  Args:
    tree: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. from
      ``jax.eval_shape``).
    param_rules: ``(regex, logical axes tuple)`` pairs.

  Returns:
    A tree of ``PartitionSpec``s over logical names, same structure as
    ``tree``.

  Raises:
    ValueError: naming every parameter that no rule matches, or the first
      whose matched rule has a different number of axes than its rank.
  """
  compiled = [(re.compile(rx), None if axes is None else tuple(axes))
              for rx, axes in param_rules]
  unmatched = []

  def one(path, leaf):
    name = param_path(path)
    ndim = len(leaf.shape)
    if ndim == 0:
      return P()
    for rx, axes in compiled:
      if rx.search(name):
        if axes is None:  # REPLICATED: whatever the rank.
          return P()
        if len(axes) != ndim:
          raise ValueError(
              f"parameter {name!r} with shape {tuple(leaf.shape)} matched "
              f"rule {rx.pattern!r} whose logical axes {axes} have "
              f"{len(axes)} entries, not {ndim}; fix the rule table.")
        return P(*axes)
    unmatched.append(f"{name!r} with shape {tuple(leaf.shape)}")
    return P()

  out = jax.tree_util.tree_map_with_path(one, tree)
  if unmatched:
    raise ValueError(
        "parameter(s) " + ", ".join(unmatched) + " match no sharding rule; "
        "add a (regex, logical_axes) entry for each to the parameter rule "
        "table.")
  return out


def logical_to_sharding(logical_tree, mesh: Mesh, rules: LogicalRules,
                        shapes=None):
  """Turns a tree of logical ``PartitionSpec``s into ``NamedSharding``s.

  Args:
    logical_tree: tree of PartitionSpecs over logical names (leaves).
    mesh: the device mesh.
    rules: logical axis rules.
    shapes: optional tree (same structure) of arrays/ShapeDtypeStructs, for
      the divisibility fallback of :func:`logical_to_mesh_spec`.

  Returns:
    A tree of ``NamedSharding``.
  """
  is_leaf = lambda x: isinstance(x, P)
  if shapes is None:
    return jax.tree.map(
        lambda s: NamedSharding(mesh, logical_to_mesh_spec(s, rules, mesh)),
        logical_tree, is_leaf=is_leaf)
  return jax.tree.map(
      lambda s, x: NamedSharding(
          mesh, logical_to_mesh_spec(s, rules, mesh, x.shape)),
      logical_tree, shapes, is_leaf=is_leaf)


def num_shards(spec: P, mesh_shape: Mapping[str, int]) -> int:
  """How many distinct pieces ``spec`` cuts an array into on the mesh."""
  return math.prod(_axes_size(mesh_shape, _as_tuple(a)) for a in spec)


def check_params_sharded(shapes, shardings,
                         min_size: int = DEFAULT_MIN_SHARDED_SIZE,
                         param_axes: Sequence[str] = ("fsdp", "tensor")):
  """Raises if a big parameter is replicated on a model-parallel mesh.

  Pure data parallelism replicates parameters by design, so the check only
  applies when the mesh axes in ``param_axes`` hold more than one device.

  Args:
    shapes: tree of arrays / ShapeDtypeStructs.
    shardings: matching tree of NamedShardings.
    min_size: parameters with more elements than this must be split.
    param_axes: mesh axes meant to split parameters.

  Raises:
    ValueError: naming every offending parameter.
  """
  flat_shapes = jax.tree_util.tree_flatten_with_path(shapes)[0]
  flat_shard = jax.tree.leaves(
      shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  if len(flat_shapes) != len(flat_shard):
    raise ValueError("shapes and shardings trees have different leaf counts "
                     f"({len(flat_shapes)} vs {len(flat_shard)}).")
  bad = []
  for (path, leaf), sharding in zip(flat_shapes, flat_shard):
    mshape = dict(sharding.mesh.shape)
    capacity = _axes_size(mshape, [a for a in param_axes if a in mshape])
    if capacity == 1 or math.prod(leaf.shape) <= min_size:
      continue
    if num_shards(sharding.spec, mshape) == 1:
      bad.append(f"{param_path(path)} {tuple(leaf.shape)}")
  if bad:
    raise ValueError(
        f"parameters larger than {min_size} elements are replicated on every "
        f"device although the mesh has model-parallel axes {tuple(param_axes)}"
        ": " + ", ".join(bad) + ". Map one of their logical axes to a mesh "
        "axis that divides the dimension, or raise min_size.")


def tree_shardings(abstract_tree, mesh: Mesh, rules: LogicalRules,
                   param_rules: ParamRules,
                   min_sharded_size: Optional[int] = DEFAULT_MIN_SHARDED_SIZE):
  """Shardings for a whole (abstract) tree: path rules -> logical -> mesh.

  Args:
    abstract_tree: tree of ShapeDtypeStructs or arrays.
    mesh: device mesh.
    rules: logical axis rules.
    param_rules: ``(regex, logical axes)`` table.
    min_sharded_size: size threshold for :func:`check_params_sharded`; None
      skips the check.

  Returns:
    A tree of NamedShardings matching ``abstract_tree``.
  """
  logical = logical_axes_from_rules(abstract_tree, param_rules)
  shardings = logical_to_sharding(logical, mesh, rules, shapes=abstract_tree)
  if min_sharded_size is not None:
    check_params_sharded(abstract_tree, shardings, min_sharded_size)
  return shardings

def with_logical_constraint(x: jax.Array, names: Sequence[Optional[str]],
                            mesh: Optional[Mesh], rules: LogicalRules):
  """``with_sharding_constraint`` by logical names; identity without a mesh.

  Args:
    x: activation.
    names: one logical name (or None) per dimension of ``x``.
    mesh: device mesh, or None (single device: nothing to do).
    rules: logical axis rules.

  Returns:
    ``x`` constrained to the mapped sharding.
  """
  if mesh is None or mesh.size == 1:
    return x
  if len(names) != x.ndim:
    raise ValueError(f"with_logical_constraint: {len(names)} logical names "
                     f"{tuple(names)} for an array of shape {x.shape}.")
  spec = logical_to_mesh_spec(names, rules, mesh, x.shape)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def logical_rules(config_rules: Optional[Sequence] = None,
                  default: LogicalRules = DEFAULT_LOGICAL_AXIS_RULES) -> LogicalRules:
  """``config.logical_axis_rules`` as a tuple; empty -> ``default``."""
  if not config_rules:
    return tuple(default)
  out = []
  for entry in config_rules:
    if len(entry) != 2:
      raise ValueError(f"config.logical_axis_rules entry {entry!r} must be a "
                       "(logical_name, mesh_axes) pair.")
    name, axes = entry
    out.append((str(name), axes if axes is None or isinstance(axes, str)
                else tuple(axes)))
  return tuple(out)


def batch_axes(mesh: Mesh, rules: LogicalRules = DEFAULT_LOGICAL_AXIS_RULES):
  """Mesh axes the batch dimension is split over (the "batch" rule)."""
  axes = logical_to_mesh_spec(("batch",), rules, mesh)[0]
  if axes is None:
    return ()
  return (axes,) if isinstance(axes, str) else tuple(axes)
