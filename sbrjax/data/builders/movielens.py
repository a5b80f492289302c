"""MovieLens builders: ``movielens`` (per-user ratings) + ``movielens_items``.

Configs:
  * ``ml-100k``: GroupLens ``u.data`` + ``u.item`` (latin-1, tab / '|'), or
    RecBole atomic ``ml-100k.inter`` + ``ml-100k.item`` (tab, typed header),
    looked up in that order in ``config.data.manual_dir``.  When neither pair
    is there and downloads are allowed, the atomic files bundled in the
    recbole==1.2.1 wheel are used (fetched with pip, so this works wherever
    the package index does).
  * ``ml-1m``: GroupLens ``ratings.dat`` + ``movies.dat`` ('::', latin-1), or
    downloaded from GroupLens' ml-1m.zip.

Item text is the movie title without the "(year)" suffix; year and genres are
extra fields.
"""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from sbrjax.data import raw
from sbrjax.data.builders import (SourceBuilder, interaction_features,
                                  item_base_features, item_examples,
                                  user_examples)

_CONFIGS = [
    tfds.core.BuilderConfig(name="ml-100k",
                            description="MovieLens 100K (943 users)."),
    tfds.core.BuilderConfig(name="ml-1m",
                            description="MovieLens 1M (6,040 users)."),
]


def _ml100k_files(builder: SourceBuilder) -> tuple:
  """(ratings path, items path, ratings parser, items parser) for ml-100k."""
  dirs = builder._manual_dirs() + [  # pylint: disable=protected-access
      pathlib.Path(builder.raw_options.download_dir)]
  for names, parsers in (
      (("u.data", "u.item"), (raw.parse_grouplens_100k_ratings,
                              raw.parse_grouplens_100k_items)),
      (("ml-100k.inter", "ml-100k.item"), (raw.parse_recbole_inter,
                                           raw.parse_recbole_items))):
    paths = [raw.find_file(dirs, n) for n in names]
    if all(paths):
      return (*paths, *parsers)
  if not builder.raw_options.download:
    raise raw.MissingRawFilesError(
        "movielens/ml-100k: raw files missing and downloads are disabled "
        "(config.data.download=False). Put either u.data and u.item "
        "(GroupLens) or ml-100k.inter and ml-100k.item (RecBole atomic) in "
        f"{dirs[0]} (config.data.manual_dir); searched: "
        f"{', '.join(str(d) for d in dirs)}.")
  files = raw.extract_recbole_ml100k(
      pathlib.Path(builder.raw_options.download_dir))
  return (files["ml-100k.inter"], files["ml-100k.item"],
          raw.parse_recbole_inter, raw.parse_recbole_items)


def _ml1m_files(builder: SourceBuilder) -> tuple:
  dirs = builder._manual_dirs()  # pylint: disable=protected-access
  download_dir = pathlib.Path(builder.raw_options.download_dir)
  names = ("ratings.dat", "movies.dat")
  paths = [raw.find_file(dirs + [download_dir], n) for n in names]
  if not all(paths):
    if builder.raw_options.download:
      try:
        z = builder._resolve(["ml-1m.zip"])["ml-1m.zip"]  # pylint: disable=protected-access
      except raw.MissingRawFilesError as e:
        raise raw.MissingRawFilesError(
            f"movielens/ml-1m: put ratings.dat and movies.dat in "
            f"config.data.manual_dir ({dirs[0] if dirs else 'unset'}).\n{e}"
        ) from None
      got = raw.extract_zip_members(
          z, {"ml-1m/ratings.dat": "ratings.dat",
              "ml-1m/movies.dat": "movies.dat"}, download_dir)
      paths = [got[n] for n in names]
    else:
      missing = [n for n, p in zip(names, paths) if p is None]
      raise raw.MissingRawFilesError(
          f"movielens/ml-1m: raw files missing: {', '.join(missing)} "
          f"(downloads are disabled: config.data.download=False). Put them "
          f"in {dirs[0] if dirs else download_dir} (config.data.manual_dir); "
          f"searched: {', '.join(str(d) for d in dirs + [download_dir])}.")
  return (*paths, raw.parse_ml1m_ratings, raw.parse_ml1m_items)


def _files(builder: SourceBuilder) -> tuple:
  if builder.builder_config.name == "ml-100k":
    return _ml100k_files(builder)
  return _ml1m_files(builder)


class Movielens(SourceBuilder, skip_registration=True):
  """MovieLens ratings, one example per user, in time order."""

  name = "movielens"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = _CONFIGS

  def _features(self):
    return interaction_features()

  def raw_files(self):
    return [_files(self)[0]]

  def _generate_examples(self):
    ratings_path, _, parse_ratings, _ = _files(self)
    yield from user_examples(raw.require_interactions(parse_ratings(ratings_path),
                                                      ratings_path))


class MovielensItems(SourceBuilder, skip_registration=True):
  """MovieLens movies: id, title text, year and genres."""

  name = "movielens_items"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = _CONFIGS

  def _features(self):
    spec = item_base_features()
    spec.update({"year": tfds.features.Text(),
                 "genres": tfds.features.Sequence(tfds.features.Text())})
    return tfds.features.FeaturesDict(spec)

  def raw_files(self):
    return [_files(self)[1]]

  def _generate_examples(self):
    _, items_path, _, parse_items = _files(self)
    yield from item_examples(
        parse_items(items_path),
        lambda it: {"year": it.extra["year"], "genres": it.extra["genres"]})
