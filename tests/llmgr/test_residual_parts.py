"""sbrjax.analysis.residual: the residual head's correction, part by part."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbrjax.analysis import report
from sbrjax.analysis import residual as residual_lib
from sbrjax.analysis import runs as runs_lib
from sbrjax.llmgr import examples as llmgr_data
from sbrjax.models import sbr as sbr_lib
from tests.llmgr import tiny_model


def test_each_part_zeroed_scores_as_its_formula(cfg):
  cfg.llmgr.head = "residual"
  data, model, params, enc, pad = tiny_model.build(cfg)
  ex = llmgr_data.behavior_examples(data.train, enc, limit=6)
  batch = next(llmgr_data.PromptBatcher([ex], max_len=8, batch_size=8,
                                        length_buckets=(128, 192), pad_id=pad
                                        ).iterate(shuffle=False))
  rng = np.random.default_rng(0)
  f_out = dict(params["f_out"])
  f_out["bias_behavior"] = jnp.asarray(rng.normal(size=data.num_items), jnp.float32)
  f_out["proj_behavior"] = jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), f_out["proj_behavior"])
  params = {**params, "f_out": f_out}
  backbone = np.asarray(sbr_lib.create_model(model.config.sbr).apply(
      {"params": params["sbr"]}, batch.sessions).logits)
  logits = {name: np.asarray(model.apply({"params": residual_lib.without_parts(params, b, p)},
                                         batch))[:6]
            for name, b, p in residual_lib.PARTS}
  bias = np.asarray(f_out["bias_behavior"])
  np.testing.assert_allclose(logits["neither"], backbone[:6], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits["item bias only"], backbone[:6] + bias, rtol=1e-5, atol=1e-5)
  proj = logits["projection only"] - logits["neither"]
  assert np.abs(proj).max() > 1e-2  # the projection moves the scores
  np.testing.assert_allclose(logits["all"], backbone[:6] + bias + proj, rtol=1e-4, atol=1e-4)
  # Every other leaf is left as it was.
  kept = residual_lib.without_parts(params, False, False)
  assert kept["sbr"] is params["sbr"] and kept["f_out"]["proj"] is params["f_out"]["proj"]


def test_residual_parts_reject_runs_without_a_residual_head(tiny_llmgr_run):
  run = runs_lib.open_run(tiny_llmgr_run[0])
  with pytest.raises(runs_lib.RunError, match="llmgr.head=residual"):
    residual_lib.residual_parts(run)
  with pytest.raises(ValueError, match="none of the runs"):
    report.analyze([tiny_llmgr_run[0]], str(tiny_llmgr_run[0] + "_analysis"), pca=False,
                   residual_parts=True)
  with pytest.raises(ValueError, match="no residual head"):
    residual_lib.without_parts({"f_out": {"out": {}}}, True, False)


@pytest.mark.slow
def test_all_parts_reproduce_the_runs_results_and_the_report_lists_them(cfg, tmp_path):
  from sbrjax import pipeline  # pylint: disable=g-import-not-at-top
  cfg.llmgr.head = "residual"
  wd = str(tmp_path / "run")
  pipeline.run(cfg, wd)
  run = runs_lib.open_run(wd)
  parts = residual_lib.residual_parts(run, ks=(10,))
  assert set(parts) == {"valid", "test"}
  for key in ("sampled/NDCG@10", "full/NDCG@10", "full/HR@10"):
    assert parts["test"]["all"][key] == pytest.approx(run.results["test"][key], abs=1e-6)
  summary = report.analyze([wd, wd], str(tmp_path / "out"), labels=["r", "r"], pca=False,
                           residual_parts=True, table_ks=(10,))
  assert "## The residual head's correction, part by part" in summary
  row = next(l for l in summary.splitlines() if l.startswith("| r | 2 | test |"))
  want = parts["test"]["neither"]
  assert f"{want['sampled/NDCG@10']:.4f} ± 0.0000 / {want['full/NDCG@10']:.4f} ± 0.0000" in row
  with open(tmp_path / "out" / "residual_parts.json") as f:
    records = json.load(f)
  assert [r["label"] for r in records] == ["r", "r"]
  assert records[0]["parts"]["valid"]["item bias only"]["count"] == \
      parts["valid"]["item bias only"]["count"]
