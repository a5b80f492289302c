"""Device meshes from config: ``{"data": -1, "fsdp": 1, "tensor": 1}`` -> ``Mesh``."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import jax
from jax.sharding import Mesh

# Canonical mesh axis order: data parallel (outermost, slowest links), fully
# sharded data parallel, tensor parallel (innermost, fastest links).
MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(mesh_shape: Mapping[str, int],
              devices: Optional[Sequence[Any]] = None) -> Mesh:
  """Builds a device mesh from ``{"axis_name": size}``.

  The axis types are ``Auto`` (GSPMD propagation): shardings come from
  ``out_shardings`` / ``with_sharding_constraint`` rather than from the array
  types, which is what the logical-rule machinery here assumes.

  Args:
    mesh_shape: ordered mapping of mesh axis name to size, e.g.
      ``{"data": 2, "fsdp": 2, "tensor": 1}``. One size may be -1 to take the
      remaining devices.
    devices: devices to use; defaults to ``jax.devices()`` (all processes).

  Returns:
    A ``jax.sharding.Mesh``.

  Raises:
    ValueError: if the product of the sizes differs from the device count.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(mesh_shape.keys())
  sizes = [int(s) for s in mesh_shape.values()]
  if not names:
    raise ValueError("mesh_shape is empty; give at least one axis, e.g. "
                     "{'data': -1}.")
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh_shape {dict(mesh_shape)} has more than one -1 "
                     "entry; at most one axis may take the remaining devices.")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh_shape {dict(mesh_shape)} has a size < 1.")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if len(devices) % known:
      raise ValueError(
          f"mesh_shape {dict(mesh_shape)}: {len(devices)} devices are not "
          f"divisible by the fixed axes' product {known}.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f"mesh_shape {dict(zip(names, sizes))} has {math.prod(sizes)} devices "
        f"but {len(devices)} are available ({jax.process_count()} process(es) "
        f"x {jax.local_device_count()} local); change the mesh sizes so their "
        "product equals the device count (or use -1 for one axis).")
  return jax.make_mesh(
      tuple(sizes), names,
      axis_types=(jax.sharding.AxisType.Auto,) * len(names),
      devices=devices)


def mesh_from_config(mesh_shape: Mapping[str, int],
                     devices: Optional[Sequence[Any]] = None) -> Mesh:
  """``config.mesh`` (axis -> size, one may be -1) as a device mesh."""
  shape = {str(k): int(v) for k, v in dict(mesh_shape).items()}
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"config.mesh names unknown axes {sorted(unknown)}; use "
                     f"{MESH_AXES}.")
  return make_mesh(shape, devices)
