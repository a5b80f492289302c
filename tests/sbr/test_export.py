"""Exporting a trained backbone: run directory -> model, item table, session reps."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from sbrjax.train import checkpoints as ckpt_lib
from sbrjax import errors
from sbrjax.sbr import export
from sbrjax import pipeline
from sbrjax.data import graphs as graphs_lib
from sbrjax.data import prepared as prepared_lib


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_raw_dir):
  """The tiny SR-GNN config trained for one epoch; (workdir, config)."""
  from sbrjax import config as config_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "sbr_tiny.py")
  cfg = config_lib.load_config_file(path)
  root = tmp_path_factory.mktemp("export")
  cfg.data.manual_dir = tiny_raw_dir
  cfg.data.data_dir = str(root / "data")
  cfg.train.epochs = 1
  workdir = str(root / "run")
  pipeline.run(cfg, workdir)
  return workdir, cfg


def test_exported_reps_equal_direct_apply_and_ignore_batch_size(trained):
  workdir, cfg = trained
  model, params, sbr_cfg, meta = export.load_backbone(workdir)
  assert sbr_cfg.backbone == "srgnn" and sbr_cfg.embed_dim == cfg.sbr.embed_dim
  assert meta["max_len"] == cfg.data.max_len and meta["best_epoch"] == 0
  data = prepared_lib.load_prepared(cfg.data)
  assert sbr_cfg.num_items == data.num_items
  split, max_len = data.test, meta["max_len"]

  reps = export.session_representations(model, params, split, max_len, batch_size=7)
  n, d = len(split), sbr_cfg.embed_dim
  assert reps["node_states"].shape == (n, max_len, d)
  for key in ("local", "global_", "final"):
    assert reps[key].shape == (n, d) and reps[key].dtype == np.float32

  # Direct model.apply on all sessions in one batch (worst-case budgets).
  graphs = graphs_lib.build_graphs(split, max_len)
  batch = graphs_lib.make_batch(graphs, np.arange(n), n)
  out = jax.jit(lambda p, b: model.apply({"params": p["sbr"]}, b))(params, batch)
  np.testing.assert_allclose(reps["final"], out.final, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(reps["local"], out.local, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(reps["global_"], out.global_, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(reps["lengths"], graphs.lengths)
  mask = np.arange(max_len)[None, :] < graphs.lengths[:, None]
  np.testing.assert_allclose(reps["node_states"][mask], np.asarray(out.seq_states)[mask],
                             rtol=1e-6, atol=1e-6)
  assert (reps["node_states"][~mask] == 0).all()
  # The exported reps score items exactly like the model's logits.
  table = export.item_embeddings(model, params)
  assert table.shape == (data.num_items, d)
  np.testing.assert_allclose(reps["final"] @ table.T, out.logits, rtol=1e-5, atol=1e-5)

  for bs in (1, n + 5):
    other = export.session_representations(model, params, split, max_len, batch_size=bs)
    for key in ("node_states", "local", "global_", "final"):
      np.testing.assert_allclose(other[key], reps[key], rtol=1e-6, atol=1e-6, err_msg=key)

  # Plain lists of sequences give the same reps as the Split they came from.
  seqs = [split.sequence(i).tolist() for i in range(n)]
  from_lists = export.session_representations(model, params, seqs, max_len, batch_size=7)
  np.testing.assert_allclose(from_lists["final"], reps["final"], rtol=1e-6, atol=1e-6)


def test_bad_run_dirs_and_inputs_raise(trained, tmp_path):
  workdir, _ = trained
  with pytest.raises(errors.CheckpointError, match="does not exist"):
    export.load_backbone(str(tmp_path / "nope"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(errors.CheckpointError, match="config.json"):
    export.load_backbone(str(empty))
  (empty / "config.json").write_text("{not json")
  with pytest.raises(errors.CheckpointError, match="not valid JSON"):
    export.load_backbone(str(empty))
  (empty / "config.json").write_text(json.dumps({"data": {"max_len": 8}}))
  with pytest.raises(errors.CheckpointError, match="'sbr' section"):
    export.load_backbone(str(empty))
  shutil.copy(os.path.join(workdir, "config.json"), empty / "config.json")
  with pytest.raises(errors.CheckpointError, match="sbr/best"):
    export.load_backbone(str(empty))

  # A config.json that disagrees with the checkpoint (wrong width) is refused.
  mismatched = tmp_path / "mismatched"
  shutil.copytree(workdir, mismatched)
  cfg = json.loads((mismatched / "config.json").read_text())
  cfg["sbr"]["embed_dim"] += 8
  (mismatched / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match="embed_dim"):
    export.load_backbone(str(mismatched))

  model, params, _, meta = export.load_backbone(workdir)
  with pytest.raises(ValueError, match="num_items"):
    export.session_representations(model, params, [[0, model.cfg.num_items]], meta["max_len"])
  with pytest.raises(ValueError, match="empty input sequence"):
    export.session_representations(model, params, [[1], []], meta["max_len"])
  with pytest.raises(ValueError, match="batch_size"):
    export.session_representations(model, params, [[1]], meta["max_len"], batch_size=0)
