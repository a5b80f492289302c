"""A trained graph SBR backbone, read back for the LLM stages (LLMGR, LLM4SBR).

  model, params, cfg, meta = export.load_backbone("workdirs/gcsan_ml100k")
  table = export.item_embeddings(model, params)                  # [I, D]
  reps = export.session_representations(model, params, data.test, max_len=50)
  reps["final"]                                                  # [N, D]

``load_backbone`` reads a finished ``sbr`` run directory (the ``--workdir`` of
``python -m sbrjax.main --config=configs/srgnn_ml100k.py``): its
``config.json`` (written by ``sbrjax.pipeline``) and the best checkpoint in
``sbr/best``. The catalog size comes from the checkpoint's signature, so no
dataset is loaded. Everything returned is numpy, computed in fixed-shape
batches with one jitted function per batch shape.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Sequence, Tuple, Union

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from sbrjax import errors
from sbrjax.data import graphs as graphs_lib
from sbrjax.data.types import Split
from sbrjax.models import sbr as sbr_lib
from sbrjax.sbr import train as train_sbr
from sbrjax.train import checkpoints as ckpt_lib


def _read_config(run_dir: str) -> ml_collections.ConfigDict:
  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    raise errors.CheckpointError(
        f"load_backbone: {path!r} does not exist; give the --workdir of a "
        "finished sbr run (python -m sbrjax.main --config=configs/srgnn_ml100k.py "
        "--workdir=DIR).")
  try:
    with open(path) as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise errors.CheckpointError(f"load_backbone: {path!r} is not valid JSON: {e}") from e
  for key in ("sbr", "data"):
    if not isinstance(raw.get(key), dict):
      raise errors.CheckpointError(f"load_backbone: {path!r} has no {key!r} section; it was not "
                       "written by an sbr (or llmgr) job.")
  if "max_len" not in raw["data"]:
    raise errors.CheckpointError(f"load_backbone: {path!r} lacks data.max_len.")
  return ml_collections.ConfigDict(raw)


def _best_meta(best_dir: str) -> Dict[str, Any]:
  if not os.path.isdir(best_dir):
    raise errors.CheckpointError(
        f"load_backbone: no checkpoint directory {best_dir!r}; the run has not "
        "finished an epoch (or is not an sbr run).")
  mngr = ocp.CheckpointManager(best_dir)
  step = mngr.latest_step()
  if step is None:
    mngr.close()
    raise errors.CheckpointError(f"load_backbone: {best_dir!r} holds no complete checkpoint; "
                            "re-run the training that writes it.")
  meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  mngr.close()
  meta = dict(meta)
  meta["step"] = int(step)
  return meta


def load_backbone(run_dir: str) -> Tuple[Any, Any, sbr_lib.SBRConfig, Dict[str, Any]]:
  """The backbone of a finished sbr run.

  Args:
    run_dir: the run's workdir (holding ``config.json`` and ``sbr/best``).

  Returns:
    ``(model, params, cfg, meta)``: the Flax module, its parameters
    (``{"sbr": backbone_params}``, the tree the trainers use), the frozen
    ``SBRConfig`` and a dict with ``run_dir``, ``max_len`` (the data's
    truncation length), ``best_epoch``, ``best_value``, ``step``,
    ``signature`` and ``config`` (the run's config as a dict).

  Raises:
    sbrjax.errors.CheckpointError: no ``config.json``, a malformed one, or no
      complete best checkpoint.
    sbrjax.train.checkpoints.CheckpointMismatchError: the checkpoint was written
      for another backbone or width than ``config.json`` says.
  """
  run_dir = os.path.abspath(run_dir)
  if not os.path.isdir(run_dir):
    raise errors.CheckpointError(f"load_backbone: run directory {run_dir!r} does not exist.")
  config = _read_config(run_dir)
  best_dir = os.path.join(run_dir, train_sbr.STAGE, "best")
  ckpt_meta = _best_meta(best_dir)
  found = ckpt_meta.get("signature", {})
  num_items = found.get("num_items")
  if not isinstance(num_items, int) or num_items < 1:
    raise errors.CheckpointError(f"load_backbone: the checkpoint in {best_dir!r} has no valid "
                     f"num_items in its signature ({found!r}).")
  cfg = train_sbr.sbr_config(config, num_items)
  model = sbr_lib.create_model(cfg)
  max_len = int(config.data.max_len)
  abstract = jax.eval_shape(
      lambda: train_sbr.init_params(model, graphs_lib.probe_batch(max_len), 0))
  expected = {"model": f"sbr/{cfg.backbone}", "num_items": num_items,
              "embed_dim": cfg.embed_dim}
  params, _ = ckpt_lib.restore_params(best_dir, abstract, expected,
                                      keys=tuple(expected))
  meta = {"run_dir": run_dir, "max_len": max_len,
          "best_epoch": ckpt_meta.get("epoch"), "best_value": ckpt_meta.get("best_value"),
          "step": ckpt_meta["step"], "signature": found, "config": config.to_dict()}
  return model, params, cfg, meta


def _backbone_params(params: Any) -> Any:
  """Accepts the trainer's ``{"sbr": ...}`` tree or the backbone's own."""
  if isinstance(params, dict) and "sbr" in params and "encoder" not in params:
    return params["sbr"]
  return params


def item_embeddings(model, params) -> np.ndarray:
  """float32 [num_items, D]: the table the backbone scores items with.

  The raw item embeddings for SR-GNN, GC-SAN and TAGNN; L2-normalised rows
  for NISER+ (what its logits use, before the scale).
  """
  out = model.apply({"params": _backbone_params(params)}, graphs_lib.probe_batch(1),
                    deterministic=True, method="session_representations")
  return np.asarray(out.item_embeddings, np.float32)


def _as_split(data: Union[Split, Sequence[Sequence[int]]]) -> Split:
  if isinstance(data, Split):
    return data
  seqs = [np.asarray(s, np.int64).reshape(-1) for s in data]
  offsets = np.zeros(len(seqs) + 1, np.int64)
  np.cumsum([len(s) for s in seqs], out=offsets[1:])
  values = (np.concatenate(seqs) if seqs else np.zeros(0, np.int64)).astype(np.int32)
  n = len(seqs)
  return Split(values, offsets, np.zeros(n, np.int32), np.zeros(n, np.int32))


def session_representations(model, params, split_or_sequences: Union[Split, Sequence],
                            max_len: int, batch_size: int = 512) -> Dict[str, np.ndarray]:
  """Session representations of every example, computed in batches.

  Args:
    model: a backbone from ``load_backbone`` / ``sbr.create_model``.
    params: its parameters (``{"sbr": ...}`` or the backbone's tree).
    split_or_sequences: a ``Split`` or a list of item-id sequences (oldest
      click first); each keeps its last ``max_len`` clicks.
    max_len: truncation length (use ``meta["max_len"]`` to match training).
    batch_size: sessions per batch; does not change the results.

  Returns:
    dict of numpy arrays over the N examples, in order:
    ``node_states`` float32 [N, max_len, D] (state of each click, oldest
    first, zero past ``lengths``; NISER+ includes its position embeddings),
    ``lengths`` int32 [N], and ``local``, ``global_``, ``final`` float32
    [N, D] (see ``sbrjax.models.sbr.SBROutput``).

  Raises:
    ValueError: an empty sequence, a negative or out-of-catalog item id, or
      a bad ``max_len`` / ``batch_size``.
  """
  if batch_size < 1:
    raise ValueError(f"session_representations: batch_size must be >= 1, got {batch_size}")
  split = _as_split(split_or_sequences)
  num_items = model.cfg.num_items
  if len(split.seq_values) and int(split.seq_values.max()) >= num_items:
    raise ValueError(f"session_representations: item id {int(split.seq_values.max())} "
                     f">= num_items={num_items} of the backbone.")
  graphs = graphs_lib.build_graphs(split, max_len)
  bparams = _backbone_params(params)

  @jax.jit
  def reps(p, batch):
    out = model.apply({"params": p}, batch, deterministic=True,
                      method="session_representations")
    return out.seq_states, out.local, out.global_, out.final

  n, d = len(graphs), model.cfg.embed_dim
  result = {"node_states": np.zeros((n, max_len, d), np.float32),
            "lengths": graphs.lengths.copy(),
            "local": np.zeros((n, d), np.float32),
            "global_": np.zeros((n, d), np.float32),
            "final": np.zeros((n, d), np.float32)}
  for batch in graphs_lib.iterate_batches(graphs, batch_size, shuffle=False):
    seq, local, global_, final = jax.device_get(reps(bparams, batch))
    rows = batch.graph_mask
    idx = batch.index[rows]
    mask = np.arange(max_len)[None, :] < batch.lengths[rows, None]
    result["node_states"][idx] = np.where(mask[..., None], seq[rows], 0.0)
    result["local"][idx] = local[rows]
    result["global_"][idx] = global_[rows]
    result["final"][idx] = final[rows]
  return result
