"""sbrjax.analyze and sbrjax.analysis: groups, PCA, case studies, sweeps, the report."""

import json
import os
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest

from sbrjax import metrics
from sbrjax.analysis import cases as cases_lib
from sbrjax.analysis import groups as groups_lib
from sbrjax.analysis import pca as pca_lib
from sbrjax.analysis import plots
from sbrjax.analysis import report
from sbrjax.analysis import runs as runs_lib
from sbrjax.analysis import seeds as seeds_lib
from sbrjax.train import evaluate as evaluate_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- PCA


def test_pca_of_a_hand_built_matrix_equals_numpy_svd():
  # Rows = mean + a * u + b * v with orthonormal u, v: the principal axes are
  # u (variance of a) and v (variance of b), the coordinates a and b.
  u = np.array([1.0, 1.0, 0.0, 0.0]) / np.sqrt(2)
  v = np.array([0.0, 0.0, 3.0, 4.0]) / 5.0
  a = np.array([-3.0, -1.0, 0.0, 1.0, 3.0])
  b = np.array([0.5, -0.5, 0.0, -0.5, 0.5])
  x = np.array([2.0, -1.0, 0.5, 4.0]) + a[:, None] * u + b[:, None] * v
  coords, ratio = pca_lib.pca(x, 2)
  # Hand-derived: coordinates a and b up to sign; variance shares 20 / 21 and 1 / 21.
  np.testing.assert_allclose(np.abs(coords), np.abs(np.stack([a, b], 1)), atol=1e-12)
  np.testing.assert_allclose(ratio, [20 / 21, 1 / 21], atol=1e-12)
  # NumPy's SVD of the centred matrix: U * S, each column up to its sign.
  rng = np.random.default_rng(0)
  y = rng.normal(size=(30, 6)) @ rng.normal(size=(6, 6))
  coords, ratio = pca_lib.pca(y, 3)
  uu, s, _ = np.linalg.svd(y - y.mean(0), full_matrices=False)
  ref = uu[:, :3] * s[:3]
  signs = np.sign((coords * ref).sum(0))
  np.testing.assert_allclose(coords, ref * signs, atol=1e-10)
  np.testing.assert_allclose(ratio, s[:3] ** 2 / (s ** 2).sum(), atol=1e-12)
  # The sign rule: each component's largest loading is positive, so -y flips nothing
  # but the coordinates' sign.
  np.testing.assert_allclose(pca_lib.pca(-y, 3)[0], -coords, atol=1e-10)


def test_pca_rejects_bad_input():
  with pytest.raises(ValueError, match="N >= 2"):
    pca_lib.pca(np.zeros((1, 3)))
  with pytest.raises(ValueError, match="k=5"):
    pca_lib.pca(np.zeros((4, 3)), 5)
  with pytest.raises(ValueError, match="NaN"):
    pca_lib.pca(np.array([[0.0, np.nan], [1.0, 2.0]]))


# ---------------------------------------------------------------- groups


def _columns(n=400, seed=0):
  rng = np.random.default_rng(seed)
  return {"rank/full": rng.integers(1, 300, n).astype(np.int32),
          "rank/sampled": rng.integers(1, 101, n).astype(np.int32),
          "session_length": rng.integers(1, 16, n).astype(np.int32),
          "target_train_count": rng.integers(0, 25, n).astype(np.int32)}


@pytest.mark.parametrize("fn,key,threshold", [
    (groups_lib.length_groups, "session_length", 7),
    (groups_lib.item_groups, "target_train_count", 10)])
def test_groups_partition_the_split_and_give_reference_metrics(fn, key, threshold):
  cols = _columns()
  grouping = fn(cols, threshold)
  masks = np.stack([m for _, m in grouping.masks])
  np.testing.assert_array_equal(masks.sum(0), 1)  # every example in exactly one group
  first = grouping.masks[0][1]
  if key == "session_length":  # short: at most 7 (7 itself is short)
    np.testing.assert_array_equal(first, cols[key] <= 7)
  else:  # cold: fewer than 10 (10 itself is warm)
    np.testing.assert_array_equal(first, cols[key] < 10)
  ks = (5, 20)
  rows = groups_lib.group_metrics(cols, grouping, ks)
  overall = metrics.summarize({"full": cols["rank/full"], "sampled": cols["rank/sampled"]}, ks)
  assert sum(v["count"] for _, v in rows) == len(cols[key])
  for (name, values), (_, mask) in zip(rows, grouping.masks):
    for mode in ("full", "sampled"):
      r = cols[f"rank/{mode}"][mask].astype(np.float64)
      assert values[f"{mode}/HR@5"] == pytest.approx((r <= 5).mean(), abs=1e-12)
      assert values[f"{mode}/NDCG@20"] == pytest.approx(
          np.where(r <= 20, 1 / np.log2(r + 1), 0).mean(), abs=1e-12)
      assert values[f"{mode}/MRR@20"] == pytest.approx(np.where(r <= 20, 1 / r, 0).mean(),
                                                       abs=1e-12)
  # Count-weighted group means give back the whole split's metrics.
  for key_ in overall:
    if key_ != "count":
      total = sum(v[key_] * v["count"] for _, v in rows) / overall["count"]
      assert total == pytest.approx(overall[key_], abs=1e-12)


def test_empty_group_has_only_a_count():
  cols = _columns(20)
  cols["session_length"][:] = 3
  rows = groups_lib.group_metrics(cols, groups_lib.length_groups(cols, 7), (5,))
  assert rows[1] == ("long", {"count": 0.0})
  assert "–" in groups_lib.markdown_table([("m", g, v) for g, v in rows], ["full"], ["HR@5"])


# ---------------------------------------------------------------- LLM4SBR case studies


def _write_intent_files(folder, rows=6, f=3, localized=True):
  """An intent array in the LLM4SBR format with its localized ids, and texts."""
  os.makedirs(folder, exist_ok=True)
  perspectives = ["long_term", "short_term"]
  np.save(os.path.join(folder, "test.npy"), np.zeros((rows, 2, 4), np.float32))
  ids = (np.arange(rows * 2 * f).reshape(rows, 2, f) % 10).astype(np.int32)
  weights = np.tile(np.array([[0.5, 0.3, 0.2], [0.6, 0.25, 0.15]], np.float32)[:, :f], (rows, 1, 1))
  np.save(os.path.join(folder, "test.topf_ids.npy"), ids)
  np.save(os.path.join(folder, "test.topf_weights.npy"), weights)
  meta = {"format": "sbrjax-intents", "perspectives": perspectives, "shape": [rows, 2, 4],
          "sessions": [str(i) for i in range(rows)], "f": f}
  if localized:
    meta["localized"] = {"ids": "test.topf_ids.npy", "weights": "test.topf_weights.npy"}
  with open(os.path.join(folder, "test.json"), "w") as fh:
    json.dump(meta, fh)
  texts = os.path.join(folder, "texts")
  os.makedirs(texts, exist_ok=True)
  with open(os.path.join(texts, "test.jsonl"), "w") as fh:
    for r in range(rows):
      fh.write(json.dumps({"session": str(r), "long_term": f"long guess {r}",
                           "short_term": f"short guess {r}"}) + "\n")
  return ids, weights, texts


class _Split:
  """A split of n rows: row i is the session [i, i + 1] -> item i (mod 10)."""

  def __init__(self, n):
    self.n, self.targets = n, np.arange(n) % 10

  def __len__(self):
    return self.n

  def sequence(self, i):
    return np.array([i % 10, (i + 1) % 10])


class _StandInRun:
  """What case_studies reads of a run, over hand-written files."""

  def __init__(self, folder, texts_dir, n):
    self.workdir = folder
    self.results = {"stage1": {"arrays": {"test": os.path.join(folder, "test.npy")},
                               "texts_dir": texts_dir}}
    self._data = types.SimpleNamespace(item_texts=[f"Title {i}" for i in range(10)],
                                       test=_Split(n))

  def data(self):
    return self._data

  def examples(self, split):
    raise FileNotFoundError("no per-example file in this stand-in")


def test_case_studies_show_texts_and_localized_items_from_hand_written_files(tmp_path):
  folder = str(tmp_path / "arrays")
  ids, weights, texts_dir = _write_intent_files(folder)
  loc = cases_lib.load_localized(os.path.join(folder, "test.npy"))
  assert loc.perspectives == ("long_term", "short_term")
  np.testing.assert_array_equal(loc.ids, ids)
  np.testing.assert_array_equal(loc.weights, weights)
  assert cases_lib.load_texts(texts_dir, "test")["4"] == {"long_term": "long guess 4",
                                                          "short_term": "short guess 4"}
  run = _StandInRun(folder, texts_dir, 6)
  studies = cases_lib.case_studies(run, count=3, seed=1)
  rows = cases_lib.choose_rows(6, 3, 1)
  assert len(studies) == 3
  for row, text in zip(rows, studies):
    assert f"#### Test row {row}" in text
    assert f"long guess {row}" in text and f"short guess {row}" in text
    assert f"Target: **Title {row % 10} (#{row % 10})**" in text
    for p, name in enumerate(("long_term", "short_term")):
      line = next(ln for ln in text.splitlines() if ln.startswith(f"| {name} |"))
      expected = ", ".join(f"Title {i} (#{i}) ({w:.2f})" for i, w in zip(ids[row, p],
                                                                          weights[row, p]))
      assert line.endswith(f"| {expected} |"), line


def test_case_studies_explain_missing_localized_ids(tmp_path):
  folder = str(tmp_path / "arrays")
  _, _, texts_dir = _write_intent_files(folder, localized=False)
  with pytest.raises(cases_lib.CaseStudyError, match="localized"):
    cases_lib.case_studies(_StandInRun(folder, texts_dir, 6))
  os.remove(os.path.join(folder, "test.topf_ids.npy"))
  with open(os.path.join(folder, "test.json")) as fh:
    meta = json.load(fh)
  meta["localized"] = {"ids": "test.topf_ids.npy", "weights": "test.topf_weights.npy"}
  with open(os.path.join(folder, "test.json"), "w") as fh:
    json.dump(meta, fh)
  with pytest.raises(cases_lib.CaseStudyError, match="topf_ids.npy"):
    cases_lib.load_localized(os.path.join(folder, "test.npy"))


def _llm4sbr_run(f, tau, seed, value, perspectives=("long_term", "short_term")):
  cfg = ml_collections.ConfigDict({"llm4sbr": {"variant": "llm4sbr", "intent_control": "none",
                                               "f": f, "tau": tau,
                                               "perspectives": perspectives}, "seed": seed})
  return runs_lib.Run(workdir=f"/runs/{f}-{tau}-{seed}-{len(perspectives)}", config=cfg,
                      job="llm4sbr",
                      results={"test": {"full/HR@10": value, "full/MRR@10": value / 4}})


def test_f_sweep_averages_runs_per_value_and_draws_the_curve(tmp_path):
  runs = [_llm4sbr_run(f, 0.1, s, f / 10 + s / 100) for f in (0, 1, 3) for s in (0, 1)]
  runs.append(_llm4sbr_run(5, 0.5, 0, 0.9))  # another tau: not on this f curve
  runs.append(_llm4sbr_run(5, 0.1, 0, 0.8, ("short_term",)))  # an ablation: not on it either
  found = cases_lib.sweeps(runs)
  assert set(found) == {"f"} and len(found["f"]) == 6
  points = cases_lib.sweep_points(found["f"], "f", ["full/HR@10"])["full/HR@10"]
  assert points == {0.0: [0.0, 0.01], 1.0: [0.1, 0.11], 3.0: [0.3, 0.31]}
  xs, mean, std = plots.curve_points(points)
  np.testing.assert_allclose(mean, [0.005, 0.105, 0.305])
  np.testing.assert_allclose(std, [0.005] * 3, atol=1e-12)
  out = report.sweep_section(runs, str(tmp_path), (10,))
  assert out == ["![LLM4SBR over f](llm4sbr_f.png)"]
  png = tmp_path / "llm4sbr_f.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000


def _llmgr_run(limit, layers, seed, sampled, full, head="residual", control="none",
               variant="llmgr", alone=(0.37, 0.044)):
  cfg = ml_collections.ConfigDict({
      "variant": variant, "seed": seed, "llm": {"num_layers": layers},
      "llmgr": {"train_limit": limit, "head": head, "head_init": "random",
                "control": control}})
  results = {"test": {"sampled/NDCG@10": sampled, "full/NDCG@10": full},
             "sbr_alone": {"sampled/NDCG@10": alone[0], "full/NDCG@10": alone[1]},
             "llm": {"layers": layers},
             "stages": {"aux": {"prompts": 100, "train_seconds": 10.0 * layers + limit / 100},
                        "major": {"prompts": 50, "train_seconds": 5.0}}}
  return runs_lib.Run(workdir=f"/runs/{head}-{limit}-{layers}-{control}-{seed}", config=cfg,
                      job="llmgr", results=results)


def test_llmgr_scaling_groups_points_by_head_blocks_and_prompts(tmp_path):
  from sbrjax.analysis import scaling as scaling_lib  # pylint: disable=g-import-not-at-top
  runs = [_llmgr_run(1024, 2, s, 0.30 + s / 100, 0.040) for s in (0, 1)]
  runs += [_llmgr_run(4096, 2, 0, 0.35, 0.045), _llmgr_run(1024, 6, 0, 0.33, 0.043),
           _llmgr_run(0, 2, 0, 0.38, 0.050),
           _llmgr_run(1024, 6, 0, 0.31, 0.041, control="no_decoder"),
           _llmgr_run(1024, 2, 0, 0.20, 0.020, head="paper")]
  runs.append(_llmgr_run(1024, 6, 0, 0.9, 0.9, control="shuffle_slots"))  # not a scale point
  runs.append(_llmgr_run(1024, 6, 0, 0.5, 0.05, variant="llmgr_m"))  # one point: no curve
  found = scaling_lib.scaling_groups(runs)
  assert set(found) == {"llmgr"} and len(found["llmgr"]) == 7
  pts = found["llmgr"]
  by = scaling_lib.curves(pts, "sampled/NDCG@10")
  # no_decoder counts as 0 blocks whatever num_layers says.
  assert set(by) == {("residual", 2), ("residual", 6), ("residual", 0), ("paper", 2)}
  assert by[("residual", 2)] == {1024: [0.30, 0.31], 4096: [0.35], 0: [0.38]}
  text = scaling_lib.table(pts)
  lines = text.splitlines()
  # Seeds at one point: mean ± sample SD (0.305 ± 0.00707); 0 prompts = every prefix, last.
  row = next(l for l in lines if l.startswith("| residual | 2 | 1,024 |"))
  assert "| 2 |" in row and "0.3050 ± 0.0071" in row and "0.0400 ± 0.0000" in row
  assert lines.index(row) < lines.index(next(l for l in lines if "every prefix" in l))
  assert any(l.startswith("| residual | 0 (no decoder) | 1,024 | 1 |") for l in lines)
  assert lines[-1].startswith("| backbone alone |") and "0.3700" in lines[-1]
  png = tmp_path / "scaling.png"
  scaling_lib.figure(pts, "t", str(png))
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 300_000
  with pytest.raises(runs_lib.RunError, match="not an LLMGR run"):
    scaling_lib.point_of(_llm4sbr_run(1, 0.1, 0, 0.2))


def test_seed_rows_average_runs_sharing_a_name_like_numpy():
  vals = {"a": [0.31, 0.35, 0.36], "b": [0.40]}
  runs, labels = [], []
  for name in ("a", "b"):
    for seed, v in enumerate(vals[name]):
      runs.append(_llmgr_run(4096, 6, seed, v, v / 8))
      labels.append(name)
  runs.insert(1, _llmgr_run(4096, 6, 0, 0.9, 0.9))  # runs of a name need not be adjacent
  labels.insert(1, "c")
  del runs[-2].results["test"]["full/NDCG@10"]  # a key one run lacks
  broken = _llmgr_run(4096, 6, 2, 0.5, 0.5)
  broken.results.pop("test")
  runs.append(broken)
  labels.append("b")
  keys = ["sampled/NDCG@10", "full/NDCG@10"]
  recs = seeds_lib.summarize(runs, labels, keys)
  assert [r["label"] for r in recs] == ["a", "c", "b"]
  a, c, b = recs
  assert a["n"] == 3 and a["seeds"] == [0, 1, 2]
  np.testing.assert_allclose(a["mean"]["sampled/NDCG@10"], np.mean(vals["a"]), rtol=1e-12)
  np.testing.assert_allclose(a["sd"]["sampled/NDCG@10"], np.std(vals["a"], ddof=1), rtol=1e-12)
  # a's last run lacks full NDCG: averaged over the two that have it, and the cell says so.
  np.testing.assert_allclose(a["mean"]["full/NDCG@10"], np.mean(vals["a"][:2]) / 8)
  assert seeds_lib.cell(a, "full/NDCG@10").endswith("(n=2)")
  assert c["sd"]["sampled/NDCG@10"] is None and seeds_lib.cell(c, "sampled/NDCG@10") == "0.9000"
  assert b["n"] == 1 and b["missing"] == [broken.workdir]
  text = seeds_lib.markdown(recs, keys)
  row = next(l for l in text.splitlines() if l.startswith("| a |"))
  assert row.startswith("| a | 3 | 0, 1, 2 | 0.3400 ± 0.0265 |")
  assert f"b: no 1 result(s) ({broken.workdir})" in text
  dup = seeds_lib.summarize([_llmgr_run(1, 2, 0, .1, .1), _llmgr_run(1, 2, 0, .2, .2)],
                            ["x", "x"], keys)
  assert dup[0]["repeated_seeds"] == [0]
  assert "appear more than once" in seeds_lib.markdown(dup, keys)
  with pytest.raises(ValueError, match="1 labels for 2 runs"):
    seeds_lib.groups(runs[:2], ["a"])


# ---------------------------------------------------------------- the command


def test_analyze_writes_tables_whose_groups_partition_the_test_split(tiny_sbr_run, tmp_path):
  wd, _ = tiny_sbr_run
  out = str(tmp_path / "analysis")
  summary = report.analyze([wd], out, length_threshold=5, cold_threshold=20, table_ks=(5, 10))
  cols, _ = evaluate_lib.load_examples(evaluate_lib.examples_path(wd, "test"))
  n = len(cols["index"])
  short = int((cols["session_length"] <= 5).sum())
  cold = int((cols["target_train_count"] < 20).sum())
  assert f"SR-GNN: short {short:,}, long {n - short:,}" in summary
  assert f"SR-GNN: cold {cold:,}, warm {n - cold:,}" in summary
  assert "fewer than 20 training examples" in summary
  record = json.load(open(os.path.join(out, "groups.json")))
  for key in ("length", "items"):
    assert sum(r["count"] for r in record["groups"][key]) == n
  assert open(os.path.join(out, "summary.md")).read() == summary
  rows = json.load(open(os.path.join(out, "metrics.json")))["rows"]
  test = json.load(open(os.path.join(wd, "results.json")))["test"]
  assert len(rows) == 1 and rows[0]["n"] == 1 and rows[0]["label"] == "SR-GNN"
  assert rows[0]["mean"]["full/HR@10"] == test["full/HR@10"]
  assert f"| SR-GNN | 1 | " in summary and f"{test['full/HR@10']:.4f}" in summary


def test_analyze_cli_names_a_missing_run_and_exits_2(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "sbrjax.analyze", f"--workdir={tmp_path}/nope",
                         f"--out={tmp_path}/a"], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"sbrjax.analyze: --workdir={tmp_path}/nope: no such directory."]


@pytest.mark.slow
def test_llmgr_pca_uses_f_in_of_the_tuned_table(tiny_llmgr_run, tmp_path):
  import flax.linen as nn
  wd, _ = tiny_llmgr_run
  run = runs_lib.open_run(wd)
  params, _ = runs_lib.restore_best_params(run.stage_best_dir())
  table, projected = pca_lib.llmgr_item_inputs(run, params)
  import jax
  leaves = [v for path, v in jax.tree_util.tree_flatten_with_path(params["sbr"])[0]
            if "item_embedding" in jax.tree_util.keystr(path)]
  assert len(leaves) == 1
  np.testing.assert_array_equal(table, leaves[0])  # GC-SAN scores with the raw table
  ref = nn.Dense(projected.shape[1]).apply({"params": params["f_in"]}, table)
  np.testing.assert_allclose(projected, np.asarray(ref), rtol=1e-5, atol=1e-5)
  out = str(tmp_path / "analysis")
  summary = report.analyze([os.path.join(wd, "sbr_pretrain"), wd], out)
  assert "![PCA LLMGR](pca_llmgr.png)" in summary
  png = os.path.join(out, "pca_llmgr.png")
  assert os.path.getsize(png) < 200_000
