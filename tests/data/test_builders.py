"""tfds builders (sbrjax.data.builders) on small files in the real formats."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from sbrjax.data import builders, raw, rawfiles
from sbrjax.data.builders import amazon

REPO = pathlib.Path(__file__).resolve().parents[2]
# User 2 appears first; user 1's rows are out of time order with a tie.
ROWS = [(2, 11, 3, 500), (1, 10, 5, 1000), (1, 12, 4, 900),
        (1, 13, 4, 1000), (2, 10, 1, 400)]
TITLES = {10: "Toy Story (1995)", 11: "Heat (1995)", 12: "Fargo (1996)",
          13: "Babe (1995)"}


def _opts(manual):
  return builders.RawOptions(manual_dir=str(manual), download=False)


def _check_interactions(c, prefix=""):
  assert c.user_ids == [f"{prefix}2", f"{prefix}1"]
  np.testing.assert_array_equal(c.users, [0, 0, 1, 1, 1])
  np.testing.assert_array_equal(c.timestamps, [400, 500, 900, 1000, 1000])


def test_grouplens_ml100k(tmp_path):
  rawfiles.write_grouplens_100k(tmp_path / "manual", ROWS, TITLES)
  c = builders.load_canonical("movielens", "ml-100k", tmp_path / "d",
                              _opts(tmp_path / "manual"))
  _check_interactions(c)
  assert c.items.tolist() == ["10", "11", "12", "10", "13"]
  assert c.item_ids == ["10", "11", "12", "13"]
  assert c.item_texts == ["Toy Story", "Heat", "Fargo", "Babe"]
  assert c.item_extra[2]["year"] == "1996"
  assert c.name == "movielens/ml-100k"
  assert list((tmp_path / "d" / "tfds").glob("*/movielens/ml-100k"))  # tfds/<raw key>/...
  assert list((tmp_path / "d" / "tfds").rglob("*.array_record*"))


def test_recbole_atomic_ml100k_in_variant_subfolder(tmp_path):
  rawfiles.write_recbole_100k(tmp_path / "manual" / "ml-100k", ROWS,
                              {k: v[:-7] for k, v in TITLES.items()})
  c = builders.load_canonical("movielens", "ml-100k", tmp_path / "d",
                              _opts(tmp_path / "manual"))
  _check_interactions(c)
  assert c.item_texts == ["Toy Story", "Heat", "Fargo", "Babe"]
  assert c.item_extra[0]["genres"] == ["Drama", "Comedy"]


def test_ml1m_dat(tmp_path):
  rawfiles.write_ml1m(tmp_path / "manual", ROWS, TITLES)
  c = builders.load_canonical("movielens", "ml-1m", tmp_path / "d",
                              _opts(tmp_path / "manual"))
  _check_interactions(c)
  assert c.item_extra[1] == {"year": "1995", "genres": ["Drama", "Comedy"]}


@pytest.mark.parametrize("variant,gz,literal", [
    ("music", True, False), ("beauty", False, False),
    ("beauty2014", True, True)])
def test_amazon_configs(tmp_path, variant, gz, literal):
  reviews, meta_name = amazon.FILES[variant]
  meta = [{"asin": "B000000010", "title": "Lipstick"},
          {"asin": "B000000011", "description": ["Soft", "brush"]},
          {"asin": "B000000012", "title": ""}]
  rawfiles.write_amazon(tmp_path / "manual", reviews, meta_name, ROWS, meta,
                        gz=gz, python_literal_meta=literal)
  c = builders.load_canonical("amazon", variant, tmp_path / "d",
                              _opts(tmp_path / "manual"))
  _check_interactions(c, prefix="A")
  assert c.items[0] == "B000000010"
  assert c.item_texts == ["Lipstick", "Soft brush", "item B000000012"]
  assert c.item_placeholder.tolist() == [False, False, True]
  assert c.item_extra[1]["description"] == "Soft brush"


def test_amazon_plain_file_without_gz_suffix(tmp_path):
  rawfiles.write_amazon(tmp_path / "m", "Prime_Pantry_5.json",
                        "meta_Prime_Pantry.json", ROWS,
                        [{"asin": "B000000010", "title": "Tea"}], gz=False)
  c = builders.load_canonical("amazon", "pantry", tmp_path / "d",
                              _opts(tmp_path / "m"))
  assert len(c.items) == 5 and c.item_texts == ["Tea"]


def test_missing_raw_files_say_what_and_where(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  with pytest.raises(raw.MissingRawFilesError) as e:
    builders.load_canonical("amazon", "beauty2014", tmp_path / "d",
                            _opts(manual))
  assert "reviews_Beauty_5.json.gz" in str(e.value)
  assert str(manual) in str(e.value)
  with pytest.raises(raw.MissingRawFilesError,
                     match=r"u\.data and u\.item .* ml-100k\.inter"):
    builders.load_canonical("movielens", "ml-100k", tmp_path / "d",
                            _opts(manual))
  with pytest.raises(raw.MissingRawFilesError, match=r"ratings\.dat, movies"):
    builders.load_canonical("movielens", "ml-1m", tmp_path / "d",
                            _opts(manual))


def test_malformed_raw_file_names_file_and_line(tmp_path):
  reviews, meta_name = amazon.FILES["music"]
  rawfiles.write_amazon(tmp_path / "m", reviews, meta_name, ROWS, [],
                        gz=False)
  with open(tmp_path / "m" / reviews, "a") as f:
    f.write('{"reviewerID": "A9", "asin": \n')
  with pytest.raises(raw.RawDataError,
                     match=r"bad JSON at Musical_Instruments_5\.json\.gz:6"):
    builders.load_canonical("amazon", "music", tmp_path / "d",
                            _opts(tmp_path / "m"))


def test_unknown_variant_and_dataset(tmp_path):
  with pytest.raises(ValueError, match="Unsupported variant 'ml-20m'"):
    builders.load_canonical("movielens", "ml-20m", tmp_path)
  with pytest.raises(ValueError, match="Unsupported dataset: 'netflix'"):
    builders.load_canonical("netflix", "x", tmp_path)


def test_builds_and_reads_without_importing_tensorflow(tmp_path):
  # A fresh interpreter: build + read back, then check TensorFlow was never
  # imported (in this environment it is not even installed).
  rawfiles.write_grouplens_100k(tmp_path / "manual", ROWS, TITLES)
  code = (
      "import sys\n"
      "from sbrjax.data import builders\n"
      f"c = builders.load_canonical('movielens', 'ml-100k', "
      f"{str(tmp_path / 'd')!r}, builders.RawOptions("
      f"manual_dir={str(tmp_path / 'manual')!r}, download=False))\n"
      "assert len(c.items) == 5, c\n"
      "assert 'tensorflow' not in sys.modules, 'TF imported'\n"
      "print('OK')\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, check=False,
                        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith("OK")
