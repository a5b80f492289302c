"""Catalog-wide item graphs built once from a training split (numpy), cached on disk.

Two structures, both from the TRAINING split only (validation and test
clicks never enter them):

* ``gcegnn_graph``: GCE-GNN's global item graph (Wang et al. 2020, Sec. 3.2;
  reference ``build_graph.py`` + ``utils.handle_adj``). Every pair of clicks
  at distance 1..``window`` in a training sequence adds 1 to the weight of
  both directed edges (a pair of equal items adds 2 to its self-loop, as in
  the reference); each item keeps its ``num_neighbors`` heaviest neighbours
  (ties: smaller item id first), and an item with fewer is resampled with
  replacement up to ``num_neighbors`` (seeded); an item without any neighbour
  has weight 0 everywhere, which the model masks.
* ``hypergraph_operator``: S^2-DHCN's ``M = D^-1 H B^-1 H^T`` (Xia et al.
  2021, eq. 2; W = I) over hyperedges = the distinct items of each training
  sequence ("sessions", the paper) or of each training example's input
  ("examples", the reference code, which feeds its prefix-augmented
  ``train.txt``), as a sorted COO matrix; items in no hyperedge have empty rows.

Training sequences. A prepared training split holds examples (input ->
target), usually every prefix of each sequence. ``training_sequences`` undoes
that: example i *continues* example i - 1 when both belong to the same user /
session and i's input is the end of ``input_{i-1} + [target_{i-1}]`` (one
click longer, or as long when ``max_len`` truncation drops the oldest), so a
chain of continuing examples is one sequence: the first example's input and
target, then every later target. One example per session (no augmentation)
makes every example its own sequence. Each click pair is then counted once,
as in the references' ``all_train_seq.txt``.

Cache. ``load_or_build`` keys a structure by its kind, its settings, the
prepared data's fingerprint and ``GRAPH_VERSION``
(``sbrjax.data.digest.tree_digest``), writes ``arrays.npz`` and ``graph.json``
(the key description, the arrays' sha256 and a few statistics) to
``<data_dir>/item_graphs/<kind>-<key>/`` atomically, and rebuilds a folder
whose arrays fail their digest.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Dict, Tuple

import numpy as np
import scipy.sparse as sp

from sbrjax import fileio
from sbrjax.data import digest as digest_lib
from sbrjax.data.types import PreparedData, Split

GRAPH_VERSION = 1
KINDS = ("gcegnn", "hypergraph")
HYPEREDGES = ("sessions", "examples")
# Item ids travel as float32 model leaves (sbrjax.models.backbone.GlobalGraphParams).
MAX_EXACT_ID = 2**24
log = logging.getLogger(__name__)

Ragged = Tuple[np.ndarray, np.ndarray]  # (values int32 [T], offsets int64 [S + 1])


# ------------------------------------------------------------------ sequences


def continues_previous(split: Split) -> np.ndarray:
  """bool [N]: example i continues example i - 1 (module docstring); False for i = 0."""
  n = len(split)
  out = np.zeros(n, bool)
  if n < 2:
    return out
  lengths = split.lengths.astype(np.int64)
  width = int(lengths.max())
  inputs, _ = split.padded(width, align="right")  # [N, W], last click in column W - 1
  ext = np.concatenate([inputs, split.targets[:, None].astype(np.int32)], axis=1)  # [N, W + 1]
  shifted = np.concatenate([np.zeros((n, 1), np.int32), inputs], axis=1)  # inputs at W + 1
  cur, prev = slice(1, None), slice(None, -1)
  cols = np.arange(width + 1)[None, :]
  compare = cols >= (width + 1 - lengths[cur])[:, None]  # the last len_i columns
  same = np.all((shifted[cur] == ext[prev]) | ~compare, axis=1)
  grows = (lengths[cur] >= lengths[prev]) & (lengths[cur] <= lengths[prev] + 1)
  out[1:] = (split.users[cur] == split.users[prev]) & grows & same
  return out


def training_sequences(split: Split) -> Ragged:
  """The distinct click sequences behind a training split (prefix augmentation undone).

  Returns:
    (values int32 [T], offsets int64 [S + 1]): sequence s is
    ``values[offsets[s]:offsets[s + 1]]``, oldest click first, in split order.
  """
  n = len(split)
  if n == 0:
    return np.zeros(0, np.int32), np.zeros(1, np.int64)
  start = ~continues_previous(split)
  lengths = split.lengths.astype(np.int64)
  # ext_i = input_i + [target_i], laid out back to back.
  ext_offsets = np.zeros(n + 1, np.int64)
  np.cumsum(lengths + 1, out=ext_offsets[1:])
  ext_values = np.empty(int(ext_offsets[-1]), np.int32)
  is_target = np.zeros(len(ext_values), bool)
  is_target[ext_offsets[1:] - 1] = True
  ext_values[is_target] = split.targets
  ext_values[~is_target] = split.seq_values
  lo = np.where(start, ext_offsets[:-1], ext_offsets[1:] - 1)  # a chain's first: all of ext
  take = ext_offsets[1:] - lo
  flat = np.repeat(lo - np.cumsum(np.concatenate([[0], take[:-1]])), take) + \
      np.arange(int(take.sum()))
  chain = np.cumsum(start) - 1
  seq_lengths = np.bincount(chain, weights=take).astype(np.int64)
  offsets = np.zeros(len(seq_lengths) + 1, np.int64)
  np.cumsum(seq_lengths, out=offsets[1:])
  return ext_values[flat], offsets


def hyperedges(split: Split, mode: str) -> Ragged:
  """S^2-DHCN's hyperedges: "sessions" (training sequences) or "examples" (inputs)."""
  if mode == "sessions":
    return training_sequences(split)
  if mode == "examples":
    return split.seq_values.astype(np.int32), split.seq_offsets.astype(np.int64)
  raise ValueError(f"hyperedges: mode {mode!r} is not supported; choose one of {HYPEREDGES} "
                   "(config.sbr.s2dhcn_hyperedges).")


def _check_ids(values: np.ndarray, num_items: int) -> None:
  if num_items >= MAX_EXACT_ID:
    raise ValueError(f"{num_items} items: item ids above 2**24 are not exact as float32 "
                     "model leaves; the global graphs support smaller catalogs only.")
  if values.size and (values.min() < 0 or values.max() >= num_items):
    raise ValueError(f"item ids must lie in [0, {num_items}), got "
                     f"[{values.min()}, {values.max()}]")


# ------------------------------------------------------------------ GCE-GNN


def window_pair_counts(seqs: Ragged, num_items: int, window: int):
  """(src, dst, count) of the directed pairs at click distance 1..window, both directions."""
  values, offsets = seqs
  seq_id = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
  src, dst = [], []
  for k in range(1, window + 1):
    ok = seq_id[:-k] == seq_id[k:] if len(values) > k else np.zeros(0, bool)
    a, b = values[:-k][ok].astype(np.int64), values[k:][ok].astype(np.int64)
    src += [a, b]
    dst += [b, a]
  src = np.concatenate(src) if src else np.zeros(0, np.int64)
  dst = np.concatenate(dst) if dst else np.zeros(0, np.int64)
  keys, count = np.unique(src * num_items + dst, return_counts=True)
  return keys // num_items, keys % num_items, count


def gcegnn_graph(seqs: Ragged, num_items: int, window: int = 3, num_neighbors: int = 12,
                 seed: int = 0) -> Dict[str, np.ndarray]:
  """GCE-GNN's global graph (module docstring).

  Returns:
    ``neighbors`` int32 [I, S] item ids and ``weights`` float32 [I, S] pair
    counts (0: no neighbour), S = ``num_neighbors``.
  """
  if window < 1 or num_neighbors < 1:
    raise ValueError(f"gcegnn_graph: window and num_neighbors must be >= 1, got {window}, "
                     f"{num_neighbors} (config.sbr.gcegnn_window / gcegnn_neighbors).")
  _check_ids(seqs[0], num_items)
  src, dst, count = window_pair_counts(seqs, num_items, window)
  order = np.lexsort((dst, -count, src))  # per item: heaviest first, then smaller id
  src, dst, count = src[order], dst[order], count[order]
  degree = np.bincount(src, minlength=num_items)
  first = np.zeros(num_items + 1, np.int64)
  np.cumsum(degree, out=first[1:])
  rank = np.arange(len(src)) - first[src]
  keep = rank < num_neighbors
  kept = np.minimum(degree, num_neighbors)
  neighbors = np.zeros((num_items, num_neighbors), np.int32)
  weights = np.zeros((num_items, num_neighbors), np.float32)
  neighbors[src[keep], rank[keep]] = dst[keep]
  weights[src[keep], rank[keep]] = count[keep]
  short = np.flatnonzero((kept > 0) & (kept < num_neighbors))
  if short.size:  # the reference's np.random.choice(n, S, replace=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, kept[short][:, None], size=(short.size, num_neighbors))
    neighbors[short] = neighbors[short[:, None], draws]
    weights[short] = weights[short[:, None], draws]
  return {"neighbors": neighbors, "weights": weights}


# ------------------------------------------------------------------ S^2-DHCN


def hypergraph_operator(edges: Ragged, num_items: int) -> Dict[str, np.ndarray]:
  """``M = D^-1 H B^-1 H^T`` [I, I] as COO (``rows``, ``cols`` int32, ``values`` float32)."""
  values, offsets = edges
  _check_ids(values, num_items)
  edge_id = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
  inc = sp.csr_matrix((np.ones(len(values)), (edge_id, values.astype(np.int64))),
                      shape=(len(offsets) - 1, num_items))
  inc.data[:] = 1.0  # duplicate clicks of an item in one hyperedge count once
  edge_deg = np.asarray(inc.sum(axis=1)).ravel()  # |e|
  node_deg = np.asarray(inc.sum(axis=0)).ravel()  # hyperedges per item
  inv = lambda x: np.divide(1.0, x, out=np.zeros_like(x), where=x > 0)
  left = sp.diags(inv(node_deg)) @ inc.T  # D^-1 H
  right = sp.diags(inv(edge_deg)) @ inc  # B^-1 H^T
  m = (left @ right).tocoo()
  order = np.lexsort((m.col, m.row))
  return {"rows": m.row[order].astype(np.int32), "cols": m.col[order].astype(np.int32),
          "values": m.data[order].astype(np.float32)}


def operator_arrays(coo: Dict[str, np.ndarray], num_items: int,
                    dense_fraction: float = 0.25) -> Dict[str, np.ndarray]:
  """The operator as the model takes it: ``adjacency`` dense [I, I] when at least
  ``dense_fraction`` of it is non-zero (a dense matmul is then cheaper than a
  gather over the entries), else the COO arrays unchanged."""
  if len(coo["values"]) >= dense_fraction * num_items * num_items:
    dense = np.zeros((num_items, num_items), np.float32)
    dense[coo["rows"], coo["cols"]] = coo["values"]
    return {"adjacency": dense}
  return dict(coo)


# ------------------------------------------------------------------ cache


def build(data: PreparedData, kind: str, settings: dict) -> Dict[str, np.ndarray]:
  """The structure ``kind`` of ``data``'s training split (no disk I/O)."""
  if kind == "gcegnn":
    return gcegnn_graph(training_sequences(data.train), data.num_items,
                        window=int(settings["window"]),
                        num_neighbors=int(settings["num_neighbors"]),
                        seed=int(settings["seed"]))
  if kind == "hypergraph":
    return hypergraph_operator(hyperedges(data.train, settings["hyperedges"]), data.num_items)
  raise ValueError(f"item graph kind {kind!r} is not supported; choose one of {KINDS}")


def description(data: PreparedData, kind: str, settings: dict) -> dict:
  """What a cached structure is keyed by (stored beside it as ``graph.json``)."""
  return {"kind": kind, "settings": dict(sorted(settings.items())),
          "data_fingerprint": data.fingerprint, "data_name": data.name,
          "split": "train", "version": GRAPH_VERSION}


def arrays_digest(arrays: Dict[str, np.ndarray]) -> str:
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _stats(kind: str, arrays: Dict[str, np.ndarray], num_items: int) -> dict:
  if kind == "gcegnn":
    has = arrays["weights"] > 0
    return {"items_without_neighbors": int((~has.any(axis=1)).sum()),
            "mean_weight": float(arrays["weights"][has].mean()) if has.any() else 0.0}
  return {"nnz": int(len(arrays["values"])),
          "density": float(len(arrays["values"])) / max(num_items * num_items, 1)}


def _load(folder: pathlib.Path, desc: dict):
  try:
    with open(folder / "graph.json", encoding="utf-8") as f:
      meta = json.load(f)
    with np.load(folder / "arrays.npz") as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError, KeyError):
    return None
  if meta.get("description") != desc or meta.get("arrays_sha256") != arrays_digest(arrays):
    log.warning("item graph cache %s does not match its key or digest; rebuilding", folder)
    return None
  return arrays, meta


def load_or_build(data: PreparedData, kind: str, settings: dict,
                  data_dir: str) -> Tuple[Dict[str, np.ndarray], dict]:
  """The structure from ``<data_dir>/item_graphs/``, built and cached when absent.

  Returns:
    (arrays, meta) where ``meta`` is the cache's ``graph.json`` content:
    ``description`` (kind, settings, data fingerprint, version), ``key``,
    ``arrays_sha256``, ``stats``, ``path``.
  """
  desc = description(data, kind, settings)
  key = digest_lib.tree_digest(desc)
  root = pathlib.Path(data_dir) / "item_graphs"
  folder = root / f"{kind}-{key}"
  found = _load(folder, desc)
  if found is not None:
    return found
  root.mkdir(parents=True, exist_ok=True)
  with open(root / ".build.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      found = _load(folder, desc)
      if found is not None:
        return found
      arrays = build(data, kind, settings)
      meta = {"description": desc, "key": key, "arrays_sha256": arrays_digest(arrays),
              "stats": _stats(kind, arrays, data.num_items), "path": str(folder)}
      tmp = pathlib.Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{folder.name}-"))
      try:
        np.savez(tmp / "arrays.npz", **arrays)
        with open(tmp / "graph.json", "w", encoding="utf-8") as f:
          json.dump(meta, f, indent=1)
        if folder.exists():
          shutil.rmtree(folder)
        fileio.publish(tmp, folder)
      finally:
        if tmp.exists():
          shutil.rmtree(tmp, ignore_errors=True)
      return arrays, meta
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
