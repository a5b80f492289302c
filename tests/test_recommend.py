"""sbrjax.recommend: same top-K as the evaluator, item names, clear errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sbrjax.analysis import recommend as rec_lib
from sbrjax.data import prepared
from sbrjax.train import evaluate as evaluate_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Star Wars (1977)",
          "Star Trek: Generations (1994)"]


def _cli(*args, stdin=None):
  return subprocess.run([sys.executable, "-m", "sbrjax.recommend", *args], cwd=REPO,
                        input=stdin, capture_output=True, text=True, timeout=600)


def test_items_resolve_by_id_raw_id_and_title():
  assert rec_lib.resolve_items("3, 0,4", TITLES) == [3, 0, 4]
  assert rec_lib.resolve_items("toy story (1995),GoldenEye", TITLES) == [0, 1]
  assert rec_lib.resolve_items("Four Rooms|Star Trek", TITLES, sep="|") == [2, 4]
  assert rec_lib.resolve_items("17,21", TITLES, raw_ids=["5", "17", "21", "2", "9"]) == [1, 2]


def test_unknown_items_are_named_with_the_closest_titles():
  with pytest.raises(rec_lib.RecommendError) as e:
    rec_lib.resolve_items("Golden Eye,Star,99", TITLES)
  msg = str(e.value)
  assert "unknown item 'Golden Eye'; closest titles: 'GoldenEye (1995)' (id 1)" in msg
  assert "'Star' is ambiguous: 2 titles contain it" in msg
  assert "item id 99 is outside [0, 5)" in msg
  with pytest.raises(rec_lib.RecommendError, match="raw id 3 is not in the catalog"):
    rec_lib.resolve_items("3", TITLES, raw_ids=["5", "17", "21", "2", "9"])


def _evaluated_rows(wd, split="test"):
  cols, _ = evaluate_lib.load_examples(evaluate_lib.examples_path(wd, split))
  return cols


def test_recommend_gives_the_evaluators_top_k_for_the_same_sessions(tiny_sbr_run):
  wd, cfg = tiny_sbr_run
  data = prepared.load_prepared(cfg.data)
  cols = _evaluated_rows(wd)
  rec = rec_lib.Recommender.from_workdir(wd, top_k=20)
  rows = cols["index"][:25]
  ids, scores = rec.recommend([data.test.sequence(int(r)) for r in rows])
  np.testing.assert_array_equal(ids, cols["top/items"][:25])
  np.testing.assert_allclose(scores, cols["top/scores"][:25], rtol=1e-5, atol=1e-6)


def test_exclude_seen_drops_the_sessions_items_from_the_full_ranking(tiny_sbr_run):
  wd, cfg = tiny_sbr_run
  data = prepared.load_prepared(cfg.data)
  sessions = [list(data.test.sequence(r)) for r in range(8)]
  full = rec_lib.Recommender.from_workdir(wd, top_k=data.num_items)
  all_ids, all_scores = full.recommend(sessions)
  rec = rec_lib.Recommender.from_workdir(wd, top_k=5, exclude_seen=True)
  ids, scores = rec.recommend(sessions)
  assert ids.shape == (8, 5)
  for row, s in enumerate(sessions):
    fresh = [i for i in all_ids[row] if i not in set(s)]
    assert fresh[:5] == ids[row].tolist()
    assert not set(ids[row].tolist()) & set(s)
    np.testing.assert_allclose(scores[row], all_scores[row][np.isin(all_ids[row], ids[row])])
  # The default keeps them: some session's own item ranks in its top 5 on this data.
  kept, _ = rec_lib.Recommender.from_workdir(wd, top_k=5).recommend(sessions)
  assert any(set(kept[r].tolist()) & set(s) for r, s in enumerate(sessions))


def test_cli_reads_sessions_from_stdin_and_flags_bad_lines(tiny_sbr_run):
  wd, cfg = tiny_sbr_run
  data = prepared.load_prepared(cfg.data)
  cols = _evaluated_rows(wd)
  row = int(cols["index"][0])
  session = ",".join(str(i) for i in data.test.sequence(row))
  title = data.item_texts[int(data.test.sequence(row)[-1])]
  proc = _cli(f"--workdir={wd}", "--top_k=5", "--format=json",
              stdin=f"{session}\nNo Such Film Anywhere\n{title}\n")
  assert proc.returncode == 2  # one bad line
  err = proc.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(
      "sbrjax.recommend: line 2: unknown item 'No Such Film Anywhere'; closest titles:")
  out = [json.loads(line) for line in proc.stdout.strip().splitlines()]
  assert len(out) == 2
  assert [x["id"] for x in out[0]["items"]] == cols["top/items"][0, :5].tolist()
  assert out[1]["session"] == [int(data.test.sequence(row)[-1])]
  assert out[0]["items"][0]["title"] == data.item_texts[out[0]["items"][0]["id"]]


def test_workdir_without_a_checkpoint_is_one_line_and_exit_2(tiny_sbr_run, tmp_path):
  wd, _ = tiny_sbr_run
  bare = tmp_path / "bare"
  bare.mkdir()
  shutil.copy(os.path.join(wd, "config.json"), bare / "config.json")
  proc = _cli(f"--workdir={bare}", "--items=1,2")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines == [f"sbrjax.recommend: no checkpoint: {bare}/sbr/best does not exist (the run "
                   "has not finished a training epoch of its last stage)."]
  proc = _cli(f"--workdir={tmp_path}/missing", "--items=1")
  assert proc.returncode == 2
  assert proc.stderr.strip() == f"sbrjax.recommend: --workdir={tmp_path}/missing: no such directory."


@pytest.mark.slow
def test_llmgr_recommend_gives_the_evaluators_top_k(tiny_llmgr_run):
  wd, cfg = tiny_llmgr_run
  data = prepared.load_prepared(cfg.data)
  cols = _evaluated_rows(wd)
  # The tiny config evaluates a sample of the test split: the file names its rows.
  assert len(cols["index"]) == cfg.llmgr.eval_limit < len(data.test)
  np.testing.assert_array_equal(cols["target"], data.test.targets[cols["index"]])
  rec = rec_lib.Recommender.from_workdir(wd, top_k=20)
  ids, scores = rec.recommend([data.test.sequence(int(r)) for r in cols["index"]])
  np.testing.assert_array_equal(ids, cols["top/items"])
  np.testing.assert_allclose(scores, cols["top/scores"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_llm4sbr_recommend_infers_intents_and_gives_the_evaluators_top_k(tiny_raw_dir, tmp_path):
  from sbrjax import config as config_lib
  from sbrjax import pipeline
  from sbrjax.llm4sbr import train as l4s_train
  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "llm4sbr_tiny.py"))
  cfg.data.manual_dir = tiny_raw_dir
  cfg.data.data_dir = str(tmp_path / "data")
  cfg.train.epochs = 1
  wd = str(tmp_path / "run")
  pipeline.run(cfg, wd)
  data = l4s_train.load_data(cfg)
  cols = _evaluated_rows(wd)
  rows = cols["index"][:8]
  rec = rec_lib.Recommender.from_workdir(wd, top_k=20)
  # The session's intents are generated again by the run's LLM, encoded and localized.
  ids, scores = rec.recommend([data.test.sequence(int(r)) for r in rows])
  np.testing.assert_array_equal(ids, cols["top/items"][:8])
  np.testing.assert_allclose(scores, cols["top/scores"][:8], rtol=1e-4, atol=1e-5)
