"""Stage checkpoints: damaged steps fall back or are named; incompatible ones are refused."""

import glob
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import logging as absl_logging
from flax.training import train_state

from sbrjax import errors
from sbrjax.train import checkpoints as ck

SIG = {"model": "toy"}


def _state(value, tx=None):
  return train_state.TrainState.create(
      apply_fn=None, params={"w": jnp.full((64,), float(value))}, tx=tx or optax.adam(1e-3))


def _write_steps(stage_dir, steps=(1, 2, 3)):
  c = ck.StageCheckpoints(str(stage_dir))
  for s in steps:
    c.save_latest(s, _state(s), {"signature": SIG, "epoch": s})
    c.save_best(s, _state(s).params, {"signature": SIG, "epoch": s})
    c.wait()
  c.close()


def _flip_bytes(step_dir):
  for f in glob.glob(os.path.join(step_dir, "state", "d", "*")) + glob.glob(
      os.path.join(step_dir, "params", "d", "*")):
    data = bytearray(open(f, "rb").read())
    for i in range(0, len(data), 3):
      data[i] ^= 0xFF
    open(f, "wb").write(bytes(data))


def _restore(stage_dir, tx=None):
  c = ck.StageCheckpoints(str(stage_dir))
  try:
    return c.restore_latest(ck.abstract(_state(0, tx)), SIG)
  finally:
    c.close()


def test_two_latest_steps_are_kept(tmp_path):
  _write_steps(tmp_path / "stage")
  assert sorted(os.listdir(tmp_path / "stage" / "latest")) == ["2", "3"]
  state, meta = _restore(tmp_path / "stage")
  assert meta["epoch"] == 3 and float(state.params["w"][0]) == 3.0


def test_damaged_latest_step_falls_back_to_the_previous_one(tmp_path, monkeypatch):
  _write_steps(tmp_path / "stage")
  _flip_bytes(tmp_path / "stage" / "latest" / "3")
  warnings = []
  monkeypatch.setattr(absl_logging, "warning", lambda msg, *a: warnings.append(msg % a))
  state, meta = _restore(tmp_path / "stage")
  assert meta["epoch"] == 2 and float(state.params["w"][0]) == 2.0
  ours = [w for w in warnings if w.startswith("Damaged checkpoint step")]
  assert len(ours) == 1 and os.path.join("latest", "3") in ours[0]
  assert "state unreadable" in ours[0] and "Resuming from" in ours[0]


def test_truncated_metadata_is_damage_not_a_traceback(tmp_path):
  _write_steps(tmp_path / "stage")
  open(tmp_path / "stage" / "latest" / "3" / "meta" / "metadata", "w").write('{"sig')
  state, meta = _restore(tmp_path / "stage")
  assert meta["epoch"] == 2


def test_every_step_damaged_names_what_to_delete(tmp_path):
  _write_steps(tmp_path / "stage")
  for step in ("2", "3"):
    _flip_bytes(tmp_path / "stage" / "latest" / step)
  with pytest.raises(errors.CheckpointDamaged) as e:
    _restore(tmp_path / "stage")
  msg = str(e.value)
  assert "latest/2" in msg and "latest/3" in msg
  assert f"Delete {tmp_path / 'stage'}" in msg
  assert "incompatible" not in msg


def test_another_optimizer_is_incompatible_not_damaged(tmp_path):
  _write_steps(tmp_path / "stage")
  with pytest.raises(errors.CheckpointMismatch, match="incompatible model or optimizer"):
    _restore(tmp_path / "stage", tx=optax.sgd(0.1, momentum=0.9))


def test_another_signature_is_refused_without_fallback(tmp_path):
  _write_steps(tmp_path / "stage")
  c = ck.StageCheckpoints(str(tmp_path / "stage"))
  with pytest.raises(errors.CheckpointMismatch, match="model: checkpoint has 'toy'"):
    c.restore_latest(ck.abstract(_state(0)), {"model": "other"})


def test_damaged_best_parameters_are_named(tmp_path):
  _write_steps(tmp_path / "stage")
  _flip_bytes(tmp_path / "stage" / "best" / "3")
  with pytest.raises(errors.CheckpointDamaged, match=r"best/3 is damaged: parameters"):
    ck.restore_params(str(tmp_path / "stage" / "best"), ck.abstract(_state(0).params), SIG)
  # Intact: the parameters of the newest best step.
  _write_steps(tmp_path / "ok")
  params, _ = ck.restore_params(str(tmp_path / "ok" / "best"),
                                ck.abstract(_state(0).params), SIG)
  np.testing.assert_array_equal(params["w"], np.full(64, 3.0))
