"""The SBR trainer end to end: results, TensorBoard, resume, checkpoint errors."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from sbrjax import errors
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import prepared
from sbrjax.models import sbr as sbr_lib
from sbrjax.sbr import train as train_sbr
from sbrjax.train import checkpoints


def _params(workdir):
  """Best parameters of a finished run, as numpy."""
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(os.path.join(workdir, "sbr", "best"))
  step = mngr.latest_step()
  tree = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
  return jax.tree_util.tree_map(np.asarray, tree["params"])


def test_end_to_end_writes_results_tensorboard_and_checkpoints(tiny_config, tmp_path):
  wd = str(tmp_path / "run")
  summary = train_sbr.train_and_evaluate(tiny_config, wd)
  results = json.load(open(os.path.join(wd, "results.json")))
  assert results["epochs_run"] == 3
  assert summary["test"] == results["test"]
  # The reported test metrics are those of the best checkpoint.
  data = prepared.load_prepared(tiny_config.data)
  model = sbr_lib.create_model(train_sbr.sbr_config(tiny_config, data.num_items))
  evaluate = train_sbr.make_evaluator(model, (5, 10, 20))
  test = evaluate(_params(wd), graphs_lib.build_graphs(data.test, tiny_config.data.max_len), 7)
  assert test == pytest.approx(results["test"], abs=1e-12)
  assert test["count"] == len(data.test)
  assert glob.glob(os.path.join(wd, "tensorboard", "sbr", "events.out.tfevents.*"))
  assert os.listdir(os.path.join(wd, "sbr", "latest"))
  assert os.listdir(os.path.join(wd, "sbr", "best"))


def test_training_lowers_the_loss(tiny_config, tmp_path):
  tiny_config.train.epochs = 4
  tiny_config.train.schedule = "constant"
  tiny_config.train.learning_rate = 1e-2
  wd = str(tmp_path / "run")
  train_sbr.train_and_evaluate(tiny_config, wd)
  files = glob.glob(os.path.join(wd, "tensorboard", "sbr", "events.out.tfevents.*"))
  scalars = read_scalars(files[0])
  losses = scalars["train/loss"]
  assert losses[-1] < losses[0]
  for tag in ("train/grad_norm", "train/learning_rate", "train/param_norm",
              "eval/valid/sampled/NDCG_10", "eval/test/full/MRR_20"):
    assert tag in scalars, tag


def read_scalars(path):
  """tag -> values of a TensorBoard event file (TFRecord framing + Event protos)."""
  import struct
  from tensorboardX.proto import event_pb2
  out = {}
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if len(header) < 12:
        break
      (length,) = struct.unpack("<Q", header[:8])
      data = f.read(length)
      f.read(4)
      event = event_pb2.Event.FromString(data)
      for value in event.summary.value:
        out.setdefault(value.tag, []).append(value.simple_value)
  return out


class _Interrupt(Exception):
  pass


def test_resume_after_interruption_equals_uninterrupted_run(tiny_config, tmp_path, monkeypatch):
  tiny_config.train.epochs = 3
  straight = str(tmp_path / "straight")
  ref = train_sbr.train_and_evaluate(tiny_config, straight)

  # Interrupt in the middle of the second epoch, after the first checkpoint.
  resumed = str(tmp_path / "resumed")
  real = train_sbr.jitted_train_step
  calls = {"n": 0}
  from sbrjax.data import prepared
  steps_per_epoch = -(-len(prepared.load_prepared(tiny_config.data).train) // 32)

  def crashing(*args, **kwargs):
    step = real(*args, **kwargs)

    def wrapped(state, batch):
      calls["n"] += 1
      if calls["n"] == steps_per_epoch + 2:  # in the middle of epoch 1
        raise _Interrupt()
      return step(state, batch)
    return wrapped

  monkeypatch.setattr(train_sbr, "jitted_train_step", crashing)
  with pytest.raises(_Interrupt):
    train_sbr.train_and_evaluate(tiny_config, resumed)
  assert os.listdir(os.path.join(resumed, "sbr", "latest"))  # epoch 0 was saved
  monkeypatch.setattr(train_sbr, "jitted_train_step", real)
  got = train_sbr.train_and_evaluate(tiny_config, resumed)

  assert got["test"] == ref["test"]
  assert got["valid"] == ref["valid"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, _params(resumed), _params(straight))


def test_checkpoint_of_another_backbone_is_refused(tiny_config, tmp_path):
  wd = str(tmp_path / "run")
  tiny_config.train.epochs = 1
  train_sbr.train_and_evaluate(tiny_config, wd)
  tiny_config.sbr.backbone = "gcsan"
  with pytest.raises(checkpoints.CheckpointMismatchError, match="model: checkpoint has 'sbr/srgnn'"):
    train_sbr.train_and_evaluate(tiny_config, wd)


def test_restore_from_another_item_count_is_refused(tiny_config, tmp_path):
  wd = str(tmp_path / "run")
  tiny_config.train.epochs = 1
  train_sbr.train_and_evaluate(tiny_config, wd)
  # Another catalog: the same format with 50 items instead of 30.
  from sbrjax.data import rawfiles
  other = tmp_path / "raw50"
  rows = rawfiles.synthetic_ratings(num_users=60, num_items=50, per_user=14)
  rawfiles.write_grouplens_100k(other, rows, {i: f"Film {i} (1991)" for i in range(1, 51)})
  tiny_config.data.manual_dir = str(other)
  tiny_config.data.data_dir = str(tmp_path / "data50")
  tiny_config.restore_from = wd
  with pytest.raises(checkpoints.CheckpointMismatchError, match="num_items"):
    train_sbr.train_and_evaluate(tiny_config, str(tmp_path / "other"))


def test_interrupted_save_leaves_previous_checkpoint_usable(tiny_config, tmp_path):
  wd = str(tmp_path / "run")
  tiny_config.train.epochs = 2
  ref = train_sbr.train_and_evaluate(tiny_config, wd)
  # What a save killed midway leaves behind: a temporary step directory.
  latest = os.path.join(wd, "sbr", "latest")
  partial = os.path.join(latest, "999.orbax-checkpoint-tmp-1234567")
  os.makedirs(os.path.join(partial, "state"))
  open(os.path.join(partial, "state", "garbage"), "w").write("half a tensor")
  got = train_sbr.train_and_evaluate(tiny_config, wd)
  assert got["test"] == ref["test"]


def test_unknown_backbone_is_refused(tiny_config, tmp_path):
  tiny_config.sbr.backbone = "nope"
  with pytest.raises(ValueError, match="Unsupported backbone: 'nope'"):
    train_sbr.train_and_evaluate(tiny_config, str(tmp_path / "run"))


def test_restore_from_missing_directory_is_explained(tiny_config, tmp_path):
  tiny_config.restore_from = str(tmp_path / "nowhere")
  with pytest.raises(errors.CheckpointError, match="config.restore_from"):
    train_sbr.train_and_evaluate(tiny_config, str(tmp_path / "run"))


def test_relative_workdir_and_restore_from_work(tiny_config, tmp_path, monkeypatch):
  """The CLI's default workdir is relative (workdirs/NAME); Orbax needs absolute paths."""
  monkeypatch.chdir(tmp_path)
  tiny_config.train.epochs = 1
  from sbrjax import pipeline
  pipeline.run(tiny_config, os.path.join("workdirs", "first"))
  first = json.load(open(os.path.join("workdirs", "first", "results.json")))
  tiny_config.restore_from = os.path.join("workdirs", "first")
  tiny_config.train.epochs = 0  # no training: the restored backbone is evaluated as is
  out = train_sbr.train_and_evaluate(tiny_config, os.path.join("workdirs", "second"))
  assert out["test"] == first["test"]
