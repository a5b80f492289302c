"""Writers of small raw files in the real published formats.

Tests and tiny end-to-end configs use these to exercise the real parsers and
builders without the real datasets: point ``config.data.manual_dir`` at the
folder and set ``config.data.download=False``.
"""

from __future__ import annotations

import gzip
import json
import pathlib
from typing import Iterable, Optional, Sequence

import numpy as np

Rating = tuple  # (user, item, rating, unix time)


def synthetic_ratings(num_users: int = 30, num_items: int = 40,
                      per_user: int = 12, seed: int = 0,
                      start: int = 880_000_000) -> list:
  """Deterministic (user, item, rating, time) rows, item ids 1.., user 1..

  Each user rates ``per_user`` distinct items, 60 s apart, with a 2-hour
  break in the middle (so MovieLens sessionization yields 2 sessions/user).
  """
  rng = np.random.default_rng(seed)
  rows = []
  for u in range(1, num_users + 1):
    items = rng.choice(np.arange(1, num_items + 1), per_user, replace=False)
    t = start + int(rng.integers(0, 10_000))
    for k, i in enumerate(items):
      t += 60 if k != per_user // 2 else 7200
      rows.append((u, int(i), int(rng.integers(1, 6)), t))
  return rows


def _write(path: pathlib.Path, text: str, gz: bool = False,
           encoding: str = "utf-8") -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if gz:
    with gzip.open(path, "wt", encoding=encoding) as f:
      f.write(text)
  else:
    path.write_text(text, encoding=encoding)
  return path


def write_grouplens_100k(folder, ratings: Sequence[Rating],
                         titles: dict) -> None:
  """u.data (tab) and u.item ('|', latin-1, 19 genre flags)."""
  folder = pathlib.Path(folder)
  _write(folder / "u.data",
         "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings),
         encoding="latin-1")
  lines = []
  for i, title in titles.items():
    flags = ["0"] * 19
    flags[(int(i) % 18) + 1] = "1"
    lines.append(f"{i}|{title}|01-Jan-1995||http://x/{i}|" + "|".join(flags))
  _write(folder / "u.item", "\n".join(lines) + "\n", encoding="latin-1")


def write_recbole_100k(folder, ratings: Sequence[Rating], titles: dict,
                       years: Optional[dict] = None) -> None:
  """RecBole atomic ml-100k.inter / ml-100k.item with typed headers."""
  folder = pathlib.Path(folder)
  _write(folder / "ml-100k.inter",
         "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" +
         "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
  years = years or {}
  _write(folder / "ml-100k.item",
         "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
         "class:token_seq\n" +
         "".join(f"{i}\t{t}\t{years.get(i, '1995')}\tDrama Comedy\n"
                 for i, t in titles.items()))


def write_ml1m(folder, ratings: Sequence[Rating], titles: dict) -> None:
  """ratings.dat and movies.dat ('::', latin-1)."""
  folder = pathlib.Path(folder)
  _write(folder / "ratings.dat",
         "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings),
         encoding="latin-1")
  _write(folder / "movies.dat",
         "".join(f"{i}::{t}::Drama|Comedy\n" for i, t in titles.items()),
         encoding="latin-1")


def write_amazon(folder, reviews_name: str, meta_name: str,
                 ratings: Sequence[Rating], meta: Iterable[dict],
                 gz: bool = True, python_literal_meta: bool = False) -> None:
  """Review JSON lines and metadata lines (JSON, or Python dict literals as
  in the 2014 release); file names as published, gzip or plain content."""
  folder = pathlib.Path(folder)
  _write(folder / reviews_name,
         "".join(json.dumps({"reviewerID": f"A{u}", "asin": f"B{i:09d}",
                             "overall": float(r), "unixReviewTime": t,
                             "reviewText": "fine"}) + "\n"
                 for u, i, r, t in ratings), gz=gz)
  _write(folder / meta_name,
         "".join((repr(m) if python_literal_meta else json.dumps(m)) + "\n"
                 for m in meta), gz=gz)
