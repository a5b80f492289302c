"""End-to-end LLM4SBR on the tiny config: stage 1, training, bad intent arrays."""

import json
import os

import numpy as np
import pytest

from sbrjax import config as config_lib
from sbrjax.llm4sbr import train as train_llm4sbr
from sbrjax.llm4sbr import intents as intents_lib

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs",
                      "llm4sbr_tiny.py")


@pytest.fixture(scope="module")
def run(tiny_raw_dir, tmp_path_factory):
  """One tiny end-to-end run (shared by the tests below; ~60 s on 2 cores)."""
  tmp = tmp_path_factory.mktemp("llm4sbr")
  cfg = config_lib.load_config_file(CONFIG)
  cfg.data.manual_dir = tiny_raw_dir
  cfg.data.data_dir = str(tmp / "data")
  cfg.train.epochs = 3
  cfg.train.patience = 0
  summary = train_llm4sbr.train_and_evaluate(cfg, str(tmp / "work"))
  return cfg, summary, tmp


@pytest.mark.slow
def test_tiny_end_to_end_run_writes_results(run):
  cfg, summary, tmp = run
  with open(tmp / "work" / "results.json") as f:
    saved = json.load(f)
  assert saved["model"] == "llm4sbr(srgnn)"
  for split in ("valid", "test"):
    m = saved[split]
    assert m["count"] == summary["examples"][split]
    assert m["full/P@10"] == m["full/HR@10"]
    # Sampled candidates are a subset of the catalog: a target never ranks worse.
    assert m["sampled/HR@10"] >= m["full/HR@10"]
  assert saved["stage1"]["train_blank_texts"] >= 0
  texts_dir = summary["stage1"]["texts_dir"]
  assert os.path.isfile(os.path.join(texts_dir, "test.jsonl"))
  # Rerun in a new workdir: intents come from the cache (no regeneration).
  again = train_llm4sbr.train_and_evaluate(cfg, str(tmp / "work2"),
                                           generate_fn=_fail)
  assert again["stage1"]["arrays"] == summary["stage1"]["arrays"]
  assert again["test"] == summary["test"]


@pytest.mark.slow
def test_best_epoch_follows_the_configured_full_ranking_metric(run):
  cfg, summary, _ = run
  assert cfg.train.early_stop_metric == "full/MRR@20"  # the LLM4SBR default
  assert summary["selection"]["metric"] == "full/MRR@20"
  assert summary["selection"]["split"] == "valid"
  values = [h["full/MRR@20"] for h in summary["valid_history"]]
  assert len(values) == 3
  assert summary["best_epoch"] == int(np.argmax(values))  # the first best epoch
  assert summary["selection"]["best_value"] == max(values)
  # The reported validation metrics are those of the selected epoch.
  assert summary["valid"]["full/MRR@20"] == pytest.approx(max(values), abs=1e-7)
  # The pruned W3 is not trained and not counted.
  assert sorted(summary["unused_params"]) == ["sbr/readout/w3/bias",
                                               "sbr/readout/w3/kernel"]


def test_selection_metric_is_checked_before_anything_runs():
  cfg = config_lib.load_config_file(CONFIG)
  assert train_llm4sbr.selection_metric(cfg) == "full/MRR@20"
  cfg.train.early_stop_metric = "sampled/NDCG@10"
  assert train_llm4sbr.selection_metric(cfg) == "sampled/NDCG@10"
  cfg.train.early_stop_metric = "test/MRR@20"
  with pytest.raises(ValueError, match="early_stop_metric='test/MRR@20'.*full/MRR@20"):
    train_llm4sbr.train_and_evaluate(cfg, "/nonexistent/never-written")


def _fail(prompts):
  raise AssertionError("intents regenerated although cached")


def _corrupt_and_expect(run, name, mutate, match):
  cfg, summary, tmp = run
  path = summary["stage1"]["arrays"]["train"]
  side = intents_lib.sidecar_path(path)
  backup = (np.load(path), side.read_text())
  try:
    mutate(path, side)
    workdir = tmp / f"bad_{name}"
    with pytest.raises(ValueError, match=match):
      train_llm4sbr.train_and_evaluate(cfg, str(workdir), generate_fn=_fail)
    assert not (workdir / "llm4sbr").exists()  # refused before training
  finally:
    np.save(path, backup[0])
    side.write_text(backup[1])


@pytest.mark.slow
def test_nan_intent_array_refused_before_training(run):
  def mutate(path, side):
    arr = np.load(path, mmap_mode="r+")
    arr[3, 1, 0] = np.nan
    arr.flush()
  _corrupt_and_expect(run, "nan", mutate, "NaN")


@pytest.mark.slow
def test_wrong_fingerprint_rows_and_dim_refused(run):
  def fingerprint(path, side):
    meta = json.loads(side.read_text())
    meta["fingerprint"] = "another-dataset"
    side.write_text(json.dumps(meta))

  def rows(path, side):
    arr = np.load(path)[:-1]
    np.save(path, arr)
    meta = json.loads(side.read_text())
    meta["shape"], meta["sessions"] = list(arr.shape), meta["sessions"][:-1]
    side.write_text(json.dumps(meta))

  def dim(path, side):
    arr = np.ascontiguousarray(np.load(path)[:, :, :8])
    np.save(path, arr)
    meta = json.loads(side.read_text())
    meta["shape"] = list(arr.shape)
    side.write_text(json.dumps(meta))

  _corrupt_and_expect(run, "fp", fingerprint, "fingerprint")
  _corrupt_and_expect(run, "rows", rows, "rows")
  _corrupt_and_expect(run, "dim", dim, "embedding dim 8, expected 384")


@pytest.mark.slow
def test_backbone_variant_trains_on_the_same_rows(run):
  cfg, summary, tmp = run
  base = cfg.copy_and_resolve_references()
  base.llm4sbr.variant = "backbone"
  out = train_llm4sbr.train_and_evaluate(base, str(tmp / "backbone"), generate_fn=_fail)
  assert out["model"] == "srgnn"
  assert out["examples"] == summary["examples"]
  assert out["data_fingerprint"] == summary["data_fingerprint"]
  assert out["test"]["count"] == summary["test"]["count"]
  assert out["stage1"] == {}
  # Table 3's question (training memory) as XLA accounts for the compiled
  # step: the fused step's arguments hold exactly the extra parameters, their
  # two Adam moments and the batch's intents on top of the backbone's.
  fused_mem = summary["train_memory"]["step_compiled"]
  base_mem = out["train_memory"]["step_compiled"]
  assert 0 < base_mem["peak_bytes"] < fused_mem["peak_bytes"]
  extra_params = summary["num_params"] - out["num_params"]
  intents_bytes = (cfg.train.batch_size * len(cfg.llm4sbr.perspectives) * 384 * 4)
  expected = 3 * 4 * extra_params + intents_bytes
  diff = fused_mem["argument"] - base_mem["argument"]
  assert expected <= diff <= expected + 64, (diff, expected)


def test_wrong_protocol_refused(tiny_config):
  cfg = config_lib.load_config_file(CONFIG)
  cfg.data.protocol = "llmgr"
  with pytest.raises(ValueError, match="protocol"):
    train_llm4sbr.load_data(cfg)


def _shrink_to_tiny(cfg, tmp):
  """The paper config's data and method settings, with the tiny run's sizes."""
  tiny = config_lib.load_config_file(CONFIG)
  for section, keys in (("llm", ("source", "preset")),
                        ("llm4sbr", ("prompt_max_items", "max_new_tokens", "chat",
                                     "gen_batch_size", "gen_chunk", "length_bucket")),
                        ("data", ("max_len", "num_negatives")),
                        ("sbr", ("embed_dim",)),
                        ("text_encoder", ("max_length",)),
                        ("train", ("batch_size", "log_every_steps", "progress_bar")),
                        ("eval", ("batch_size",))):
    for key in keys:
      cfg[section][key] = tiny[section][key]
  cfg.train.epochs = 1
  cfg.data.download = False
  cfg.data.data_dir = str(tmp / "data")
  return cfg


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llm4sbr_ml1m.py", "llm4sbr_beauty.py"])
def test_paper_configs_run_on_files_in_their_published_formats(name, tmp_path):
  """ML-1M (ratings.dat '::') and Amazon Beauty 2014 (reviews + Python-literal
  metadata) through the shipped configs' data path and protocol, end to end."""
  from sbrjax.data import rawfiles  # pylint: disable=g-import-not-at-top
  cfg = config_lib.load_config_file(os.path.join(os.path.dirname(CONFIG), name))
  manual = tmp_path / "raw"
  rows = rawfiles.synthetic_ratings(num_users=40, num_items=30, per_user=14)
  if cfg.data.dataset == "movielens":
    assert cfg.data.variant == "ml-1m"
    rawfiles.write_ml1m(manual, rows, {i: f"Movie {i} (1990)" for i in range(1, 31)})
  else:
    assert (cfg.data.dataset, cfg.data.variant) == ("amazon", "beauty2014")
    from sbrjax.data.builders import amazon  # pylint: disable=g-import-not-at-top
    reviews, meta_name = amazon.FILES["beauty2014"]
    meta = [{"asin": f"B{i:09d}", "title": f"Lipstick shade {i}"} for i in range(1, 31)]
    rawfiles.write_amazon(manual, reviews, meta_name, rows, meta, gz=True,
                          python_literal_meta=True)
  cfg.data.manual_dir = str(manual)
  cfg = _shrink_to_tiny(cfg, tmp_path)
  out = train_llm4sbr.train_and_evaluate(cfg, str(tmp_path / "work"))
  assert out["model"] == "llm4sbr(srgnn)" and out["protocol"] == "llm4sbr"
  assert out["dataset"].startswith(cfg.data.dataset)
  assert out["test"]["count"] == out["examples"]["test"] > 0
  assert out["restriction"] is None  # the paper configs keep every row


def test_intent_controls_break_only_the_row_correspondence():
  rng = np.random.default_rng(0)
  arrays = {s: rng.normal(size=(n, 2, 4)).astype(np.float32)
            for s, n in (("train", 50), ("valid", 7), ("test", 9))}
  assert train_llm4sbr.apply_intent_control(arrays, "none", 0) is arrays
  shuffled = train_llm4sbr.apply_intent_control(arrays, "shuffle", 0)
  for split, arr in arrays.items():
    out = shuffled[split]
    assert out.shape == arr.shape and not np.array_equal(out, arr)
    # The same rows, permuted: a row of the output is a whole row of the input.
    np.testing.assert_array_equal(np.sort(out.reshape(len(out), -1), axis=0),
                                  np.sort(arr.reshape(len(arr), -1), axis=0))
  again = train_llm4sbr.apply_intent_control(arrays, "shuffle", 0)
  assert all(np.array_equal(again[s], shuffled[s]) for s in arrays)
  zeros = train_llm4sbr.apply_intent_control(arrays, "zeros", 0)
  assert all(not zeros[s].any() and zeros[s].shape == arrays[s].shape for s in arrays)


def test_unknown_intent_control_refused():
  cfg = config_lib.load_config_file(CONFIG)
  cfg.llm4sbr.intent_control = "reversed"
  with pytest.raises(ValueError, match="intent_control='reversed'"):
    train_llm4sbr.train_and_evaluate(cfg, "/nonexistent/never-written")
