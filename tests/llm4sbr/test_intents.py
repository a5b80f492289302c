"""Tests for sbrjax.llm4sbr.intents (texts, intent arrays, official format)."""

import json
import os

import numpy as np
import pytest

from sbrjax.llm4sbr import intents
from sbrjax.llm4sbr import localize as loc

P = ["long_term", "short_term"]
META = dict(dataset="movielens/ml-100k", split="test", encoder="minilm",
            f=5, fingerprint="abc123")


def _values(n=5, d=4, seed=0):
  return np.random.default_rng(seed).normal(size=(n, 2, d)).astype(np.float32)


def _write(tmp_path, values=None, name="x.npy", **kw):
  values = _values() if values is None else values
  meta = {**META, "sessions": [f"s{i}" for i in range(len(values))],
          "perspectives": P, **kw}
  return intents.write_intent_array(tmp_path / name, values, **meta)


def _load(path, **kw):
  args = dict(expected_fingerprint="abc123", expected_rows=5, expected_dim=4,
              perspectives=P)
  args.update(kw)
  return intents.load_intent_array(path, **args)


# ---------------------------------------------------------------- arrays


def test_round_trip_is_exact_and_memory_mapped(tmp_path):
  values = _values()
  path = _write(tmp_path, values)
  arr = _load(path)
  assert isinstance(arr.values, np.memmap)
  np.testing.assert_array_equal(arr.values, values)
  np.testing.assert_array_equal(arr.perspective("short_term"), values[:, 1])
  np.testing.assert_array_equal(arr.select(["short_term", "long_term"]),
                                values[:, ::-1])
  assert arr.sessions == tuple(f"s{i}" for i in range(5))
  side = json.loads(intents.sidecar_path(path).read_text())
  assert side["shape"] == [5, 2, 4] and side["dtype"] == "float32"
  assert side["encoder"] == "minilm" and side["f"] == 5
  assert side["split"] == "test" and side["dataset"] == "movielens/ml-100k"
  assert sorted(os.listdir(tmp_path)) == ["x.json", "x.npy"]  # no temp files


def test_subset_of_perspectives_loads(tmp_path):
  path = _write(tmp_path)
  assert _load(path, perspectives=["short_term"]).values.shape == (5, 2, 4)


@pytest.mark.parametrize("kw,msg", [
    (dict(expected_rows=6), r"5 rows \(sessions\), expected 6"),
    (dict(expected_dim=8), "embedding dim 4, expected 8"),
    (dict(expected_fingerprint="zzz"),
     "fingerprint 'abc123' does not match the prepared data's 'zzz'"),
    (dict(perspectives=["long_term", "mid_term"]),
     r"missing perspective\(s\) \['mid_term'\]"),
])
def test_mismatches_are_refused(tmp_path, kw, msg):
  path = _write(tmp_path)
  with pytest.raises(ValueError, match=msg):
    _load(path, **kw)


@pytest.mark.parametrize("bad,kind", [(np.nan, "NaN"), (np.inf, "inf"),
                                      (-np.inf, "inf")])
def test_non_finite_values_are_refused_on_load(tmp_path, bad, kind):
  path = _write(tmp_path)
  mm = np.load(path, mmap_mode="r+")  # corrupt the committed file
  mm[3, 1, 2] = bad
  mm.flush()
  del mm
  with pytest.raises(ValueError, match=rf"{kind} at row 3 \(session 's3'\), "
                     r"perspective 'short_term', dim 2"):
    _load(path)
  _load(path, check_finite=False)  # the check is what refuses


def test_non_finite_chunks_are_checked_beyond_the_first(tmp_path, monkeypatch):
  monkeypatch.setattr(intents, "_CHECK_ROWS", 2)
  values = _values()
  path = _write(tmp_path, values)
  mm = np.load(path, mmap_mode="r+")
  mm[4, 0, 0] = np.nan
  mm.flush()
  del mm
  with pytest.raises(ValueError, match="NaN at row 4"):
    _load(path)


def test_writer_refuses_non_finite_blocks(tmp_path):
  values = _values()
  values[2, 0, 1] = np.inf
  with pytest.raises(ValueError, match=r"session 's2' \(row 2\), perspective "
                     "'long_term'"):
    _write(tmp_path, values)
  assert os.listdir(tmp_path) == []  # temp files discarded


def test_missing_sidecar_is_refused(tmp_path):
  path = _write(tmp_path)
  os.remove(intents.sidecar_path(path))
  with pytest.raises(FileNotFoundError, match="missing sidecar x.json"):
    _load(path)


def test_interrupted_stream_leaves_nothing_loadable(tmp_path):
  with pytest.raises(RuntimeError, match="boom"):
    with intents.IntentArrayWriter(tmp_path / "x.npy", sessions=range(5),
                                   perspectives=P, dim=4, **META) as w:
      w.write(0, _values()[:2])
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []
  w = intents.IntentArrayWriter(tmp_path / "y.npy", sessions=range(5),
                                perspectives=P, dim=4, **META)
  w.write(0, _values()[:4])
  with pytest.raises(ValueError, match=r"row 4 \(session '4'\) was never "
                     "written"):
    w.commit()
  w.discard()
  assert os.listdir(tmp_path) == []


def test_overwrite_replaces_sidecar_with_array(tmp_path):
  _write(tmp_path)
  new = _values(seed=1)
  path = _write(tmp_path, new, fingerprint="def456")
  with pytest.raises(ValueError, match="fingerprint"):
    _load(path)
  np.testing.assert_array_equal(
      _load(path, expected_fingerprint="def456").values, new)


def test_shape_disagreeing_with_sidecar_is_refused(tmp_path):
  path = _write(tmp_path)
  np.save(path, _values(n=6))
  with pytest.raises(ValueError, match="disagrees with sidecar shape"):
    _load(path, expected_rows=6)


def test_build_intent_array_localizes_each_perspective(tmp_path):
  rng = np.random.default_rng(0)
  vocab = {}

  def encode(texts):  # a deterministic text -> vector table
    return np.stack([vocab.setdefault(t, rng.normal(size=6).astype(np.float32))
                     for t in texts])

  items = rng.normal(size=(30, 6)).astype(np.float32)
  texts = {str(s): {"long_term": f"L{s}", "short_term": f"S{s}"}
           for s in range(7)}
  sessions = [4, 2, 6, 0, 1, 3, 5]
  path = intents.build_intent_array(
      tmp_path / "a.npy", texts, sessions, P, encode, items, 3,
      dataset="d", split="train", encoder="toy", fingerprint="fp",
      block_rows=3)
  arr = intents.load_intent_array(path, expected_fingerprint="fp",
                                  expected_rows=7, expected_dim=6,
                                  perspectives=P)
  assert arr.sessions == tuple(map(str, sessions))
  raw = np.stack([[vocab[texts[str(s)][p]] for p in P] for s in sessions])
  want, ids, weights = loc.localize(raw.reshape(14, 6), items, 3, return_ids=True)
  np.testing.assert_allclose(arr.values, want.reshape(7, 2, 6), rtol=0, atol=1e-6)
  # The chosen items and their weights sit beside the array, named in the
  # sidecar, row and perspective aligned with it.
  meta = json.loads(intents.sidecar_path(path).read_text())
  assert meta["localized"] == {"ids": "a.topf_ids.npy", "weights": "a.topf_weights.npy"}
  got_ids, got_w = intents.load_localized(path)
  assert got_ids.dtype == np.int32 and got_ids.shape == (7, 2, 3)
  np.testing.assert_array_equal(got_ids, ids.reshape(7, 2, 3))
  np.testing.assert_allclose(got_w, weights.reshape(7, 2, 3), rtol=0, atol=1e-7)
  # f = 0: raw embeddings, no ids, and the sidecar says so.
  raw_path = intents.build_intent_array(
      tmp_path / "r.npy", texts, sessions, P, encode, items, 0,
      dataset="d", split="train", encoder="toy", fingerprint="fp")
  raw_meta = json.loads(intents.sidecar_path(raw_path).read_text())
  assert raw_meta["localized"] is None and "f = 0" in raw_meta["localized_note"]
  assert intents.load_localized(raw_path) is None
  assert not (tmp_path / "r.topf_ids.npy").exists()
  with pytest.raises(ValueError, match=r"no intent texts for 1 session\(s\)"):
    intents.build_intent_array(tmp_path / "b.npy", texts, [0, 99], P, encode,
                               items, 3, dataset="d", split="train",
                               encoder="toy", fingerprint="fp")


# ---------------------------------------------------------------- texts


def test_read_jsonl_and_csv_agree(tmp_path):
  jl = tmp_path / "i.jsonl"
  jl.write_text(
      json.dumps({"session": 7, "long_term": "Star Wars",
                  "short_term": "Alien", "extra": 1}) + "\n\n" +
      json.dumps({"session": "8", "long_term": "Heat",
                  "short_term": "Fargo, the movie"}) + "\n")
  cs = tmp_path / "i.csv"
  cs.write_text("session,long_term,short_term\n7,Star Wars,Alien\n"
                "8,Heat,\"Fargo, the movie\"\n")
  a = intents.read_intent_texts(jl, P, expected_sessions=[7, 8])
  b = intents.read_intent_texts(cs, P, expected_sessions=["7", "8"])
  assert a == b == {"7": {"long_term": "Star Wars", "short_term": "Alien"},
                    "8": {"long_term": "Heat",
                          "short_term": "Fargo, the movie"}}


@pytest.mark.parametrize("body,msg", [
    ('{"session": 1, "long_term": "a", "short_term": "b"}\n{"session": 2, ',
     r"i.jsonl:2: invalid JSON"),
    ('{"session": 1, "long_term": "a"}\n', r"i.jsonl:1: session '1' lacks "
     r"perspective 'short_term'"),
    ('{"long_term": "a", "short_term": "b"}\n', r"i.jsonl:1: record has no "
     "'session'"),
    ('{"session": 1, "long_term": "a", "short_term": "b"}\n\n'
     '{"session": 1, "long_term": "a", "short_term": "b"}\n',
     r"i.jsonl:3: session '1' repeats \(first on line 1\)"),
    ('{"session": 1, "long_term": "  ", "short_term": "b"}\n',
     r"i.jsonl:1: perspective 'long_term' of session '1' is blank"),
    ('{"session": 1, "long_term": 3, "short_term": "b"}\n',
     r"i.jsonl:1: perspective 'long_term' .* is int"),
    ('[1, 2]\n', r"i.jsonl:1: expected a JSON object"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, body, msg):
  path = tmp_path / "i.jsonl"
  path.write_text(body)
  with pytest.raises(ValueError, match=msg):
    intents.read_intent_texts(path, P)


def test_csv_errors_and_missing_sessions(tmp_path):
  path = tmp_path / "i.csv"
  path.write_text("session,long_term\n1,a\n")
  with pytest.raises(ValueError, match=r"i.csv:2: session '1' lacks "
                     "perspective 'short_term'"):
    intents.read_intent_texts(path, P)
  path.write_text("session,long_term,short_term\n1,a,b\n2,c,d\n")
  with pytest.raises(ValueError, match=r"2 expected session\(s\) missing, "
                     r"e.g. \['3', '4'\]"):
    intents.read_intent_texts(path, P, expected_sessions=[1, 3, 2, 4])
  assert intents.read_intent_texts(path, ["long_term"]) == {
      "1": {"long_term": "a"}, "2": {"long_term": "c"}}
  with pytest.raises(ValueError, match="unknown intent text format"):
    intents.read_intent_texts(_touch(tmp_path / "i.txt"), P)


def _touch(p):
  p.write_text("")
  return p


# ---------------------------------------------------------------- official


def _official_csv(path, vecs, col, nested=True):
  rows = ["," + col]
  for i, v in enumerate(vecs):
    cell = str([v.tolist()] if nested else v.tolist())
    rows.append(f'{i},"{cell}"')
  path.write_text("\n".join(rows) + "\n")


def test_official_string_format_imports(tmp_path):
  rng = np.random.default_rng(0)
  long_v = rng.normal(size=(4, 5))
  short_v = rng.normal(size=(4, 5))
  _official_csv(tmp_path / "long.csv", long_v, "longterm_emb", nested=True)
  _official_csv(tmp_path / "short.csv", short_v, "shortterm_emb",
                nested=False)
  path = intents.import_string_embeddings(
      tmp_path / "off.npy",
      {"long_term": (tmp_path / "long.csv", "longterm_emb"),
       "short_term": (tmp_path / "short.csv", "shortterm_emb")},
      **{**META, "encoder": "bert-base-uncased"})
  arr = intents.load_intent_array(path, expected_fingerprint="abc123",
                                  expected_rows=4, expected_dim=5,
                                  perspectives=P)
  np.testing.assert_array_equal(arr.values[:, 0], long_v.astype(np.float32))
  np.testing.assert_array_equal(arr.values[:, 1], short_v.astype(np.float32))
  assert arr.sessions == ("0", "1", "2", "3")


def test_plain_text_cells_and_session_column(tmp_path):
  txt = tmp_path / "e.txt"
  txt.write_text("[1.0, 2.0]\n\n[3, -4e-1,]\n")
  sessions, arr = intents.read_string_embeddings(txt)
  assert sessions == ["0", "1"]
  np.testing.assert_array_equal(arr, np.array([[1, 2], [3, -0.4]],
                                              np.float32))
  cs = tmp_path / "e.csv"
  cs.write_text('sid,emb\n17,"[1, 2]"\n3,"[3, 4]"\n')
  sessions, _ = intents.read_string_embeddings(cs, "emb",
                                               session_column="sid")
  assert sessions == ["17", "3"]


@pytest.mark.parametrize("cells,msg", [
    (['[0.1, 0.2]', '[0.1, abc]'], r"e.txt:2: element 1 'abc' is not a "
     "number"),
    (['[0.1, 0.2]', '[0.1, 0.2, 0.3]'], r"e.txt:2: embedding has 3 values but "
     "line 1 has 2"),
    (['0.1, 0.2'], r"e.txt:1: expected a bracketed list"),
    (['[0.1, nan]'], r"e.txt:1: element 1 is 'nan' \(not finite\)"),
    (['[[0.1], [0.2]]'], r"e.txt:1: cell holds several rows"),
    (['[]'], r"e.txt:1: empty embedding"),
])
def test_malformed_cells_name_their_line(tmp_path, cells, msg):
  path = tmp_path / "e.txt"
  path.write_text("\n".join(cells) + "\n")
  with pytest.raises(ValueError, match=msg):
    intents.read_string_embeddings(path)


def test_malformed_csv_cell_names_its_line(tmp_path):
  path = tmp_path / "long.csv"
  path.write_text(',longterm_emb\n0,"[[0.1, 0.2]]"\n1,"[[0.1, 0.x]]"\n')
  with pytest.raises(ValueError, match=r"long.csv:3: element 1 '0.x'"):
    intents.read_string_embeddings(path, "longterm_emb")
  with pytest.raises(ValueError, match=r"no column 'emb'; header has"):
    intents.read_string_embeddings(path, "emb")


def test_official_files_with_different_sessions_are_refused(tmp_path):
  _official_csv(tmp_path / "a.csv", np.ones((3, 2)), "e")
  _official_csv(tmp_path / "b.csv", np.ones((2, 2)), "e")
  with pytest.raises(ValueError, match=r"b.csv: sessions differ"):
    intents.import_string_embeddings(
        tmp_path / "o.npy", {"long_term": (tmp_path / "a.csv", "e"),
                             "short_term": (tmp_path / "b.csv", "e")}, **META)
