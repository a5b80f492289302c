"""LLM4SBR intents: text import, intent arrays on disk, official-format import.

Three edges of the LLM4SBR pipeline live here:

* ``read_intent_texts``: intent texts produced elsewhere (by any LLM), as
  JSON lines ``{"session": id, "<perspective>": text, ...}`` or CSV with a
  ``session`` column and one column per perspective. Session ids are kept as
  strings (``str(id)``), so ``7`` in JSON and ``"7"`` in CSV are the same.
* intent arrays: float32 ``[sessions, perspectives, d_text]`` ``.npy`` files
  with a JSON sidecar (``<name>.json``) recording where they came from. They
  are written to temporary names and moved into place (sidecar last), so a
  crash never leaves an array that loads as valid. ``load_intent_array``
  memory-maps and refuses arrays that do not match the run. Localized
  arrays (f > 0) keep the chosen items beside them: ``<name>.topf_ids.npy``
  (int32 [sessions, perspectives, f], most similar first) and
  ``<name>.topf_weights.npy`` (float32, the softmax weights of eq. 3), named
  in the sidecar under ``"localized"`` (``load_localized`` reads them); with
  f = 0 the sidecar's ``"localized"`` is null and says why.
* ``import_string_embeddings``: the released LLM4SBR code's format, one
  embedding per row stored as a stringified list (``"[0.1, -0.2, ...]"`` or
  the ``"[[...]]"`` that ``str(tensor[1, d].tolist())`` gives).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
from typing import (Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import numpy as np

from sbrjax import errors
from sbrjax.llm4sbr import localize as localize_lib

PathLike = Union[str, os.PathLike]
FORMAT = "sbrjax.intent_array"
VERSION = 1
_CHECK_ROWS = 65536

csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))


# --------------------------------------------------------------------------
# Intent texts.


def _csv_rows(path: pathlib.Path) -> Iterable[Tuple[int, Dict[str, str]]]:
  """(line number, row dict) for each CSV/TSV record."""
  delim = "\t" if path.suffix.lower() == ".tsv" else ","
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f, delimiter=delim)
    try:
      if reader.fieldnames is None:
        raise errors.DataError(f"{path}: empty file (no header row)")
      for row in reader:
        # Blank lines are skipped by the reader; line_num is exact for
        # one-line records (the record's last line for multi-line cells).
        yield reader.line_num, row
    except csv.Error as e:
      raise errors.DataError(f"{path}:{reader.line_num}: CSV error: {e}") from e


def _json_rows(path: pathlib.Path) -> Iterable[Tuple[int, dict]]:
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise errors.DataError(f"{path}:{lineno}: invalid JSON: {e}") from e
      if not isinstance(obj, dict):
        raise errors.DataError(f"{path}:{lineno}: expected a JSON object, got "
                         f"{type(obj).__name__}")
      yield lineno, obj


def read_intent_texts(path: PathLike, perspectives: Sequence[str], *,
                      expected_sessions: Optional[Iterable] = None,
                      allow_empty: bool = False
                      ) -> Dict[str, Dict[str, str]]:
  """Reads intent texts keyed by session.

  Args:
    path: ``.jsonl``/``.json`` (JSON lines) or ``.csv``/``.tsv`` file.
    perspectives: perspective names every record must have.
    expected_sessions: sessions that must all be present (extra sessions in
      the file are kept).
    allow_empty: accept blank intent texts.

  Returns:
    session id (str) -> {perspective: text}.

  Raises:
    ValueError: ``file:line`` of a malformed record, a missing session key
      or perspective, a duplicate session, a non-string or blank text, or
      the list of expected sessions the file lacks.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.MissingDataError(f"{path}: intent text file not found")
  suffix = path.suffix.lower()
  if suffix in (".jsonl", ".json"):
    rows = _json_rows(path)
  elif suffix in (".csv", ".tsv"):
    rows = _csv_rows(path)
  else:
    raise errors.DataError(f"{path}: unknown intent text format {suffix!r}; use "
                     ".jsonl or .csv")
  out: Dict[str, Dict[str, str]] = {}
  first_line: Dict[str, int] = {}
  for lineno, row in rows:
    where = f"{path}:{lineno}"
    if row.get("session") in (None, ""):
      raise errors.DataError(f"{where}: record has no 'session' field")
    sid = str(row["session"])
    if sid in out:
      raise errors.DataError(f"{where}: session {sid!r} repeats (first on line "
                       f"{first_line[sid]})")
    texts = {}
    for p in perspectives:
      if p not in row or row[p] is None:
        raise errors.DataError(f"{where}: session {sid!r} lacks perspective {p!r}")
      if not isinstance(row[p], str):
        raise errors.DataError(f"{where}: perspective {p!r} of session {sid!r} is "
                         f"{type(row[p]).__name__}, expected text")
      if not allow_empty and not row[p].strip():
        raise errors.DataError(f"{where}: perspective {p!r} of session {sid!r} is "
                         "blank (pass allow_empty=True to accept)")
      texts[p] = row[p]
    out[sid] = texts
    first_line[sid] = lineno
  if expected_sessions is not None:
    missing = [s for s in map(str, expected_sessions) if s not in out]
    if missing:
      raise errors.DataError(f"{path}: {len(missing)} expected session(s) missing, "
                       f"e.g. {missing[:5]}")
  return out


# --------------------------------------------------------------------------
# Intent arrays.


def sidecar_path(path: PathLike) -> pathlib.Path:
  """``x.npy`` -> ``x.json`` (other names get ``.json`` appended)."""
  path = pathlib.Path(path)
  if path.suffix == ".npy":
    return path.with_suffix(".json")
  return path.with_name(path.name + ".json")


def _first_nonfinite(block: np.ndarray) -> Optional[Tuple[int, ...]]:
  bad = ~np.isfinite(block)
  if bad.any():
    return tuple(int(i) for i in np.argwhere(bad)[0])
  return None


class IntentArrayWriter:
  """Streams an intent array to disk; only ``commit()`` makes it visible.

  Use as a context manager: leaving the block normally commits, an
  exception discards the temporary files.

    with IntentArrayWriter(path, sessions=..., perspectives=..., dim=384,
                           dataset=..., split="test", encoder="minilm",
                           f=5, fingerprint=data.fingerprint) as w:
      w.write(0, block)  # float [k, P, d] for rows 0..k-1
  """

  def __init__(self, path: PathLike, *, sessions: Sequence,
               perspectives: Sequence[str], dim: int, dataset: str,
               split: str, encoder: str, f: int, fingerprint: str):
    self.path = pathlib.Path(path)
    if len(set(perspectives)) != len(perspectives) or not perspectives:
      raise errors.DataError(f"perspectives must be distinct and non-empty, got "
                       f"{list(perspectives)}")
    self.sessions = [str(s) for s in sessions]
    if len(set(self.sessions)) != len(self.sessions):
      raise errors.DataError(f"{self.path}: session ids repeat")
    self.shape = (len(self.sessions), len(perspectives), int(dim))
    self.meta = {
        "format": FORMAT, "version": VERSION, "dataset": dataset,
        "split": split, "encoder": encoder, "f": int(f),
        "perspectives": list(perspectives), "sessions": self.sessions,
        "fingerprint": fingerprint, "shape": list(self.shape),
        "dtype": "float32",
    }
    self.path.parent.mkdir(parents=True, exist_ok=True)
    tag = f".tmp-{os.getpid()}"
    self._tmp = self.path.with_name(self.path.name + tag)
    self._tmp_meta = self.path.with_name(sidecar_path(self.path).name + tag)
    self._array = np.lib.format.open_memmap(self._tmp, mode="w+",
                                            dtype=np.float32,
                                            shape=self.shape)
    self._written = np.zeros(self.shape[0], bool)
    self._localized = None  # (tmp ids, tmp weights, final ids, final weights)
    self.meta["localized"] = None
    self.meta["localized_note"] = ("no localized item ids were recorded (f = 0 keeps the "
                                   "raw intent embeddings)" if int(f) == 0 else
                                   "no localized item ids were recorded")

  def write(self, start: int, block) -> None:
    """Writes rows ``start : start + len(block)``; block is [k, P, d]."""
    block = np.asarray(block, np.float32)
    if block.shape[1:] != self.shape[1:]:
      raise errors.DataError(f"{self.path}: block shape {block.shape} does not "
                       f"match [k, {self.shape[1]}, {self.shape[2]}]")
    end = start + block.shape[0]
    if start < 0 or end > self.shape[0]:
      raise errors.DataError(f"{self.path}: rows [{start}, {end}) outside "
                       f"[0, {self.shape[0]})")
    bad = _first_nonfinite(block)
    if bad is not None:
      row = start + bad[0]
      raise errors.DataError(
          f"{self.path}: NaN/inf for session {self.sessions[row]!r} (row "
          f"{row}), perspective {self.meta['perspectives'][bad[1]]!r}")
    self._array[start:end] = block
    self._written[start:end] = True

  def attach_localized(self, ids, weights) -> None:
    """Records the top-f item ids [N, P, f] and weights beside the array."""
    ids = np.asarray(ids)
    weights = np.asarray(weights, np.float32)
    f = int(self.meta["f"])
    want = self.shape[:2] + (f,)
    if ids.shape != want or weights.shape != want:
      raise errors.DataError(f"{self.path}: localized ids {ids.shape} / weights "
                       f"{weights.shape}, expected {want}")
    if f == 0:
      return
    tag = f".tmp-{os.getpid()}"
    names = (localized_paths(self.path))
    tmps = tuple(p.with_name(p.name + tag) for p in names)
    with open(tmps[0], "wb") as fh:
      np.save(fh, ids.astype(np.int32))
    with open(tmps[1], "wb") as fh:
      np.save(fh, weights)
    self._localized = tmps + names
    self.meta["localized"] = {"ids": names[0].name, "weights": names[1].name}
    self.meta["localized_note"] = ("top-f items of eq. 3 per row and perspective, most "
                                   "similar first; weights = softmax of their cosines")

  def commit(self) -> pathlib.Path:
    """Flushes and moves array (and localized ids) then sidecar into place."""
    if not self._written.all():
      row = int(np.argmin(self._written))
      raise errors.DataError(f"{self.path}: row {row} (session "
                       f"{self.sessions[row]!r}) was never written")
    self._array.flush()
    del self._array
    with open(self._tmp_meta, "w") as f:
      json.dump(self.meta, f)
    side = sidecar_path(self.path)
    # Drop the old sidecar first: between the renames the new array has no
    # sidecar and is refused, never paired with stale metadata.
    if side.exists():
      os.remove(side)
    os.replace(self._tmp, self.path)
    if self._localized is not None:
      os.replace(self._localized[0], self._localized[2])
      os.replace(self._localized[1], self._localized[3])
    os.replace(self._tmp_meta, side)
    return self.path

  def discard(self) -> None:
    if hasattr(self, "_array"):
      del self._array
    extra = self._localized[:2] if self._localized else ()
    for p in (self._tmp, self._tmp_meta) + tuple(extra):
      if p.exists():
        os.remove(p)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.commit()
    else:
      self.discard()
    return False


def localized_paths(path: PathLike) -> Tuple[pathlib.Path, pathlib.Path]:
  """``x.npy`` -> (``x.topf_ids.npy``, ``x.topf_weights.npy``)."""
  path = pathlib.Path(path)
  stem = path.name[:-4] if path.suffix == ".npy" else path.name
  return (path.with_name(stem + ".topf_ids.npy"),
          path.with_name(stem + ".topf_weights.npy"))


def load_localized(path: PathLike) -> Optional[Tuple[np.ndarray, np.ndarray]]:
  """(ids int32 [N, P, f], weights float32 [N, P, f]) of an intent array.

  None when its sidecar records none (f = 0).

  Raises:
    FileNotFoundError / ValueError: a named file is missing or its shape
      disagrees with the sidecar.
  """
  side = sidecar_path(path)
  with open(side) as f:
    meta = json.load(f)
  loc = meta.get("localized")
  if not loc:
    return None
  want = tuple(meta["shape"][:2]) + (int(meta["f"]),)
  out = []
  for key, dtype in (("ids", np.int32), ("weights", np.float32)):
    file = pathlib.Path(path).with_name(loc[key])
    if not file.is_file():
      raise errors.MissingDataError(f"{file}: localized {key} named in {side} are missing")
    arr = np.load(file, mmap_mode="r")
    if arr.shape != want or arr.dtype != dtype:
      raise errors.DataError(f"{file}: {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} {want}")
    out.append(arr)
  return out[0], out[1]


def write_intent_array(path: PathLike, values, **meta) -> pathlib.Path:
  """Writes a whole float [N, P, d] array (see ``IntentArrayWriter``)."""
  values = np.asarray(values, np.float32)
  if values.ndim != 3:
    raise errors.DataError(f"intent array must be [N, P, d], got {values.shape}")
  with IntentArrayWriter(path, dim=values.shape[2], **meta) as w:
    if values.shape[:2] != w.shape[:2]:
      raise errors.DataError(f"values shape {values.shape} does not match "
                       f"{len(w.sessions)} sessions x "
                       f"{len(w.meta['perspectives'])} perspectives")
    for s in range(0, values.shape[0], _CHECK_ROWS):
      w.write(s, values[s:s + _CHECK_ROWS])
  return pathlib.Path(path)


@dataclasses.dataclass(frozen=True)
class IntentArray:
  """A validated, memory-mapped intent array.

  Attributes:
    values: read-only memmap float32 [N, P, d].
    perspectives: names of axis 1.
    sessions: row -> session id.
    meta: the sidecar.
  """

  values: np.ndarray
  perspectives: Tuple[str, ...]
  sessions: Tuple[str, ...]
  meta: dict

  def perspective(self, name: str) -> np.ndarray:
    """float32 [N, d] (a memmap view) for one perspective."""
    return self.values[:, self.perspectives.index(name)]

  def select(self, names: Sequence[str]) -> np.ndarray:
    """float32 [N, len(names), d] in the order of ``names`` (a copy)."""
    return self.values[:, [self.perspectives.index(n) for n in names]]


def load_intent_array(path: PathLike, *, expected_fingerprint: str,
                      expected_rows: int, expected_dim: int,
                      perspectives: Sequence[str],
                      check_finite: bool = True) -> IntentArray:
  """Memory-maps an intent array after checking it belongs to this run.

  Args:
    path: the ``.npy`` file (its sidecar sits beside it).
    expected_fingerprint: ``PreparedData.fingerprint`` of the dataset.
    expected_rows: number of sessions (rows) the split has.
    expected_dim: text-embedding width the model was built for.
    perspectives: perspectives the model needs (the file may hold more).
    check_finite: scan for NaN/inf in chunks of rows.

  Raises:
    FileNotFoundError: the array or its sidecar is missing.
    ValueError: saying which of rows, dim, fingerprint, perspectives,
      shape/dtype or values is wrong.
  """
  path = pathlib.Path(path)
  side = sidecar_path(path)
  if not path.is_file():
    raise errors.MissingDataError(f"{path}: intent array not found")
  if not side.is_file():
    raise errors.MissingDataError(
        f"{path}: missing sidecar {side.name}; the array is incomplete or "
        "was not written by IntentArrayWriter; regenerate it")
  try:
    with open(side) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise errors.DataError(f"{side}: unreadable sidecar: {e}") from e
  if meta.get("format") != FORMAT:
    raise errors.DataError(f"{side}: not an intent-array sidecar "
                     f"(format={meta.get('format')!r})")
  try:
    values = np.load(path, mmap_mode="r")
  except ValueError as e:
    raise errors.DataError(f"{path}: unreadable .npy: {e}") from e
  if values.dtype != np.float32 or values.ndim != 3:
    raise errors.DataError(f"{path}: expected float32 [N, P, d], got "
                     f"{values.dtype} {values.shape}")
  if list(values.shape) != meta.get("shape"):
    raise errors.DataError(f"{path}: array shape {values.shape} disagrees with "
                     f"sidecar shape {meta.get('shape')}")
  if meta.get("fingerprint") != expected_fingerprint:
    raise errors.DataError(
        f"{path}: dataset fingerprint {meta.get('fingerprint')!r} does not "
        f"match the prepared data's {expected_fingerprint!r}; the intents "
        "were built for other data; regenerate them")
  if values.shape[0] != expected_rows:
    raise errors.DataError(f"{path}: {values.shape[0]} rows (sessions), expected "
                     f"{expected_rows}")
  if values.shape[2] != expected_dim:
    raise errors.DataError(f"{path}: embedding dim {values.shape[2]}, expected "
                     f"{expected_dim}")
  stored = list(meta.get("perspectives", []))
  if len(stored) != values.shape[1]:
    raise errors.DataError(f"{side}: {len(stored)} perspective names for "
                     f"{values.shape[1]} array columns")
  missing = [p for p in perspectives if p not in stored]
  if missing:
    raise errors.DataError(f"{path}: missing perspective(s) {missing}; the file "
                     f"holds {stored}")
  sessions = meta.get("sessions", [])
  if len(sessions) != values.shape[0]:
    raise errors.DataError(f"{side}: {len(sessions)} session ids for "
                     f"{values.shape[0]} rows")
  if check_finite:
    for s in range(0, values.shape[0], _CHECK_ROWS):
      bad = _first_nonfinite(values[s:s + _CHECK_ROWS])
      if bad is not None:
        row = s + bad[0]
        kind = "NaN" if np.isnan(values[row, bad[1], bad[2]]) else "inf"
        raise errors.DataError(
            f"{path}: {kind} at row {row} (session {sessions[row]!r}), "
            f"perspective {stored[bad[1]]!r}, dim {bad[2]}")
  return IntentArray(values, tuple(stored), tuple(map(str, sessions)), meta)


def build_intent_array(path: PathLike, texts: Mapping[str, Mapping[str, str]],
                       sessions: Sequence, perspectives: Sequence[str],
                       encode_fn: Callable[[List[str]], np.ndarray],
                       item_embeddings: Optional[np.ndarray], f: int, *,
                       dataset: str, split: str, encoder: str,
                       fingerprint: str, block_rows: int = 4096
                       ) -> pathlib.Path:
  """Embeds intent texts, localizes them (eqs. 3-4) and streams the array.

  Args:
    path: output ``.npy``.
    texts: ``read_intent_texts`` output.
    sessions: row order (session ids; converted with ``str``).
    perspectives: axis-1 order.
    encode_fn: texts -> float32 [len(texts), d] (e.g.
      ``TextEncoder.encode_texts``).
    item_embeddings: float [num_items, d] item-text embeddings (same encoder);
      may be None when ``f == 0``.
    f: localization width (0 keeps raw intent embeddings).
    dataset, split, encoder, fingerprint: recorded in the sidecar.
    block_rows: sessions encoded per step.
  """
  sessions = [str(s) for s in sessions]
  missing = [s for s in sessions if s not in texts]
  if missing:
    raise errors.DataError(f"no intent texts for {len(missing)} session(s), e.g. "
                     f"{missing[:5]}")
  if f > 0 and item_embeddings is None:
    raise errors.DataError("item_embeddings are required when f > 0")
  writer = None
  if f > 0:
    f = min(f, len(item_embeddings))  # localize clamps f to the catalog
  p = len(perspectives)
  ids = np.zeros((len(sessions), p, f), np.int32)
  weights = np.zeros((len(sessions), p, f), np.float32)
  try:
    for start in range(0, len(sessions), block_rows):
      rows = sessions[start:start + block_rows]
      flat = [texts[s][q] for s in rows for q in perspectives]
      emb = np.asarray(encode_fn(flat), np.float32)  # [k * P, d]
      if f > 0:
        emb, top, w = localize_lib.localize(emb, item_embeddings, f, return_ids=True)
        ids[start:start + len(rows)] = top.reshape(len(rows), p, f)
        weights[start:start + len(rows)] = w.reshape(len(rows), p, f)
      if writer is None:
        writer = IntentArrayWriter(
            path, sessions=sessions, perspectives=perspectives,
            dim=emb.shape[1], dataset=dataset, split=split, encoder=encoder,
            f=f, fingerprint=fingerprint)
      writer.write(start, emb.reshape(len(rows), p, -1))
    if writer is None:
      raise errors.DataError("no sessions to encode")
    writer.attach_localized(ids, weights)
    return writer.commit()
  except BaseException:
    if writer is not None:
      writer.discard()
    raise


# --------------------------------------------------------------------------
# The released LLM4SBR code's stringified embeddings.


def parse_embedding_cell(cell: str, where: str) -> np.ndarray:
  """Parses ``"[0.1, -0.2]"`` or ``"[[0.1, -0.2]]"`` into float32 [d]."""
  s = cell.strip()
  if s.startswith("[[") and s.endswith("]]"):
    s = s[1:-1].strip()
    if "[" in s[1:] or "]" in s[:-1]:
      raise errors.DataError(f"{where}: cell holds several rows; expected one "
                       "embedding")
  if not (s.startswith("[") and s.endswith("]")):
    raise errors.DataError(f"{where}: expected a bracketed list like "
                     f"'[0.1, -0.2, ...]', got {cell[:40]!r}")
  tokens = [t.strip() for t in s[1:-1].split(",")]
  if tokens and tokens[-1] == "":
    tokens.pop()  # tolerate a trailing comma
  if not tokens:
    raise errors.DataError(f"{where}: empty embedding")
  try:
    vec = np.asarray(tokens, np.float64)
  except ValueError:
    for k, t in enumerate(tokens):
      try:
        float(t)
      except ValueError:
        raise errors.DataError(f"{where}: element {k} {t!r} is not a number"
                         ) from None
    raise
  if not np.isfinite(vec).all():
    k = int(np.argmin(np.isfinite(vec)))
    raise errors.DataError(f"{where}: element {k} is {tokens[k]!r} (not finite)")
  return vec.astype(np.float32)


def read_string_embeddings(path: PathLike, column: Optional[str] = None, *,
                           session_column: Optional[str] = None
                           ) -> Tuple[List[str], np.ndarray]:
  """Reads one stringified embedding per row.

  Args:
    path: ``.csv``/``.tsv`` (with a header; ``column`` names the embedding
      column, e.g. ``"longterm_emb"``) or any other text file holding one
      cell per non-blank line.
    column: embedding column for CSV/TSV.
    session_column: CSV column with session ids; without it rows are
      numbered ``"0", "1", ...`` in file order (the official files are
      aligned with the split by row).

  Returns:
    (session ids, float32 [N, d]).

  Raises:
    ValueError: ``file:line`` of a cell that does not parse or whose
      length differs from the first row's.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.MissingDataError(f"{path}: embedding file not found")
  if path.suffix.lower() in (".csv", ".tsv"):
    if column is None:
      raise errors.DataError(f"{path}: pass column= (the embedding column)")
    cells = []
    for lineno, row in _csv_rows(path):
      if column not in row:
        raise errors.DataError(f"{path}: no column {column!r}; header has "
                         f"{sorted(k for k in row if k)}")
      if session_column is not None and session_column not in row:
        raise errors.DataError(f"{path}: no column {session_column!r}")
      cells.append((lineno, row[column] or "",
                    row[session_column] if session_column else None))
  else:
    if session_column is not None:
      raise errors.DataError(f"{path}: session_column needs a CSV/TSV file")
    with open(path, encoding="utf-8") as f:
      cells = [(n, line, None) for n, line in enumerate(f, 1)
               if line.strip()]
  vecs, sessions = [], []
  first = None
  for i, (lineno, cell, sid) in enumerate(cells):
    where = f"{path}:{lineno}"
    vec = parse_embedding_cell(cell, where)
    if first is None:
      first = (vec.shape[0], lineno)
    elif vec.shape[0] != first[0]:
      raise errors.DataError(f"{where}: embedding has {vec.shape[0]} values but "
                       f"line {first[1]} has {first[0]} (ragged dims)")
    vecs.append(vec)
    sessions.append(str(i) if sid is None else str(sid))
  if not vecs:
    raise errors.DataError(f"{path}: no embeddings")
  if len(set(sessions)) != len(sessions):
    raise errors.DataError(f"{path}: repeated session ids in {session_column!r}")
  return sessions, np.stack(vecs)


def import_string_embeddings(out_path: PathLike,
                             sources: Mapping[str, Tuple[PathLike,
                                                         Optional[str]]],
                             *, session_column: Optional[str] = None,
                             dataset: str, split: str, encoder: str, f: int,
                             fingerprint: str) -> pathlib.Path:
  """Converts official-format files (one per perspective) to an intent array.

  Args:
    out_path: output ``.npy``.
    sources: perspective -> (file, column), e.g.
      ``{"long_term": ("tes_session_long_emb.csv", "longterm_emb")}``.
    session_column: see ``read_string_embeddings``; all files must list the
      same sessions in the same order.
    dataset, split, encoder, f, fingerprint: recorded in the sidecar.
  """
  names = list(sources)
  blocks, sessions, dims = [], None, None
  for name in names:
    file, column = sources[name]
    sids, arr = read_string_embeddings(file, column,
                                       session_column=session_column)
    if sessions is None:
      sessions, dims = sids, (arr.shape[1], file)
    else:
      if sids != sessions:
        raise errors.DataError(f"{file}: sessions differ from {sources[names[0]][0]}"
                         f" ({len(sids)} vs {len(sessions)} rows)")
      if arr.shape[1] != dims[0]:
        raise errors.DataError(f"{file}: dim {arr.shape[1]} but {dims[1]} has "
                         f"{dims[0]}")
    blocks.append(arr)
  return write_intent_array(out_path, np.stack(blocks, axis=1),
                            sessions=sessions, perspectives=names,
                            dataset=dataset, split=split, encoder=encoder,
                            f=f, fingerprint=fingerprint)
