"""``load_prepared(config.data)``: builder -> protocol -> negatives, cached.

The result is cached under ``<data_dir>/prepared/<name>-<key>/`` as
``arrays.npz`` + ``meta.json``, where ``key`` hashes every setting that
changes the result plus the builder versions and ``PREPARE_VERSION``.
A preparation is written into a temporary sibling folder and moved into place
with ``os.replace``, so a failed or killed run never leaves a folder that a
later run reads as complete; on load the fingerprint is recomputed and a
mismatch (a corrupted cache) triggers a fresh preparation.

``data_dir`` is ``config.data.data_dir``, else ``$SBRJAX_DATA_DIR``, else
``~/.cache/sbrjax``; tfds data goes to ``<data_dir>/tfds``, downloads to
``<data_dir>/downloads``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Optional

import ml_collections
import numpy as np

from sbrjax import errors
from sbrjax import fileio
from sbrjax.data import builders, negatives, preprocess, raw, stats
from sbrjax.data.types import PreparedData, Split

PREPARE_VERSION = 1
PROTOCOLS = ("llmgr", "llm4sbr")
DATASET_VARIANTS = {
    "movielens": ("ml-100k", "ml-1m"),
    "amazon": ("music", "beauty", "pantry", "beauty2014"),
}
# llm4sbr examples per session when config.data.augmentation="auto" (the
# LLM4SBR paper's choice per dataset family).
AUTO_AUGMENTATION = {"movielens": "last", "amazon": "prefixes"}
_SPLITS = ("train", "valid", "test")
log = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
  """The ``config.data`` section with its defaults."""
  c = ml_collections.ConfigDict()
  c.dataset = "movielens"  # "movielens" | "amazon"
  c.variant = "ml-100k"  # see DATASET_VARIANTS
  c.protocol = "llmgr"  # "llmgr" (leave-one-out) | "llm4sbr" (sessions)
  c.max_len = 50  # inputs keep their most recent max_len items
  c.min_count = 5  # k-core (llmgr) / item frequency (llm4sbr) threshold
  c.session_gap_s = 600  # llm4sbr MovieLens: session length scale (seconds)
  c.session_rule = "window"  # llm4sbr MovieLens: "window" (clock) | "gap"
  c.augmentation = "auto"  # llm4sbr: "last" | "prefixes" | "auto" (per dataset)
  c.test_fraction = 0.1  # llm4sbr: chronologically last sessions -> test
  c.valid_fraction = 0.1  # llm4sbr: last training sessions -> validation
  c.num_negatives = 99  # sampled negatives per valid/test example
  c.negatives_exclude = "sequence"  # "sequence" | "target"
  c.seed = 0  # negatives' seed
  c.data_dir = ""  # "" -> $SBRJAX_DATA_DIR or ~/.cache/sbrjax
  c.manual_dir = ""  # folder with raw files placed by hand
  c.download = True  # fetch missing raw files
  return c


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """Validated ``config.data`` (see ``default_config`` for meanings)."""
  dataset: str
  variant: str
  protocol: str
  max_len: int
  min_count: int
  session_gap_s: int
  session_rule: str
  augmentation: str
  test_fraction: float
  valid_fraction: float
  num_negatives: int
  negatives_exclude: str
  seed: int
  data_dir: str
  manual_dir: str
  download: bool

  @property
  def name(self) -> str:
    return f"{self.dataset}/{self.variant}"

  @property
  def session_gap(self) -> Optional[int]:
    """Gap that splits sessions; Amazon has one session per user."""
    return self.session_gap_s if self.dataset == "movielens" else None

  @property
  def examples(self) -> str:
    """llm4sbr examples per session: ``augmentation``, "auto" resolved.

    "auto" is the LLM4SBR paper's choice per dataset: one example per session
    on MovieLens (ML-1M's Table 1: clicks / sessions = average length + 1),
    every prefix on Amazon (Beauty: "sequence segmentation").
    """
    if self.augmentation != "auto":
      return self.augmentation
    return AUTO_AUGMENTATION[self.dataset]

  def result_settings(self) -> dict:
    """The settings that change the prepared arrays (cache key input)."""
    out = {"name": self.name, "protocol": self.protocol,
           "max_len": self.max_len, "min_count": self.min_count,
           "num_negatives": self.num_negatives,
           "negatives_exclude": self.negatives_exclude, "seed": self.seed,
           "prepare_version": PREPARE_VERSION}
    if self.protocol == "llm4sbr":
      out.update(session_gap_s=self.session_gap,
                 session_rule=self.session_rule if self.session_gap else None,
                 augmentation=self.examples,
                 test_fraction=self.test_fraction,
                 valid_fraction=self.valid_fraction)
    return out


def _err(key: str, problem: str, fix: str) -> errors.ConfigError:
  return errors.ConfigError(f"config.data.{key} {problem}; {fix}")


def validate(data_cfg) -> DataSettings:
  """Checks every field of ``config.data``; missing fields take defaults.

  Raises:
    ValueError: naming ``config.data.<key>`` and how to fix it.
  """
  d = default_config().to_dict()
  given = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
  d.update({k: v for k, v in given.items() if k in d})

  def integer(key, lo):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise _err(key, f"must be an integer >= {lo}, got {v!r}",
                 f"set --config.data.{key}={max(lo, default_config()[key])}")
    return int(v)

  def fraction(key):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
        not 0.0 < v < 1.0:
      raise _err(key, f"must be a fraction in (0, 1), got {v!r}",
                 f"set e.g. --config.data.{key}=0.1")
    return float(v)

  def choice(key, options):
    v = d[key]
    if v not in options:
      raise _err(key, f"is {v!r}, which is not supported",
                 f"choose one of {list(options)}")
    return v

  dataset = choice("dataset", tuple(DATASET_VARIANTS))
  variant = choice("variant", DATASET_VARIANTS[dataset])
  if not isinstance(d["download"], bool):
    raise _err("download", f"must be True or False, got {d['download']!r}",
               "set --config.data.download=False to work offline")
  for key in ("data_dir", "manual_dir"):
    if not isinstance(d[key], str):
      raise _err(key, f"must be a path string, got {d[key]!r}",
                 f"set --config.data.{key}=/some/folder (or '')")
  data_dir = (d["data_dir"] or os.environ.get("SBRJAX_DATA_DIR") or
              str(pathlib.Path.home() / ".cache" / "sbrjax"))
  return DataSettings(
      dataset=dataset, variant=variant,
      protocol=choice("protocol", PROTOCOLS),
      max_len=integer("max_len", 1), min_count=integer("min_count", 1),
      session_gap_s=integer("session_gap_s", 1),
      session_rule=choice("session_rule", preprocess.SESSION_RULES),
      augmentation=choice("augmentation", ("auto",) + preprocess.AUGMENTATIONS),
      test_fraction=fraction("test_fraction"),
      valid_fraction=fraction("valid_fraction"),
      num_negatives=integer("num_negatives", 1),
      negatives_exclude=choice("negatives_exclude", negatives.MODES),
      seed=integer("seed", 0), data_dir=os.path.expanduser(data_dir),
      manual_dir=os.path.expanduser(d["manual_dir"]),
      download=d["download"])


# ------------------------------------------------------------------ prepare


def _files_of(sources: Optional[dict]) -> str:
  if not sources:
    return "the raw files"
  return ", ".join(f["path"] for b in sources["builders"].values() for f in b["files"])


def prepare(settings: DataSettings, canonical: builders.CanonicalData,
            sources: Optional[dict] = None) -> PreparedData:
  """Runs the protocol and the negatives on canonical data (no disk I/O)."""
  item_codes_raw, items = np.unique(canonical.items.astype(str),
                                    return_inverse=True)
  if len(items) == 0:
    raise errors.DataError(f"{settings.name}: {_files_of(sources)} hold no interaction.")
  try:
    if settings.protocol == "llmgr":
      out = preprocess.llmgr_protocol(
          canonical.users, items, canonical.timestamps,
          max_len=settings.max_len, min_count=settings.min_count)
    else:
      out = preprocess.llm4sbr_protocol(
          canonical.users, items, canonical.timestamps,
          session_gap_s=settings.session_gap, max_len=settings.max_len,
          session_rule=settings.session_rule, augmentation=settings.examples,
          min_count=settings.min_count,
          test_fraction=settings.test_fraction,
          valid_fraction=settings.valid_fraction)
  except ValueError as e:  # a filter emptied the data
    raise errors.DataError(
        f"{settings.name} ({settings.protocol} protocol): {e}, starting from "
        f"{len(canonical.items)} interactions of {len(canonical.user_ids)} users in "
        f"{_files_of(sources)}. Lower config.data.min_count or use more data.") from e
  num_items = len(out.item_codes)
  for name in _SPLITS:
    if len(getattr(out, name)) == 0:
      rule = (f"{settings.min_count}-core filtering of users and items "
              "(config.data.min_count), then leave-one-out"
              if settings.protocol == "llmgr" else
              f"sessions split at gaps > {settings.session_gap_s} s, sessions of one click "
              f"and items seen < {settings.min_count} times dropped "
              "(config.data.min_count, session_gap_s)")
      raise errors.DataError(
          f"{settings.name}: the {name} split is empty after {rule}: "
          f"{len(canonical.items)} interactions of {len(canonical.user_ids)} users in "
          f"{_files_of(sources)} leave {len(out.train)} train / {len(out.valid)} valid / "
          f"{len(out.test)} test examples. Lower config.data.min_count or use more data.")
  splits = {"train": out.train}
  for name in ("valid", "test"):
    split, hist = getattr(out, name), out.histories[name]
    neg = negatives.sample_negatives(
        split.targets, num_items, settings.num_negatives, settings.seed, name,
        hist.values, hist.offsets, settings.negatives_exclude)
    splits[name] = dataclasses.replace(split, negatives=neg)

  raw_ids = [str(x) for x in item_codes_raw[out.item_codes]]
  text_of = dict(zip(canonical.item_ids, canonical.item_texts))
  placeholder_of = dict(zip(canonical.item_ids, canonical.item_placeholder))
  texts = [text_of.get(r) or raw.placeholder_text(r) for r in raw_ids]
  num_placeholder = sum(1 for r in raw_ids
                        if r not in text_of or placeholder_of[r])
  st = stats.table1(out.filtered_users, out.filtered_items)
  st.update(stats.split_stats(splits["train"], splits["valid"],
                              splits["test"]))
  if settings.protocol == "llm4sbr":
    st["llm4sbr_table1"] = stats.llm4sbr_table1(
        out.filtered_users, {k: v.users for k, v in splits.items()}, settings.examples)
  st.update(unit="user" if settings.protocol == "llmgr" else "session",
            num_placeholder_texts=num_placeholder,
            num_items_without_metadata=sum(1 for r in raw_ids
                                           if r not in text_of),
            filter_rounds=out.filter_rounds,
            raw_num_users=len(canonical.user_ids),
            raw_num_items=len(item_codes_raw),
            raw_num_actions=len(canonical.items))
  fp = fingerprint(settings, canonical.versions, raw_ids, texts, splits)
  return PreparedData(name=settings.name, protocol=settings.protocol,
                      num_items=num_items, num_users=out.num_users,
                      item_raw_ids=raw_ids, item_texts=texts,
                      train=splits["train"], valid=splits["valid"],
                      test=splits["test"], fingerprint=fp, stats=st)


def fingerprint(settings: DataSettings, versions: dict, raw_ids: list,
                texts: list, splits: dict) -> str:
  """sha256 over the settings, builder versions, item ids/texts and arrays."""
  h = hashlib.sha256()
  h.update(json.dumps({"settings": settings.result_settings(),
                       "versions": versions}, sort_keys=True).encode())
  h.update(json.dumps([raw_ids, texts]).encode())
  for name in _SPLITS:
    for key, arr in _split_arrays(splits[name]).items():
      h.update(f"{name}/{key}:{arr.dtype.str}:{arr.shape}".encode())
      h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()


def _split_arrays(split: Split) -> dict:
  out = {"seq_values": split.seq_values, "seq_offsets": split.seq_offsets,
         "targets": split.targets, "users": split.users}
  if split.negatives is not None:
    out["negatives"] = split.negatives
  return out


# ------------------------------------------------------------------ cache


def cache_dir(settings: DataSettings, versions: dict) -> pathlib.Path:
  key = hashlib.sha256(json.dumps(
      {"settings": settings.result_settings(), "versions": versions},
      sort_keys=True).encode()).hexdigest()[:16]
  return (pathlib.Path(settings.data_dir) / "prepared" /
          f"{settings.dataset}-{settings.variant}-{settings.protocol}-{key}")


def save(data: PreparedData, settings: DataSettings, versions: dict,
         target: pathlib.Path) -> None:
  """Writes ``data`` to ``target`` atomically (temp folder + os.replace)."""
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=target.parent,
                                      prefix=f".tmp-{target.name}-"))
  try:
    arrays = {f"{name}/{k}": v for name in _SPLITS
              for k, v in _split_arrays(getattr(data, name)).items()}
    np.savez(tmp / "arrays.npz", **arrays)
    meta = {"name": data.name, "protocol": data.protocol,
            "num_items": data.num_items, "num_users": data.num_users,
            "item_raw_ids": data.item_raw_ids, "item_texts": data.item_texts,
            "fingerprint": data.fingerprint, "stats": data.stats,
            "settings": settings.result_settings(), "versions": versions}
    with open(tmp / "meta.json", "w", encoding="utf-8") as f:
      json.dump(meta, f)
    if target.exists():  # A stale/corrupt cache: swap it out.
      shutil.rmtree(target)
    fileio.publish(tmp, target)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)


def load(settings: DataSettings, versions: dict,
         target: pathlib.Path) -> Optional[PreparedData]:
  """Reads a cache folder; None when absent or its fingerprint mismatches."""
  try:
    with open(target / "meta.json", encoding="utf-8") as f:
      meta = json.load(f)
    with np.load(target / "arrays.npz") as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError, KeyError) as e:
    if target.exists():
      log.warning("ignoring unreadable prepared cache %s: %s", target, e)
    return None
  splits = {}
  for name in _SPLITS:
    get = lambda k: arrays.get(f"{name}/{k}")  # pylint: disable=cell-var-from-loop
    splits[name] = Split(get("seq_values"), get("seq_offsets"),
                         get("targets"), get("users"), get("negatives"))
  fp = fingerprint(settings, versions, meta["item_raw_ids"],
                   meta["item_texts"], splits)
  if fp != meta["fingerprint"]:
    log.warning("prepared cache %s fails its fingerprint; re-preparing",
                target)
    return None
  return PreparedData(name=meta["name"], protocol=meta["protocol"],
                      num_items=meta["num_items"],
                      num_users=meta["num_users"],
                      item_raw_ids=meta["item_raw_ids"],
                      item_texts=meta["item_texts"], train=splits["train"],
                      valid=splits["valid"], test=splits["test"],
                      fingerprint=fp, stats=meta["stats"])


def load_prepared(data_cfg) -> PreparedData:
  """Prepared data for ``config.data``, from cache or freshly built.

  Args:
    data_cfg: an ml_collections.ConfigDict (or dict) with the fields of
      ``default_config()``.

  Returns:
    PreparedData with fixed negatives on valid and test.
  """
  settings = validate(data_cfg)
  # Concurrent runs (or test workers) preparing the same data take turns: the
  # second finds the first one's cache instead of racing it in tfds/pip.
  os.makedirs(settings.data_dir, exist_ok=True)
  with open(os.path.join(settings.data_dir, ".prepare.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      options = builders.RawOptions(manual_dir=settings.manual_dir,
                                    download=settings.download)
      # The cache key digests the raw files' bytes: edited files prepare again.
      sources = builders.raw_sources(settings.dataset, settings.variant,
                                     settings.data_dir, options)
      versions = {**builders.versions(settings.dataset), "raw": sources["key"]}
      target = cache_dir(settings, versions)
      # Under the lock no other preparation is in flight: temporary folders
      # left here were abandoned by a killed run.
      for stale in target.parent.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
      cached = load(settings, versions, target)
      if cached is not None:
        return cached
      canonical = builders.load_canonical(
          settings.dataset, settings.variant, settings.data_dir, options, sources)
      data = prepare(settings, canonical, sources)
      save(data, settings, versions, target)
      return data
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
