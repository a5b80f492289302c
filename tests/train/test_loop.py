"""The shared training loop: early stopping, best-epoch restore, resume, signatures.

A one-parameter "model" makes every epoch's state known exactly: one step
per epoch adds 1 to ``w`` (SGD with learning rate 1 on a gradient of -1), and
the validation metric is read from a table indexed by ``w``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from sbrjax.train import checkpoints
from sbrjax.train import loop
from sbrjax.train import steps
from sbrjax.train import writer as writer_lib

# Validation metric after epoch e (w = e + 1): best at epoch 1, then worse.
VALID = {1.0: 0.10, 2.0: 0.50, 3.0: 0.30, 4.0: 0.20, 5.0: 0.90, 6.0: 0.95}


def _stage(tmp_path, *, epochs, patience, signature=None, crash_at=None):
  state = train_state.TrainState.create(
      apply_fn=None, params={"w": jnp.zeros((), jnp.float32)}, tx=optax.sgd(1.0))
  state = state.replace(step=jnp.zeros((), jnp.int32))
  step_fn = steps.jit_train_step(steps.make_train_step(
      lambda p, b, rng: (-p["w"], {}), optax.constant_schedule(1.0), jax.random.PRNGKey(0)))
  calls = []

  def train_step(state, batch):
    calls.append(1)
    if crash_at is not None and len(calls) == crash_at:
      raise KeyboardInterrupt("simulated kill")
    return step_fn(state, batch)

  spec = loop.StageSpec("toy", epochs=epochs, patience=patience,
                        early_stop_metric="valid/metric", progress_bar=False)
  return loop.run_stage(
      spec, stage_dir=str(tmp_path / "toy"), state=state,
      signature=signature or {"model": "toy"}, train_step=train_step,
      train_batches=lambda epoch: [jnp.zeros(())], steps_per_epoch=1, batch_size=1,
      evaluate=lambda p: {"valid/metric": VALID[float(p["w"])]},
      writer=writer_lib.MetricWriter(str(tmp_path / "tb")))


def test_patience_stops_training_and_restores_the_best_epoch(tmp_path):
  out = _stage(tmp_path, epochs=6, patience=2)
  meta = out["meta"]
  # Epochs 0..3 run: epoch 1 is the best, epochs 2 and 3 do not improve.
  assert [h["epoch"] for h in meta["history"]] == [0, 1, 2, 3]
  assert meta["best_epoch"] == 1 and meta["best_value"] == 0.50 and meta["done"]
  assert float(out["state"].params["w"]) == 4.0  # the last state trained on
  assert float(out["best_params"]["w"]) == 2.0   # the best epoch's parameters


def test_without_patience_every_epoch_runs(tmp_path):
  out = _stage(tmp_path, epochs=6, patience=0)
  assert len(out["meta"]["history"]) == 6
  assert out["meta"]["best_epoch"] == 5 and float(out["best_params"]["w"]) == 6.0


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
  ref = _stage(tmp_path / "ref", epochs=6, patience=2)
  with pytest.raises(KeyboardInterrupt):
    _stage(tmp_path / "run", epochs=6, patience=2, crash_at=3)  # during epoch 2
  out = _stage(tmp_path / "run", epochs=6, patience=2)
  assert out["meta"]["history"][-1]["epoch"] == ref["meta"]["history"][-1]["epoch"]
  assert out["meta"]["best_epoch"] == ref["meta"]["best_epoch"]
  np.testing.assert_array_equal(out["best_params"]["w"], ref["best_params"]["w"])
  np.testing.assert_array_equal(out["state"].params["w"], ref["state"].params["w"])


def test_a_changed_signature_refuses_to_resume(tmp_path):
  with pytest.raises(KeyboardInterrupt):
    _stage(tmp_path, epochs=6, patience=2, crash_at=2,
           signature={"model": "toy", "trainable": ["lora"]})
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"trainable: checkpoint has \['lora'\], this run has \['sbr'\]"):
    _stage(tmp_path, epochs=6, patience=2, signature={"model": "toy", "trainable": ["sbr"]})
