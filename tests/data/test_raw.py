"""Raw-file parsers and file lookup (sbrjax.data.raw)."""

import functools
import gzip
import http.server
import json
import threading

import numpy as np
import pytest

from sbrjax.data import raw, rawfiles

ROWS = [(1, 10, 5, 1000), (2, 11, 3, 1100), (1, 12, 4, 900)]


def test_amazon_reviews_gzip_and_plain_parse_identically(tmp_path):
  for gz, name in ((True, "r.json.gz"), (False, "r.json")):
    rawfiles.write_amazon(tmp_path, name, "m_" + name, ROWS, [], gz=gz)
    inter = raw.parse_amazon_reviews(tmp_path / name)
    assert list(inter.users) == ["A1", "A2", "A1"]
    assert list(inter.items) == ["B000000010", "B000000011", "B000000012"]
    np.testing.assert_array_equal(inter.timestamps, [1000, 1100, 900])
    np.testing.assert_array_equal(inter.ratings, [5.0, 3.0, 4.0])


def test_bad_json_line_reports_file_and_line(tmp_path):
  lines = [json.dumps({"reviewerID": "A", "asin": "B", "unixReviewTime": 1})
           ] * 16 + ["{not json"]
  path = tmp_path / "reviews.json"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(raw.RawDataError, match=r"bad JSON at reviews\.json:17"):
    raw.parse_amazon_reviews(path)


def test_gzip_bad_line_and_missing_field_report_line(tmp_path):
  path = tmp_path / "reviews.json.gz"
  with gzip.open(path, "wt") as f:
    f.write(json.dumps({"reviewerID": "A", "asin": "B",
                        "unixReviewTime": 1}) + "\n")
    f.write(json.dumps({"reviewerID": "A", "unixReviewTime": 2}) + "\n")
  with pytest.raises(raw.RawDataError,
                     match=r"missing field 'asin' at reviews\.json\.gz:2"):
    raw.parse_amazon_reviews(path)


def test_meta_python_literals_titles_descriptions_placeholders(tmp_path):
  meta = [{"asin": "X1", "title": "  A   title ", "description": "d"},
          {"asin": "X2", "description": ["first part", "second"]},
          {"asin": "X3", "title": "", "categories": [["Beauty"]]},
          {"asin": "X1", "title": "duplicate is ignored"}]
  path = tmp_path / "meta_Beauty.json.gz"
  with gzip.open(path, "wt") as f:
    f.write("".join(repr(m) + "\n" for m in meta))
  items = raw.parse_amazon_meta(path)
  assert [i.item_id for i in items] == ["X1", "X2", "X3"]
  assert [i.text for i in items] == ["A title", "first part second",
                                     "item X3"]
  assert [i.text_is_placeholder for i in items] == [False, False, True]
  # Python literals are rejected where JSON is required, with the line.
  with pytest.raises(raw.RawDataError, match=r"meta_Beauty\.json\.gz:1"):
    list(raw.iter_records(path, allow_python_literals=False))


def test_meta_neither_json_nor_literal_reports_line(tmp_path):
  path = tmp_path / "meta.json"
  path.write_text('{"asin": "a"}\n\n{"asin": __import__("os")}\n')
  with pytest.raises(raw.RawDataError, match=r"meta\.json:3"):
    raw.parse_amazon_meta(path)


def test_grouplens_recbole_and_ml1m_formats(tmp_path):
  titles = {10: "Toy Story (1995)", 11: "Café (1996)", 12: "No Year"}
  rawfiles.write_grouplens_100k(tmp_path / "gl", ROWS, titles)
  rawfiles.write_recbole_100k(tmp_path / "rb", ROWS,
                              {10: "Toy Story", 11: "Café", 12: "No Year"})
  rawfiles.write_ml1m(tmp_path / "m1", ROWS, titles)
  for inter in (raw.parse_grouplens_100k_ratings(tmp_path / "gl" / "u.data"),
                raw.parse_recbole_inter(tmp_path / "rb" / "ml-100k.inter"),
                raw.parse_ml1m_ratings(tmp_path / "m1" / "ratings.dat")):
    assert list(inter.users) == ["1", "2", "1"]
    assert list(inter.items) == ["10", "11", "12"]
    np.testing.assert_array_equal(inter.timestamps, [1000, 1100, 900])
  gl = raw.parse_grouplens_100k_items(tmp_path / "gl" / "u.item")
  assert [i.text for i in gl] == ["Toy Story", "Café", "No Year"]
  assert gl[0].extra["year"] == "1995" and gl[2].extra["year"] == "1995"
  assert len(gl[0].extra["genres"]) == 1
  rb = raw.parse_recbole_items(tmp_path / "rb" / "ml-100k.item")
  assert [i.text for i in rb] == ["Toy Story", "Café", "No Year"]
  assert rb[0].extra == {"title": "Toy Story", "year": "1995",
                         "genres": ["Drama", "Comedy"]}
  m1 = raw.parse_ml1m_items(tmp_path / "m1" / "movies.dat")
  assert [(i.text, i.extra["year"]) for i in m1] == [
      ("Toy Story", "1995"), ("Café", "1996"), ("No Year", "")]


def test_bad_delimited_rows_report_line(tmp_path):
  (tmp_path / "ratings.dat").write_text("1::2::3::4\n1::2::x::4\n")
  with pytest.raises(raw.RawDataError, match=r"ratings\.dat:2"):
    raw.parse_ml1m_ratings(tmp_path / "ratings.dat")
  (tmp_path / "u.item").write_text("1|Only|three\n")
  with pytest.raises(raw.RawDataError, match=r"u\.item:1"):
    raw.parse_grouplens_100k_items(tmp_path / "u.item")


def test_missing_files_are_listed_with_where_to_put_them(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "meta_Beauty.json").write_text("")  # un-.gz twin counts
  with pytest.raises(raw.MissingRawFilesError) as e:
    raw.resolve_files(["reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"],
                      [manual], tmp_path / "dl", False, "amazon/beauty2014")
  msg = str(e.value)
  assert "reviews_Beauty_5.json.gz" in msg and str(manual) in msg
  assert "meta_Beauty" not in msg.split("Put them")[0]
  assert "config.data.download=False" in msg
  assert raw.PUBLIC_URLS["reviews_Beauty_5.json.gz"] in msg


def test_unreachable_url_fails_fast_with_clear_message(tmp_path):
  with pytest.raises(raw.MissingRawFilesError, match="download from .* failed"):
    raw.resolve_files(["f.json.gz"], [], tmp_path, True, "amazon/x",
                      urls={"f.json.gz": "http://127.0.0.1:9/f.json.gz"})


def test_download_from_local_server(tmp_path):
  served = tmp_path / "served"
  served.mkdir()
  rawfiles.write_amazon(served, "r.json.gz", "m.json.gz", ROWS, [])
  handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                              directory=str(served))
  handler.log_message = lambda *a: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    url = f"http://127.0.0.1:{server.server_address[1]}/r.json.gz"
    got = raw.resolve_files(["r.json.gz"], [], tmp_path / "dl", True, "t",
                            urls={"r.json.gz": url})
  finally:
    server.shutdown()
    server.server_close()
  assert got["r.json.gz"] == tmp_path / "dl" / "r.json.gz"
  assert len(raw.parse_amazon_reviews(got["r.json.gz"])) == 3
  assert not list((tmp_path / "dl").glob(".part-*"))
