"""load_prepared: validation, protocols end to end, cache, real ml-100k."""

import json
import os

import numpy as np
import pytest

from sbrjax import errors
from sbrjax.data import builders, negatives, prepared, preprocess, rawfiles, stats


@pytest.fixture(name="raw_dir", scope="module")
def _raw_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("manual")
  rows = rawfiles.synthetic_ratings(num_users=30, num_items=40, per_user=12)
  rawfiles.write_grouplens_100k(d, rows, {i: f"Movie {i} (1990)"
                                          for i in range(1, 41)})
  return d


def _cfg(tmp_path, raw_dir, **kw):
  c = prepared.default_config()
  c.data_dir = str(tmp_path / "data")
  c.manual_dir = str(raw_dir)
  c.download = False
  c.num_negatives = 10
  c.update(kw)
  return c


@pytest.mark.parametrize("key,value,match", [
    ("max_len", 0, r"config\.data\.max_len must be an integer >= 1, got 0"),
    ("max_len", 2.5, r"config\.data\.max_len"),
    ("variant", "ml-20m", r"config\.data\.variant is 'ml-20m'.*'ml-1m'"),
    ("protocol", "sasrec", r"config\.data\.protocol .* \['llmgr', 'llm4sbr'\]"),
    ("dataset", "netflix", r"config\.data\.dataset"),
    ("negatives_exclude", "all", r"config\.data\.negatives_exclude"),
    ("test_fraction", 1.0, r"config\.data\.test_fraction must be a fraction"),
    ("num_negatives", 0, r"config\.data\.num_negatives"),
    ("min_count", -1, r"config\.data\.min_count"),
    ("download", "yes", r"config\.data\.download"),
])
def test_validation_names_key_and_fix(tmp_path, key, value, match):
  # A plain dict: ConfigDict itself would refuse some of these types.
  c = prepared.default_config().to_dict()
  c.update(data_dir=str(tmp_path), **{key: value})
  with pytest.raises(ValueError, match=match):
    prepared.load_prepared(c)


def test_data_dir_defaults_to_env(monkeypatch, tmp_path):
  monkeypatch.setenv("SBRJAX_DATA_DIR", str(tmp_path / "env"))
  assert prepared.validate(prepared.default_config()).data_dir == str(
      tmp_path / "env")


@pytest.mark.parametrize("protocol", ["llmgr", "llm4sbr"])
def test_prepares_consistent_splits_and_reuses_cache(tmp_path, raw_dir,
                                                     monkeypatch, protocol):
  c = _cfg(tmp_path, raw_dir, protocol=protocol, max_len=4, session_rule="gap")
  d = prepared.load_prepared(c)
  assert d.name == "movielens/ml-100k" and d.protocol == protocol
  assert len(d.item_raw_ids) == len(d.item_texts) == d.num_items
  assert all(t.startswith("Movie ") for t in d.item_texts)
  for split in (d.train, d.valid, d.test):
    assert len(split) > 0
    assert split.lengths.max() <= 4 and split.lengths.min() >= 1
    assert split.seq_values.max() < d.num_items
    assert split.targets.max() < d.num_items
  assert d.train.negatives is None
  for split in (d.valid, d.test):
    assert split.negatives.shape == (len(split), 10)
    assert not (split.negatives == split.targets[:, None]).any()
  if protocol == "llmgr":
    assert len(d.valid) == len(d.test) == d.num_users == d.stats["num_users"]
  else:
    assert d.stats["unit"] == "session"
    # Synthetic users have a 2-hour break: 2 gap-sessions each (clock
    # windows cut their 60 s steps further).
    assert d.num_users == 60
  assert d.stats["num_test"] == len(d.test)
  assert d.stats["raw_num_actions"] == 360
  # Second call: from the cache, without touching the builders.
  monkeypatch.setattr(builders, "load_canonical",
                      lambda *a, **k: pytest.fail("cache not used"))
  d2 = prepared.load_prepared(c)
  assert d2.fingerprint == d.fingerprint
  np.testing.assert_array_equal(d2.test.negatives, d.test.negatives)
  np.testing.assert_array_equal(d2.train.seq_values, d.train.seq_values)
  assert d2.item_texts == d.item_texts and d2.stats == d.stats


def test_seed_changes_negatives_and_fingerprint_only(tmp_path, raw_dir):
  a = prepared.load_prepared(_cfg(tmp_path, raw_dir, seed=0))
  b = prepared.load_prepared(_cfg(tmp_path, raw_dir, seed=1))
  assert a.fingerprint != b.fingerprint
  np.testing.assert_array_equal(a.test.targets, b.test.targets)
  assert (a.test.negatives != b.test.negatives).any()


def test_history_excluded_from_negatives_by_default(tmp_path, raw_dir):
  d = prepared.load_prepared(_cfg(tmp_path, raw_dir, max_len=2))
  # Test inputs of llmgr are everything but the last item: rebuild the full
  # history from train + valid examples of the same user.
  last_train = {}
  for i in range(len(d.train)):
    last_train[int(d.train.users[i])] = i
  for i in range(len(d.test)):
    u = int(d.test.users[i])
    t = last_train[u]
    history = set(d.train.sequence(t).tolist()) | {int(d.train.targets[t]),
                                                   int(d.valid.targets[i])}
    assert not history & set(d.test.negatives[i].tolist())


def test_amazon_items_without_metadata_get_counted_placeholders(tmp_path):
  rows = rawfiles.synthetic_ratings(num_users=30, num_items=40, per_user=12)
  meta = [{"asin": f"B{i:09d}", "title": f"Product {i}"}
          for i in range(1, 41) if i % 4]  # every 4th item has no metadata
  meta[0]["title"] = ""  # item 1: metadata without title or description
  rawfiles.write_amazon(tmp_path / "m", "reviews_Beauty_5.json.gz",
                        "meta_Beauty.json.gz", rows, meta,
                        python_literal_meta=True)
  c = _cfg(tmp_path, tmp_path / "m", dataset="amazon", variant="beauty2014",
           protocol="llm4sbr")
  d = prepared.load_prepared(c)
  assert d.name == "amazon/beauty2014" and d.num_users == 30  # 1 per user
  missing = [r for r in d.item_raw_ids if int(r[1:]) % 4 == 0]
  assert d.stats["num_items_without_metadata"] == len(missing) > 0
  assert d.stats["num_placeholder_texts"] == len(missing) + (
      "B000000001" in d.item_raw_ids)
  for r, t in zip(d.item_raw_ids, d.item_texts):
    i = int(r[1:])
    assert t == (f"item {r}" if i % 4 == 0 or i == 1 else f"Product {i}")


def test_empty_after_filtering_raises(tmp_path, raw_dir):
  with pytest.raises(ValueError, match="k-core"):
    prepared.load_prepared(_cfg(tmp_path, raw_dir, min_count=500))
  with pytest.raises(ValueError, match="no session survives"):
    prepared.load_prepared(_cfg(tmp_path, raw_dir, protocol="llm4sbr",
                                min_count=500))


def _cache_entries(tmp_path):
  root = tmp_path / "data" / "prepared"
  return sorted(os.listdir(root)) if root.exists() else []


def test_failed_preparation_leaves_nothing_a_later_run_reads(tmp_path, raw_dir,
                                                             monkeypatch):
  c = _cfg(tmp_path, raw_dir)
  calls = {"protocol": 0}
  real_protocol = preprocess.llmgr_protocol
  real_sample = negatives.sample_negatives

  def counting_protocol(*a, **k):
    calls["protocol"] += 1
    return real_protocol(*a, **k)

  def failing_sample(*a, **k):  # valid succeeds, test fails: midway.
    if a[4] == "test":
      raise RuntimeError("killed midway")
    return real_sample(*a, **k)

  monkeypatch.setattr(preprocess, "llmgr_protocol", counting_protocol)
  monkeypatch.setattr(negatives, "sample_negatives", failing_sample)
  with pytest.raises(RuntimeError, match="killed midway"):
    prepared.load_prepared(c)
  assert _cache_entries(tmp_path) == []

  # A failure while writing the cache (after arrays.npz is on disk).
  monkeypatch.setattr(negatives, "sample_negatives", real_sample)
  real_dump = json.dump

  def failing_dump(*a, **k):
    raise OSError("disk full")

  monkeypatch.setattr(json, "dump", failing_dump)
  with pytest.raises(OSError, match="disk full"):
    prepared.load_prepared(c)
  assert _cache_entries(tmp_path) == []
  monkeypatch.setattr(json, "dump", real_dump)

  calls["protocol"] = 0
  d = prepared.load_prepared(c)
  assert calls["protocol"] == 1  # re-prepared, not read from a half cache
  assert len(_cache_entries(tmp_path)) == 1
  assert prepared.load_prepared(c).fingerprint == d.fingerprint
  assert calls["protocol"] == 1


def test_corrupted_cache_is_rebuilt(tmp_path, raw_dir):
  c = _cfg(tmp_path, raw_dir)
  d = prepared.load_prepared(c)
  (entry,) = _cache_entries(tmp_path)
  path = tmp_path / "data" / "prepared" / entry / "arrays.npz"
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  arrays["test/targets"] = arrays["test/targets"][::-1].copy()
  np.savez(path, **arrays)
  d2 = prepared.load_prepared(c)
  assert d2.fingerprint == d.fingerprint
  np.testing.assert_array_equal(d2.test.targets, d.test.targets)


@pytest.fixture(name="ml100k_dir", scope="module")
def _ml100k_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("ml100k")


def test_real_ml100k_from_recbole_wheel_llmgr(ml100k_dir):
  c = prepared.default_config()
  c.data_dir = str(ml100k_dir)
  d = prepared.load_prepared(c)
  s = d.stats
  assert (s["raw_num_users"], s["raw_num_items"], s["raw_num_actions"]) == (
      943, 1682, 100_000)
  # LLMGR 5-core (users and items, fixed point) as measured.
  assert (s["num_users"], s["num_items"], s["num_actions"]) == (
      943, 1349, 99_287)
  assert s["num_placeholder_texts"] == 0
  assert len(d.test) == len(d.valid) == 943
  assert len(d.train) == 99_287 - 3 * 943
  assert d.test.negatives.shape == (943, 99)
  assert "Toy Story" in d.item_texts
  assert d.test.lengths.max() == 50


def test_real_ml100k_from_recbole_wheel_llm4sbr(ml100k_dir):
  c = prepared.default_config()
  c.data_dir = str(ml100k_dir)
  c.protocol = "llm4sbr"
  d = prepared.load_prepared(c)
  s = d.stats
  # 10-minute clock windows, one example per session (the paper's ML-1M
  # protocol): 6,501 sessions -> 5,265 / 585 / 651 (81/9/10).
  assert (s["num_users"], s["num_items"], s["num_actions"]) == (
      6501, 1340, 98_079)
  assert (s["num_train"], s["num_valid"], s["num_test"]) == (5265, 585, 651)
  assert s["llm4sbr_table1"]["train_sessions"] == 5265 + 585
  assert d.test.negatives.shape == (len(d.test), 99)


# ------------------------------------------------------- raw content keys, bad input


def _write_raw(folder, **kw):
  rows = rawfiles.synthetic_ratings(**{**dict(num_users=30, num_items=40, per_user=12), **kw})
  rawfiles.write_grouplens_100k(folder, rows, {i: f"Movie {i} (1990)" for i in range(1, 41)})
  return rows


def test_changed_raw_files_are_prepared_again(tmp_path):
  raw_dir = tmp_path / "raw"
  _write_raw(raw_dir)
  first = prepared.load_prepared(_cfg(tmp_path, raw_dir))
  again = prepared.load_prepared(_cfg(tmp_path, raw_dir))
  assert again.fingerprint == first.fingerprint  # unchanged bytes: the cache
  builds = sorted(os.listdir(tmp_path / "data" / "tfds"))
  assert len(builds) == 2  # one per builder (interactions, items)
  # The same path, fewer users: a new preparation with the new counts.
  _write_raw(raw_dir, num_users=25)
  changed = prepared.load_prepared(_cfg(tmp_path, raw_dir))
  assert changed.fingerprint != first.fingerprint
  assert changed.stats["raw_num_actions"] == 25 * 12 != first.stats["raw_num_actions"]
  assert len(os.listdir(tmp_path / "data" / "tfds")) == 3  # only u.data's builder redone
  record = json.load(open(next((tmp_path / "data" / "tfds").glob("*/sources.json"))))
  assert record["files"][0]["sha256"] and record["version"] == "1.0.0"


def test_a_malformed_line_added_later_is_read_and_named(tmp_path):
  raw_dir = tmp_path / "raw"
  _write_raw(raw_dir)
  prepared.load_prepared(_cfg(tmp_path, raw_dir))
  with open(raw_dir / "u.data", "a", encoding="latin-1") as f:
    f.write("7\tnot-a-number\n")
  with pytest.raises(errors.DataError, match=r"bad rating row at u\.data:361"):
    prepared.load_prepared(_cfg(tmp_path, raw_dir))


def test_an_empty_ratings_file_is_named(tmp_path):
  raw_dir = tmp_path / "raw"
  _write_raw(raw_dir)
  (raw_dir / "u.data").write_text("")
  with pytest.raises(errors.DataError, match=r"u\.data: no interactions"):
    prepared.load_prepared(_cfg(tmp_path, raw_dir))


def test_filters_that_empty_the_data_name_the_filter_and_the_file(tmp_path, raw_dir):
  with pytest.raises(errors.DataError,
                     match=r"k-core filter \(min_count=500\).*360 interactions.*u\.data"):
    prepared.load_prepared(_cfg(tmp_path, raw_dir, min_count=500))


def _ml1m_known_sessions(folder, num_users=10):
  """ratings.dat where each user has a known session structure.

  Per user (times relative to a 10-minute window start W, days apart):
  clicks on items 1-4 at W+300, W+420, W+540, W+660, then two hours later
  items 5-7 at W'+0, W'+100, W'+200. Gap rule (> 600 s): sessions [1,2,3,4]
  and [5,6,7]. Window rule: [1,2,3] | [4] (alone, dropped) | [5,6,7].
  """
  rows = []
  for u in range(1, num_users + 1):
    w = 1_000_000_200 + u * 86_400  # a multiple of 600: a window start
    rows += [(u, i, 4, w + t) for i, t in zip((1, 2, 3, 4), (300, 420, 540, 660))]
    rows += [(u, i, 4, w + 7_200 + t) for i, t in zip((5, 6, 7), (0, 100, 200))]
  rawfiles.write_ml1m(folder, rows, {i: f"Movie {i} (1990)" for i in range(1, 8)})


@pytest.mark.parametrize("rule,items,clicks,avg_length", [
    ("gap", 7, 70, 2.5),      # 20 sessions of 4 and 3 clicks
    ("window", 6, 60, 2.0),   # 20 sessions of 3 and 3; item 4 only in singletons
])
def test_ml1m_session_rules_give_the_known_table1(tmp_path, rule, items, clicks,
                                                   avg_length):
  _ml1m_known_sessions(tmp_path / "raw")
  c = _cfg(tmp_path, tmp_path / "raw", variant="ml-1m", protocol="llm4sbr",
           session_rule=rule, num_negatives=2)
  d = prepared.load_prepared(c)
  s = d.stats
  assert (s["num_users"], s["num_items"], s["num_actions"]) == (20, items, clicks)
  # One example per session (MovieLens "auto"): 20 - int(0.9 * 20) = 2 test,
  # 18 - int(0.9 * 18) = 2 validation, 16 train.
  assert (len(d.train), len(d.valid), len(d.test)) == (16, 2, 2)
  paper = s["llm4sbr_table1"]
  assert paper == {"train_sessions": 18, "test_sessions": 2, "clicks": clicks,
                   "avg_length": avg_length}
  # Every example's target is its session's last click.
  last = {"gap": {3, 6}, "window": {2, 5}}[rule]  # dense ids of items 4/3 and 7
  assert set(d.test.targets.tolist()) | set(d.train.targets.tolist()) <= last
  text = stats.format_stats(d.name, s)
  assert "#train sessions" in text and f"{clicks:,}" in text
  # Every prefix instead: gap 3 + 2, window 2 + 2 examples per user.
  c.augmentation = "prefixes"
  every = prepared.load_prepared(c)
  per_user = {"gap": 5, "window": 4}[rule]
  assert len(every.train) + len(every.valid) + len(every.test) == 10 * per_user


def test_session_rule_and_augmentation_defaults_follow_the_paper(tmp_path):
  settings = prepared.validate(_cfg(tmp_path, tmp_path, protocol="llm4sbr"))
  assert settings.session_rule == "window" and settings.examples == "last"
  amazon = prepared.validate(_cfg(tmp_path, tmp_path, protocol="llm4sbr",
                                  dataset="amazon", variant="beauty2014"))
  assert amazon.examples == "prefixes" and amazon.session_gap is None
  with pytest.raises(ValueError, match=r"config\.data\.session_rule is 'hour'"):
    prepared.validate(_cfg(tmp_path, tmp_path, session_rule="hour"))
