"""Orbax checkpoints of a training stage: the latest states and the best parameters.

Layout of a stage directory::

  <stage_dir>/latest/<step>/   full train state + JSON metadata (resume); the two newest kept
  <stage_dir>/best/<step>/     parameters of the best validation epoch + metadata

Orbax writes each step to a temporary directory and renames it when complete,
so an interrupted save leaves no step that restore would read; older steps
are deleted only after a new one is committed.

Restoring tells three situations apart:

* **incompatible** (``errors.CheckpointMismatch``): the metadata's *signature*
  (model family, item count, dimensions, data fingerprint, stage) differs from
  this run's, or the saved tree has other leaves / shapes than this run's
  state (another optimizer): use another ``--workdir``;
* **damaged** (``errors.CheckpointDamaged``): the files cannot be read (bytes
  flipped, truncated metadata, missing files): the newest readable step is used
  instead, with a warning naming the damaged one; when none is readable the
  error says which directory to delete;
* **absent**: nothing to resume; the stage starts from scratch.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging

from sbrjax import errors

# Kept for callers that catch the old name.
CheckpointMismatchError = errors.CheckpointMismatch
LATEST_TO_KEEP = 2


def check_signature(found: Mapping[str, Any], expected: Mapping[str, Any], where: str,
                    keys: Optional[Tuple[str, ...]] = None) -> None:
  """Raises CheckpointMismatch listing every field that differs."""
  keys = keys or tuple(expected)
  diffs = [f"{k}: checkpoint has {found.get(k)!r}, this run has {expected.get(k)!r}"
           for k in keys if found.get(k) != expected.get(k)]
  if diffs:
    raise errors.CheckpointMismatch(
        f"Checkpoint {where} does not fit this run ({'; '.join(diffs)}). Use a fresh "
        "--workdir, or a config matching the checkpoint.")


def _first_line(e: BaseException) -> str:
  text = f"{type(e).__name__}: {e}".strip()
  return text.splitlines()[0][:300]


def _names(keystr: str) -> str:
  return "/".join(re.findall(r"\w+", keystr))


def _leaf_shapes(tree: Any) -> Dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {_names(jax.tree_util.keystr(p)): tuple(getattr(x, "shape", ())) for p, x in flat}


def saved_tree_differs(item_dir: str, abstract_tree: Any) -> Optional[str]:
  """How the tree saved in ``item_dir`` differs from ``abstract_tree`` (None: same).

  Raises whatever Orbax raises when the saved tree metadata itself is unreadable.
  """
  with ocp.StandardCheckpointer() as ckptr:
    md = ckptr.metadata(item_dir)
  saved = _leaf_shapes(getattr(md, "item_metadata", md))
  if not saved:
    raise ValueError(f"{item_dir}: no readable tree metadata")
  wanted = _leaf_shapes(abstract_tree)
  missing = sorted(set(wanted) - set(saved))
  extra = sorted(set(saved) - set(wanted))
  shapes = sorted(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
  if not (missing or extra or shapes):
    return None
  return (f"leaves this run has but the checkpoint lacks: {missing[:4]}; leaves only the "
          f"checkpoint has: {extra[:4]}; different shapes: {shapes[:4]}")


class StageCheckpoints:
  """Latest and best checkpoints of one stage."""

  def __init__(self, stage_dir: str, *, save_best: bool = True):
    self.stage_dir = os.path.abspath(stage_dir)
    stage = os.path.basename(self.stage_dir)

    def options(kind):
      # Each manager gets its own barrier keys: in multi-process runs two
      # managers' "_async_write_complete.N" barriers would otherwise collide.
      return ocp.CheckpointManagerOptions(
          max_to_keep=LATEST_TO_KEEP if kind == "latest" else 1, create=True,
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
    """(state, meta) of the newest readable step, or None when there is none.

    A damaged step is skipped with a warning naming it; a step written for
    another run raises CheckpointMismatch (no fallback: the workdir is wrong).

    Raises:
      errors.CheckpointMismatch: signature or tree of another run.
      errors.CheckpointDamaged: steps exist but none can be read.
    """
    steps = sorted(self._latest.all_steps(), reverse=True)
    damaged: List[str] = []
    for step in steps:
      where = os.path.join(self.stage_dir, "latest", str(step))
      try:
        meta = self._latest.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict):
          raise ValueError(f"metadata is {type(meta).__name__}, not a JSON object")
      except Exception as e:  # pylint: disable=broad-except
        damaged.append(f"{where} (metadata unreadable: {_first_line(e)})")
        continue
      check_signature(meta.get("signature", {}), signature, where)
      try:
        restored = self._latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
      except Exception as e:  # pylint: disable=broad-except
        try:
          differs = saved_tree_differs(os.path.join(where, "state"), abstract_state)
        except Exception:  # pylint: disable=broad-except
          differs = None
        if differs:
          raise errors.CheckpointMismatch(
              f"The train state in {where} was written by an incompatible model or "
              f"optimizer ({differs}). Use a fresh --workdir, or the config that wrote "
              "it.") from e
        damaged.append(f"{where} (state unreadable: {_first_line(e)})")
        continue
      if damaged:
        logging.warning("Damaged checkpoint step(s) skipped: %s. Resuming from %s.",
                        "; ".join(damaged), where)
      return restored["state"], meta
    if damaged:
      raise errors.CheckpointDamaged(
          f"Every saved step of {os.path.join(self.stage_dir, 'latest')} is damaged: "
          f"{'; '.join(damaged)}. Delete {self.stage_dir} to retrain this stage from "
          "scratch (other stages are kept), or restore those files from a copy.")
    return None

  def restore_best_params(self, abstract_params: Any, signature: Mapping[str, Any]):
    return restore_params(os.path.join(self.stage_dir, "best"), abstract_params, signature)


def restore_params(best_dir: str, abstract_params: Any, signature: Mapping[str, Any],
                   keys: Optional[Tuple[str, ...]] = None):
  """(params, meta) from a ``best/`` directory, after checking the signature.

  Raises:
    errors.CheckpointError: no directory or no complete step.
    errors.CheckpointMismatch: another run's signature or tree.
    errors.CheckpointDamaged: unreadable files (named, with what to delete).
  """
  best_dir = os.path.abspath(best_dir)
  if not os.path.isdir(best_dir):
    raise errors.CheckpointError(f"No checkpoint directory {best_dir!r}.")
  mngr = ocp.CheckpointManager(best_dir)
  try:
    step = mngr.latest_step()
    if step is None:
      raise errors.CheckpointError(
          f"{best_dir!r} holds no complete checkpoint (an interrupted save leaves only "
          "a temporary directory). Re-run the training that writes it.")
    where = os.path.join(best_dir, str(step))
    fix = (f"Delete {os.path.dirname(best_dir)} to retrain that stage, or restore the "
           "files from a copy.")
    try:
      meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      if not isinstance(meta, dict):
        raise ValueError(f"metadata is {type(meta).__name__}, not a JSON object")
    except Exception as e:  # pylint: disable=broad-except
      raise errors.CheckpointDamaged(
          f"Checkpoint {where} is damaged: metadata unreadable ({_first_line(e)}). {fix}"
      ) from e
    check_signature(meta.get("signature", {}), signature, where, keys)
    try:
      params = mngr.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_params)))["params"]
    except Exception as e:  # pylint: disable=broad-except
      try:
        differs = saved_tree_differs(os.path.join(where, "params"), abstract_params)
      except Exception:  # pylint: disable=broad-except
        differs = None
      if differs:
        raise errors.CheckpointMismatch(
            f"The parameters in {where} belong to another model ({differs}).") from e
      raise errors.CheckpointDamaged(
          f"Checkpoint {where} is damaged: parameters unreadable ({_first_line(e)}). {fix}"
      ) from e
  finally:
    mngr.close()
  return params, meta


def abstract(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a concrete tree, for restoring."""
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
