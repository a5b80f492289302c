"""The one training loop every stage runs: epochs, logging, early stopping, resume.

A stage is data (``StageSpec``) plus three callables supplied by the method
(SBR backbone, LLMGR, LLM4SBR): a jitted ``train_step(state, batch) ->
(state, metrics)`` (``sbrjax.train.steps``), a ``train_batches(epoch)`` iterator factory, and an
optional ``evaluate(params) -> metrics`` used for early stopping. The loop
owns checkpoints (``sbrjax.train.checkpoints.StageCheckpoints``), TensorBoard and
the progress bar, so every method resumes the same way.

Determinism: batches depend only on (seed, epoch) and dropout keys only on
the global step, so a run killed after epoch k and resumed from its latest
checkpoint reaches the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import jax
import numpy as np
from absl import logging

from sbrjax.train import checkpoints as ckpt_lib
from sbrjax.train import writer as writer_lib


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """How long a stage trains and how it decides it is done."""
  name: str
  epochs: int
  patience: int = 0                 # 0 disables early stopping
  early_stop_metric: str = ""       # key of evaluate()'s dict; "" -> no validation
  log_every_steps: int = 50
  checkpoint_every_epochs: int = 1
  progress_bar: bool = True

  @classmethod
  def from_config(cls, name: str, train, **overrides) -> "StageSpec":
    """The spec ``config.train`` describes (``overrides`` win, e.g. epochs)."""
    fields = dict(name=name, epochs=int(train.epochs), patience=int(train.patience),
                  early_stop_metric=str(train.early_stop_metric),
                  log_every_steps=int(train.log_every_steps),
                  checkpoint_every_epochs=int(train.checkpoint_every_epochs),
                  progress_bar=bool(train.progress_bar))
    fields.update(overrides)
    return cls(**fields)


def _progress(total: int, desc: str, enabled: bool):
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=desc, unit="step", leave=False, mininterval=1.0)


def run_stage(spec: StageSpec, *, stage_dir: str, state: Any, signature: Mapping[str, Any],
              train_step: Callable[[Any, Any], Any],
              train_batches: Callable[[int], Iterable[Any]],
              steps_per_epoch: int,
              batch_size: int,
              evaluate: Optional[Callable[[Any], Dict[str, float]]],
              writer: writer_lib.MetricWriter) -> Dict[str, Any]:
  """Trains one stage to completion (or resumes it) and returns its summary.

  Returns:
    dict with ``state`` (final train state), ``best_params`` (parameters of
    the best validation epoch, or of the last epoch without validation) and
    ``meta`` (epochs run, best metric, history).
  """
  ckpts = ckpt_lib.StageCheckpoints(stage_dir)
  signature = dict(signature)
  meta = {"signature": signature, "epoch": -1, "best_value": None, "best_epoch": -1,
          "bad_epochs": 0, "done": False, "history": [], "train_seconds": 0.0}
  restored = ckpts.restore_latest(ckpt_lib.abstract(state), signature)
  if restored is not None:
    state, meta = restored
    logging.info("Stage %s: resumed after epoch %d from %s", spec.name, meta["epoch"],
                 stage_dir)
  use_valid = evaluate is not None and bool(spec.early_stop_metric)

  epoch = meta["epoch"] + 1
  while not meta["done"] and epoch < spec.epochs:
    t0 = time.perf_counter()
    bar = _progress(steps_per_epoch, f"{spec.name} epoch {epoch + 1}/{spec.epochs}",
                    spec.progress_bar)
    pending = []
    examples = 0
    for batch in train_batches(epoch):
      state, metrics = train_step(state, batch)
      pending.append(metrics)
      examples += batch_size
      if len(pending) >= spec.log_every_steps:
        _log_train(writer, int(state.step), pending)
        pending = []
      if bar is not None:
        bar.update(1)
    jax.block_until_ready(state)
    if pending:
      _log_train(writer, int(state.step), pending)
    if bar is not None:
      bar.close()
    seconds = time.perf_counter() - t0
    meta["train_seconds"] += seconds
    record = {"epoch": epoch, "seconds": seconds, "examples_per_s": examples / seconds}
    writer.write_scalars(int(state.step), {"train/epoch_seconds": seconds,
                                           "train/examples_per_s": examples / seconds})

    improved = True
    if use_valid:
      valid = evaluate(state.params)
      if spec.early_stop_metric not in valid:
        raise KeyError(f"early_stop_metric {spec.early_stop_metric!r} is not among the "
                       f"validation metrics {sorted(valid)}.")
      writer.write_scalars(int(state.step), {f"eval/valid/{k}": v for k, v in valid.items()})
      value = float(valid[spec.early_stop_metric])
      record["valid"] = valid
      improved = meta["best_value"] is None or value > meta["best_value"]
      if improved:
        meta["best_value"], meta["best_epoch"], meta["bad_epochs"] = value, epoch, 0
      else:
        meta["bad_epochs"] += 1
      logging.info("Stage %s epoch %d: %.1fs, valid %s=%.5f (best %.5f @ %d)", spec.name,
                   epoch, seconds, spec.early_stop_metric, value, meta["best_value"],
                   meta["best_epoch"])
    else:
      meta["best_epoch"] = epoch
      logging.info("Stage %s epoch %d: %.1fs", spec.name, epoch, seconds)
    meta["history"].append(record)
    meta["epoch"] = epoch
    if use_valid and spec.patience and meta["bad_epochs"] >= spec.patience:
      meta["done"] = True
    if epoch == spec.epochs - 1:
      meta["done"] = True
    # Best first: a crash between the two saves then resumes from the previous
    # latest and redoes this epoch, which rewrites the same best.
    if improved:
      ckpts.save_best(int(state.step), state.params, {"signature": signature, "epoch": epoch,
                                                      "best_value": meta["best_value"]})
    if meta["done"] or (epoch + 1) % max(spec.checkpoint_every_epochs, 1) == 0:
      ckpts.save_latest(int(state.step), state, meta)
    ckpts.wait()
    writer.flush()
    epoch += 1

  if ckpts.latest_step() is None:  # zero epochs: still leave a restorable stage
    meta["done"] = True
    ckpts.save_best(int(state.step), state.params, {"signature": signature, "epoch": -1,
                                                    "best_value": None})
    ckpts.save_latest(int(state.step), state, meta)
    ckpts.wait()
  best_params, _ = ckpts.restore_best_params(ckpt_lib.abstract(state.params), signature)
  ckpts.close()
  return {"state": state, "best_params": best_params, "meta": meta}


def _log_train(writer: writer_lib.MetricWriter, step: int, pending) -> None:
  host = jax.device_get(pending)
  mean = {f"train/{k}": float(np.mean([m[k] for m in host])) for k in host[0]}
  if not all(math.isfinite(v) for v in mean.values()):
    raise FloatingPointError(f"Non-finite training metrics at step {step}: {mean}. "
                             "Lower config.train.learning_rate or enable grad clipping.")
  writer.write_scalars(step, mean)


def stage_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)
