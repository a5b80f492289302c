"""Orbax checkpoints of a training stage: the latest state and the best parameters.

Layout of a stage directory::

  <stage_dir>/latest/<step>/   full train state + JSON metadata (resume)
  <stage_dir>/best/<step>/     parameters of the best validation epoch + metadata

Orbax writes each step to a temporary directory and renames it when complete,
so an interrupted save leaves no step that restore would read; the previous
good step is kept until the new one is committed (``max_to_keep=1`` deletes
it only afterwards).

The metadata carries a *signature* (model family, item count, dimensions,
data fingerprint); restoring into a run with another signature is refused
with a message naming the mismatching fields.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """A checkpoint was written for another model, catalog or dataset."""


def check_signature(found: Mapping[str, Any], expected: Mapping[str, Any], where: str,
                    keys: Optional[Tuple[str, ...]] = None) -> None:
  """Raises CheckpointMismatchError listing every field that differs."""
  keys = keys or tuple(expected)
  diffs = [f"{k}: checkpoint has {found.get(k)!r}, this run has {expected.get(k)!r}"
           for k in keys if found.get(k) != expected.get(k)]
  if diffs:
    raise CheckpointMismatchError(
        f"Checkpoint {where} does not fit this run ({'; '.join(diffs)}). Use a fresh "
        "--workdir, or a config matching the checkpoint.")


class StageCheckpoints:
  """Latest and best checkpoints of one stage."""

  def __init__(self, stage_dir: str, *, save_best: bool = True):
    self.stage_dir = os.path.abspath(stage_dir)
    stage = os.path.basename(self.stage_dir)

    def options(kind):
      # Each manager gets its own barrier keys: in multi-process runs two
      # managers' "_async_write_complete.N" barriers would otherwise collide.
      return ocp.CheckpointManagerOptions(
          max_to_keep=1, create=True,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=f"sbrjax_{stage}_{kind}"))

    self._latest = ocp.CheckpointManager(os.path.join(self.stage_dir, "latest"),
                                         options=options("latest"))
    self._best = (ocp.CheckpointManager(os.path.join(self.stage_dir, "best"),
                                        options=options("best"))
                  if save_best else None)

  # ---- saving
  def save_latest(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
    self._latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def save_best(self, step: int, params: Any, meta: Dict[str, Any]) -> None:
    self._best.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)), force=True)
    # Finish before the latest-state save starts: never two saves in flight.
    self._best.wait_until_finished()

  def wait(self) -> None:
    self._latest.wait_until_finished()
    if self._best is not None:
      self._best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self._latest.close()
    if self._best is not None:
      self._best.close()

  # ---- restoring
  def latest_step(self) -> Optional[int]:
    return self._latest.latest_step()

  def restore_latest(self, abstract_state: Any, signature: Mapping[str, Any]):
    """(state, meta) of the latest step, or None when there is none."""
    step = self._latest.latest_step()
    if step is None:
      return None
    where = os.path.join(self.stage_dir, "latest", str(step))
    meta = self._latest.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]
    check_signature(meta.get("signature", {}), signature, where)
    try:
      restored = self._latest.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))
    except Exception as e:  # Orbax raises assorted errors on tree mismatch.
      raise CheckpointMismatchError(
          f"Could not restore the train state from {where}: {e}. The checkpoint was "
          "written by an incompatible model or optimizer; use a fresh --workdir.") from e
    return restored["state"], meta

  def restore_best_params(self, abstract_params: Any, signature: Mapping[str, Any]):
    return restore_params(os.path.join(self.stage_dir, "best"), abstract_params, signature)


def restore_params(best_dir: str, abstract_params: Any, signature: Mapping[str, Any],
                   keys: Optional[Tuple[str, ...]] = None):
  """(params, meta) from a ``best/`` directory, after checking the signature."""
  best_dir = os.path.abspath(best_dir)
  if not os.path.isdir(best_dir):
    raise FileNotFoundError(f"No checkpoint directory {best_dir!r}.")
  mngr = ocp.CheckpointManager(best_dir)
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(
        f"{best_dir!r} holds no complete checkpoint (an interrupted save leaves only "
        "a temporary directory). Re-run the training that writes it.")
  where = os.path.join(best_dir, str(step))
  meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  check_signature(meta.get("signature", {}), signature, where, keys)
  try:
    params = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))["params"]
  except Exception as e:
    raise CheckpointMismatchError(
        f"Could not restore parameters from {where}: {e}") from e
  mngr.close()
  return params, meta


def abstract(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a concrete tree, for restoring."""
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
