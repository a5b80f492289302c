"""tensorflow-datasets builders for the raw recommendation datasets.

Layout: two builders per source, sharing configs (variants) and file lookup:

  * ``movielens`` / ``amazon``: one example per user, holding the user's
    interactions in time order (item raw ids, timestamps, ratings).
  * ``movielens_items`` / ``amazon_items``: one example per catalog item,
    holding its raw id, display text and source-specific extra fields.

Why two builders: a tfds dataset has one feature spec for all its splits, and
users and items are different records.  Packing item texts into the user
records would duplicate them per interaction; a second split with a superset
spec would leave half of every record empty.  Two small builders keep each
spec exact, version independently, and are joined in ``load_canonical``.

Both are written as array_record and read back with
``builder.as_data_source()``, which needs no TensorFlow.

``load_canonical`` is the entry point: it runs (or reuses) both builders under
``<data_dir>/tfds`` and returns plain numpy arrays.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pathlib
import tempfile
from typing import Optional

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from sbrjax import fileio
from sbrjax.data import digest
from sbrjax.data import raw

FILE_FORMAT = "array_record"


@dataclasses.dataclass(frozen=True)
class RawOptions:
  """Where builders look for raw files.

  Attributes:
    manual_dir: folder with raw files provided by hand ("" -> none).
    download_dir: folder for downloads (also searched for raw files).
    download: whether missing files may be fetched.
  """
  manual_dir: str = ""
  download_dir: str = ""
  download: bool = True


def interaction_features() -> tfds.features.FeaturesDict:
  """Feature spec of the per-user interaction builders."""
  return tfds.features.FeaturesDict({
      "user_id": tfds.features.Text(),
      # Rank of the user's first line in the raw file: keeps the raw order.
      "user_order": np.int64,
      "item_ids": tfds.features.Sequence(tfds.features.Text()),
      "timestamps": tfds.features.Tensor(shape=(None,), dtype=np.int64),
      "ratings": tfds.features.Tensor(shape=(None,), dtype=np.float32),
  })


def item_base_features() -> dict:
  """Fields every item builder has; sources add their own extras."""
  return {
      "item_id": tfds.features.Text(),
      "item_order": np.int64,
      "text": tfds.features.Text(),
      "text_is_placeholder": np.bool_,
  }


def user_examples(inter: raw.RawInteractions):
  """Yields (key, example) per user: interactions sorted by time.

  Users come in order of their first line; a user's interactions are sorted
  by timestamp with ties kept in file order (stable sort).
  """
  n = len(inter)
  if n == 0:
    return
  uniq, first, inverse = np.unique(inter.users.astype(str), return_index=True,
                                   return_inverse=True)
  rank = np.empty(len(uniq), np.int64)
  rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
  user_rank = rank[inverse]
  order = np.lexsort((np.arange(n), inter.timestamps, user_rank))
  ranks_sorted = user_rank[order]
  bounds = np.flatnonzero(np.diff(ranks_sorted)) + 1
  for idx in np.split(order, bounds):
    r = int(user_rank[idx[0]])
    yield r, {
        "user_id": str(inter.users[idx[0]]),
        "user_order": r,
        "item_ids": [str(x) for x in inter.items[idx]],
        "timestamps": inter.timestamps[idx],
        "ratings": inter.ratings[idx],
    }


def _as_str(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


@dataclasses.dataclass(frozen=True)
class CanonicalData:
  """A source's interactions and items as plain arrays.

  Attributes:
    name: "<dataset>/<variant>".
    user_ids: [num_users] raw user ids in raw-file order of first appearance.
    users: int64 [n] index into ``user_ids``; rows sorted by (user, time,
      file order).
    items: object [n] item raw id (str) of each interaction.
    timestamps: int64 [n].
    item_ids: [m] raw ids of every item the metadata describes.
    item_texts: [m] their texts.
    item_placeholder: bool [m] whether the text is the placeholder.
    item_extra: [m] dicts of extra fields (title, year, genres, ...).
    versions: builder name -> version string (part of cache keys).
  """
  name: str
  user_ids: list
  users: np.ndarray
  items: np.ndarray
  timestamps: np.ndarray
  item_ids: list
  item_texts: list
  item_placeholder: np.ndarray
  item_extra: list
  versions: dict


def builder_classes(dataset: str):
  """(interaction builder class, item builder class) of a dataset."""
  # Imported here: the modules import this one for the shared specs.
  from sbrjax.data.builders import amazon, movielens  # pylint: disable=g-import-not-at-top
  table = {
      "movielens": (movielens.Movielens, movielens.MovielensItems),
      "amazon": (amazon.Amazon, amazon.AmazonItems),
  }
  if dataset not in table:
    raise ValueError(f"Unsupported dataset: {dataset!r}; choose one of "
                     f"{sorted(table)}")
  return table[dataset]


def variants(dataset: str) -> list:
  """Config names of a dataset's builders."""
  return [c.name for c in builder_classes(dataset)[0].BUILDER_CONFIGS]


def versions(dataset: str) -> dict:
  return {cls.name: str(cls.VERSION) for cls in builder_classes(dataset)}


def _builder(cls, variant: str, tfds_dir: str, options: RawOptions):
  return cls(data_dir=tfds_dir, config=variant, file_format=FILE_FORMAT, raw_options=options)


def _options(dataset: str, variant: str, data_dir: pathlib.Path,
             options: Optional[RawOptions]) -> RawOptions:
  options = options or RawOptions()
  if not options.download_dir:
    options = dataclasses.replace(
        options, download_dir=str(data_dir / "downloads" / dataset / variant))
  return options


def raw_sources(dataset: str, variant: str, data_dir,
                options: Optional[RawOptions] = None) -> dict:
  """The raw files each builder reads, with their digests, and a combined key.

  Resolves (and, where allowed, downloads) the files without building
  anything. File digests are memoised by path, size and mtime in
  ``<data_dir>/digests.json``, so a large unchanged file is hashed once.

  Returns:
    ``{"builders": {builder name: {"version", "files": [{"path", "size",
    "sha256"}], "key"}}, "key": digest of everything}``.
  """
  data_dir = pathlib.Path(data_dir)
  if variant not in variants(dataset):
    raise ValueError(f"Unsupported variant {variant!r} for {dataset}; choose "
                     f"one of {variants(dataset)}")
  options = _options(dataset, variant, data_dir, options)
  memo = data_dir / "digests.json"
  out = {}
  for cls in builder_classes(dataset):
    b = _builder(cls, variant, str(data_dir / "tfds"), options)
    files = [{"path": str(pathlib.Path(p).resolve()), "size": os.path.getsize(p),
              "sha256": digest.file_digest(p, memo_path=memo)} for p in b.raw_files()]
    desc = {"builder": cls.name, "version": str(cls.VERSION), "variant": variant,
            "files": [{"name": pathlib.Path(f["path"]).name, "sha256": f["sha256"]}
                      for f in files]}
    out[cls.name] = {"version": str(cls.VERSION), "files": files,
                     "key": digest.tree_digest(desc)}
  return {"builders": out, "key": digest.tree_digest({k: v["key"] for k, v in out.items()})}


def load_canonical(dataset: str, variant: str, data_dir,
                   options: Optional[RawOptions] = None,
                   sources: Optional[dict] = None) -> CanonicalData:
  """Builds (once per raw content) and reads both builders of ``dataset/variant``.

  Each builder's tfds files live in ``<data_dir>/tfds/<key>/``, where the key
  digests the builder, its version and the bytes of the raw files it reads,
  recorded in ``sources.json`` there: changed raw files are parsed again,
  unchanged ones reuse the earlier build.

  Args:
    dataset: "movielens" or "amazon".
    variant: a builder config name (see ``variants``).
    data_dir: root folder; tfds data lives in ``<data_dir>/tfds``.
    options: raw file lookup; default: downloads into ``<data_dir>/downloads``.
    sources: ``raw_sources(...)`` when the caller has it already.

  Returns:
    The canonical arrays; ``versions`` includes the raw key.
  """
  data_dir = pathlib.Path(data_dir)
  inter_cls, item_cls = builder_classes(dataset)
  options = _options(dataset, variant, data_dir, options)
  sources = sources or raw_sources(dataset, variant, data_dir, options)
  built = {}
  for cls in (inter_cls, item_cls):
    info = sources["builders"][cls.name]
    tfds_dir = data_dir / "tfds" / info["key"]
    b = _builder(cls, variant, str(tfds_dir), options)
    b.download_and_prepare()
    record = tfds_dir / "sources.json"
    if not record.exists():
      fd, tmp = tempfile.mkstemp(dir=tfds_dir, suffix=".tmp")
      with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
      fileio.publish(tmp, record)
    built[cls] = b.as_data_source()["train"]
  sources_by_cls = built
  user_recs = sorted((sources_by_cls[inter_cls][i] for i in
                      range(len(sources_by_cls[inter_cls]))),
                     key=lambda r: int(r["user_order"]))
  lengths = np.array([len(r["timestamps"]) for r in user_recs], np.int64)
  users = np.repeat(np.arange(len(user_recs), dtype=np.int64), lengths)
  items = np.array([_as_str(x) for r in user_recs for x in r["item_ids"]],
                   dtype=object)
  ts = (np.concatenate([np.asarray(r["timestamps"], np.int64)
                        for r in user_recs])
        if user_recs else np.zeros(0, np.int64))

  item_recs = sorted((sources_by_cls[item_cls][i] for i in
                      range(len(sources_by_cls[item_cls]))),
                     key=lambda r: int(r["item_order"]))
  base = set(item_base_features())
  extra = [{k: _decode_value(v) for k, v in r.items() if k not in base}
           for r in item_recs]
  return CanonicalData(
      name=f"{dataset}/{variant}",
      user_ids=[_as_str(r["user_id"]) for r in user_recs],
      users=users, items=items, timestamps=ts,
      item_ids=[_as_str(r["item_id"]) for r in item_recs],
      item_texts=[_as_str(r["text"]) for r in item_recs],
      item_placeholder=np.array([bool(r["text_is_placeholder"])
                                 for r in item_recs], bool),
      item_extra=extra,
      versions={**versions(dataset), "raw": sources["key"]})


def _decode_value(v):
  if isinstance(v, bytes):
    return v.decode("utf-8")
  if isinstance(v, (list, tuple, np.ndarray)):
    return [_decode_value(x) for x in v]
  if isinstance(v, np.generic):
    return v.item()
  return v


class SourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared plumbing: raw-file options and an in-code DatasetInfo.

  Not registered with tfds (``skip_registration``) so our names never clash
  with tfds' own catalog; builders are created by ``load_canonical``.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds' default probes importlib resources, which breaks for namespace
    # packages; the defining file is all it needs (checksums lookup).
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, raw_options: Optional[RawOptions] = None, **kwargs):
    self.raw_options = raw_options or RawOptions()
    super().__init__(**kwargs)

  def _features(self) -> tfds.features.FeaturesDict:
    raise NotImplementedError

  def raw_files(self) -> list:
    """Paths of the raw files this builder reads (resolved, downloaded if allowed)."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=self._features(),
                                 description=self.__doc__)

  def _manual_dirs(self) -> list:
    """The manual dir and its per-variant subfolder."""
    if not self.raw_options.manual_dir:
      return []
    d = pathlib.Path(self.raw_options.manual_dir)
    return [d, d / self.builder_config.name]

  def _resolve(self, names) -> dict:
    return raw.resolve_files(
        names, self._manual_dirs(), pathlib.Path(self.raw_options.download_dir),
        self.raw_options.download, f"{self.name}/{self.builder_config.name}")

  def _split_generators(self, dl_manager):
    del dl_manager  # Files are found by ``_resolve``; see raw.resolve_files.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    raise NotImplementedError


def item_examples(items, extra_fn):
  """Yields (key, example) per item; ``extra_fn(item)`` adds source fields."""
  for k, it in enumerate(items):
    ex = {"item_id": it.item_id, "item_order": k, "text": it.text,
          "text_is_placeholder": it.text_is_placeholder}
    ex.update(extra_fn(it))
    yield k, ex
