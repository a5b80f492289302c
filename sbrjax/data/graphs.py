"""SR-GNN session graphs built per split, served as padded jraph batches.

A session (one example's input sequence, truncated to its last ``max_len``
clicks) becomes a directed graph as in SR-GNN (Wu et al., 2019):

  * Nodes are the distinct items of the session in order of first appearance.
  * One edge ``u -> v`` per distinct consecutive transition ``(.., u, v, ..)``;
    a transition that occurs several times is counted once (the reference
    code writes ``A[u][v] = 1``), and a consecutive repeat ``(.., u, u, ..)``
    adds the self-loop ``u -> u`` exactly as the reference code does.
  * Aggregation weights follow the reference ``get_slice``: with ``A`` the 0/1
    transition matrix, ``A_in = A / colsum(A)`` and ``A_out = A.T / rowsum(A)``
    (zero sums replaced by 1), i.e. for edge ``e = u -> v``

        w_in[e]  = 1 / indeg(v)    (v hears its predecessor u),
        w_out[e] = 1 / outdeg(u)   (u hears its successor v, edge reversed),

    where degrees count distinct edges, self-loops included. The dense SR-GNN
    rows are therefore ``A_in[v, u] = w_in[u->v]`` and
    ``A_out[u, v] = w_out[u->v]``.

``build_graphs`` does this once per ``Split`` with vectorised numpy (no Python
loop over sessions). ``iterate_batches`` then yields ``GraphBatch`` objects of
one fixed shape per ``(split, batch_size)``: up to ``batch_size`` session
graphs (unused rows are empty graphs whose ``graph_mask`` is False) plus one
jraph padding graph that owns every unused node and edge slot. The padding
graph appears only inside ``graph.n_node`` / ``graph.n_edge`` ([B + 1]);
every per-example array is [B].

Node budget. The worst case, ``batch_size * max_len`` nodes, wastes most of
the GNN's work when sessions are shorter than ``max_len`` (ml-100k, LLMGR
protocol: 39.1 nodes per session on average at ``max_len`` 50, so 22% of a
worst-case batch is padding, and the GNN's dense layers cost per node slot).
``iterate_batches`` therefore packs graphs the way ``jraph.dynamically_batch``
does: in (shuffled) order, a batch takes the next graph while it holds fewer
than ``batch_size`` graphs and the graph's nodes still fit ``node_cap``.
``node_cap_for`` sets the cap from the split alone (mean + 4 standard
deviations of the node count of ``batch_size`` sessions), so the shape is the
same in every epoch and shuffle; a batch that would overflow simply closes
early (for 4 sigma, about once in 30,000 batches), so nothing is dropped or
truncated and batches still depend only on (seed, epoch).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Iterator, NamedTuple, Optional, Union

import jraph
import numpy as np

from sbrjax.data.types import Split


@dataclasses.dataclass(frozen=True)
class SessionGraphs:
  """Session graphs of every example of a split, stored ragged.

  Node ids inside ``senders``, ``receivers`` and ``positions`` are local to
  their graph (0 is the graph's first node).

  Attributes:
    max_len: the truncation length the graphs were built with.
    node_items: int32 [total_nodes] item id of each node.
    node_offsets: int64 [G + 1] graph ``g`` owns nodes
      ``node_offsets[g]:node_offsets[g + 1]``.
    senders: int32 [total_edges] local source node of each edge.
    receivers: int32 [total_edges] local destination node of each edge.
    edge_offsets: int64 [G + 1] graph ``g`` owns edges
      ``edge_offsets[g]:edge_offsets[g + 1]``.
    w_in: float32 [total_edges] 1 / in-degree of the receiver.
    w_out: float32 [total_edges] 1 / out-degree of the sender.
    positions: int32 [G, max_len] local node of each click (oldest first);
      columns ``>= lengths[g]`` hold 0 and must be masked with ``lengths``.
    lengths: int32 [G] number of clicks kept (1..max_len).
    targets: int32 [G] next item of each example.
    negatives: int32 [G, K] fixed sampled negatives, or None.
  """

  max_len: int
  node_items: np.ndarray
  node_offsets: np.ndarray
  senders: np.ndarray
  receivers: np.ndarray
  edge_offsets: np.ndarray
  w_in: np.ndarray
  w_out: np.ndarray
  positions: np.ndarray
  lengths: np.ndarray
  targets: np.ndarray
  negatives: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return int(self.lengths.shape[0])

  @property
  def n_node(self) -> np.ndarray:
    """int32 [G] number of nodes of each graph."""
    return np.diff(self.node_offsets).astype(np.int32)

  @property
  def n_edge(self) -> np.ndarray:
    """int32 [G] number of edges of each graph."""
    return np.diff(self.edge_offsets).astype(np.int32)


class GraphBatch(NamedTuple):
  """One fixed-shape batch (a pytree; pass it straight to a jitted step).

  Attributes:
    graph: ``jraph.GraphsTuple`` with ``nodes`` int32 [N_pad] item ids,
      ``edges`` dict(w_in, w_out) float32 [E_pad], ``senders``/``receivers``
      int32 [E_pad] (batch-global node ids), ``n_node``/``n_edge`` int32
      [B + 1] (last entry: the jraph padding graph), ``globals`` None.
    positions: int32 [B, max_len] batch-global node id of each click, oldest
      first; columns ``>= lengths`` point at a padding node.
    lengths: int32 [B] clicks per session (0 for padding rows).
    targets: int32 [B] next item (0 for padding rows).
    graph_mask: bool [B] True for real examples.
    index: int32 [B] example index into the split (-1 for padding rows).
    negatives: int32 [B, K] fixed negatives, or None if the split has none.
  """

  graph: jraph.GraphsTuple
  positions: np.ndarray
  lengths: np.ndarray
  targets: np.ndarray
  graph_mask: np.ndarray
  index: np.ndarray
  negatives: Optional[np.ndarray] = None


def budgets(batch_size: int, max_len: int,
            node_cap: Optional[int] = None) -> tuple[int, int, int]:
  """(node, edge, graph) budgets of a batch (padding graph included).

  A session of ``n <= max_len`` clicks has at most ``n`` nodes and ``n - 1``
  edges, so ``batch_size * max_len`` nodes and ``batch_size * (max_len - 1)``
  edges always fit (``node_cap=None``). With ``node_cap`` real nodes per
  batch, real edges number at most ``node_cap - 1``. The extra node, edge and
  graph belong to the jraph padding graph (which must own at least one node).
  """
  worst_nodes, worst_edges = batch_size * max_len, batch_size * (max_len - 1)
  if node_cap is None:
    nodes, edges = worst_nodes, worst_edges
  else:
    nodes = min(int(node_cap), worst_nodes)
    edges = min(max(nodes - 1, 0), worst_edges)
  return nodes + 1, edges + 1, batch_size + 1


def node_cap_for(graphs: "SessionGraphs", batch_size: int,
                 sigmas: float = 4.0, multiple: int = 64) -> int:
  """Real-node cap of a batch of ``batch_size`` graphs of this split.

  ``batch_size * mean + sigmas * sqrt(batch_size) * std`` of the per-graph
  node count, rounded up to ``multiple``, at least the largest graph and at
  most the worst case ``batch_size * max_len``. It depends only on the
  split's node counts, so every epoch and shuffle gets the same shape.
  """
  n_node = graphs.n_node.astype(np.float64)
  worst = batch_size * graphs.max_len
  if n_node.size == 0:
    return worst
  cap = batch_size * n_node.mean() + sigmas * np.sqrt(batch_size) * n_node.std()
  cap = int(-(-np.ceil(cap) // multiple) * multiple)
  return int(min(max(cap, int(n_node.max())), worst))


def build_graphs(split: Split, max_len: int) -> SessionGraphs:
  """Builds the SR-GNN graph of every example of ``split`` (vectorised).

  Args:
    split: examples; each input sequence keeps its last ``max_len`` clicks.
    max_len: truncation length (>= 1).

  Returns:
    The ragged ``SessionGraphs`` of the split.

  Raises:
    ValueError: if ``max_len < 1``, an input sequence is empty or an item id
      is negative.
  """
  if max_len < 1:
    raise ValueError(f"build_graphs: max_len must be >= 1, got {max_len}")
  items, lengths = split.padded(max_len, align="left")  # [G, L], [G]
  num_graphs = items.shape[0]
  if num_graphs and lengths.min() < 1:
    bad = int(np.flatnonzero(lengths < 1)[0])
    raise ValueError(
        f"build_graphs: example {bad} has an empty input sequence "
        "(split.seq_offsets); drop such examples before building graphs.")
  valid = np.arange(max_len)[None, :] < lengths[:, None]  # [G, L]
  clicks = items[valid].astype(np.int64)  # [T] row-major = session order
  if clicks.size and clicks.min() < 0:
    raise ValueError("build_graphs: negative item id in split.seq_values; "
                     "item ids must be dense in [0, num_items).")
  rows = np.repeat(np.arange(num_graphs, dtype=np.int64), lengths)  # [T]
  num_clicks = clicks.shape[0]

  # Nodes: first click of each (session, item) pair, in click order. Since
  # sessions are contiguous in `clicks`, a running count of first clicks is a
  # global node id whose per-session order is the order of first appearance.
  stride = int(clicks.max()) + 1 if num_clicks else 1
  _, first_idx, inverse = np.unique(rows * stride + clicks, return_index=True,
                                    return_inverse=True)
  first_click = first_idx[inverse.reshape(-1)]  # [T]
  is_first = first_click == np.arange(num_clicks)
  node_id_at = np.cumsum(is_first) - 1  # [T] meaningful where is_first
  click_node = node_id_at[first_click]  # [T] global node id of each click
  n_node = np.bincount(rows[is_first], minlength=num_graphs)
  node_offsets = np.zeros(num_graphs + 1, np.int64)
  np.cumsum(n_node, out=node_offsets[1:])
  node_items = clicks[is_first].astype(np.int32)
  total_nodes = int(node_offsets[-1])

  # Edges: distinct consecutive transitions inside a session, first-seen
  # order (keys are unique across sessions because node ids are global).
  same = rows[1:] == rows[:-1]  # [T - 1]
  src = click_node[:-1][same]
  dst = click_node[1:][same]
  edge_rows_all = rows[:-1][same]
  _, keep = np.unique(src * max(total_nodes, 1) + dst, return_index=True)
  keep = np.sort(keep)
  senders, receivers = src[keep], dst[keep]
  edge_rows = edge_rows_all[keep]
  n_edge = np.bincount(edge_rows, minlength=num_graphs)
  edge_offsets = np.zeros(num_graphs + 1, np.int64)
  np.cumsum(n_edge, out=edge_offsets[1:])
  in_deg = np.bincount(receivers, minlength=total_nodes)
  out_deg = np.bincount(senders, minlength=total_nodes)
  w_in = (1.0 / in_deg[receivers]).astype(np.float32)
  w_out = (1.0 / out_deg[senders]).astype(np.float32)

  positions = np.zeros((num_graphs, max_len), np.int32)
  positions[valid] = click_node - node_offsets[rows]
  return SessionGraphs(
      max_len=max_len,
      node_items=node_items,
      node_offsets=node_offsets,
      senders=(senders - node_offsets[edge_rows]).astype(np.int32),
      receivers=(receivers - node_offsets[edge_rows]).astype(np.int32),
      edge_offsets=edge_offsets,
      w_in=w_in,
      w_out=w_out,
      positions=positions,
      lengths=lengths.astype(np.int32),
      targets=np.asarray(split.targets, np.int32),
      negatives=(None if split.negatives is None else
                 np.asarray(split.negatives, np.int32)))


def _ragged_take(offsets: np.ndarray, idx: np.ndarray):
  """Flat indices of segments ``idx`` of a ragged array, and their sizes."""
  starts = offsets[idx]
  counts = offsets[idx + 1] - starts
  out_offsets = np.zeros(len(idx) + 1, np.int64)
  np.cumsum(counts, out=out_offsets[1:])
  flat = (np.repeat(starts - out_offsets[:-1], counts) +
          np.arange(out_offsets[-1]))
  return flat, counts, out_offsets


def make_batch(graphs: SessionGraphs, idx: np.ndarray, batch_size: int,
               node_cap: Optional[int] = None) -> GraphBatch:
  """Packs examples ``idx`` (at most ``batch_size``) into one padded batch.

  Args:
    graphs: output of ``build_graphs``.
    idx: example indices, at most ``batch_size`` of them.
    batch_size: rows of the batch (B).
    node_cap: real-node budget (see ``budgets``); None: worst case.

  Raises:
    ValueError: too many examples, or their nodes exceed ``node_cap``.
  """
  idx = np.asarray(idx, np.int64)
  num_real = len(idx)
  if num_real > batch_size:
    raise ValueError(f"make_batch: {num_real} examples exceed batch_size "
                     f"{batch_size}")
  max_len = graphs.max_len
  node_budget, edge_budget, _ = budgets(batch_size, max_len, node_cap)

  node_flat, node_counts, node_offsets = _ragged_take(graphs.node_offsets, idx)
  edge_flat, edge_counts, _ = _ragged_take(graphs.edge_offsets, idx)
  num_nodes, num_edges = int(node_offsets[-1]), len(edge_flat)
  if num_nodes >= node_budget or num_edges >= edge_budget:
    raise ValueError(
        f"make_batch: {num_nodes} nodes / {num_edges} edges do not fit "
        f"node_cap={node_cap} (budgets {node_budget - 1} / {edge_budget - 1}"
        "); pack fewer examples or raise node_cap.")
  pad_node = num_nodes  # first node of the jraph padding graph

  nodes = np.zeros(node_budget, np.int32)
  nodes[:num_nodes] = graphs.node_items[node_flat]
  shift = np.repeat(node_offsets[:-1], edge_counts)
  senders = np.full(edge_budget, pad_node, np.int32)
  receivers = np.full(edge_budget, pad_node, np.int32)
  senders[:num_edges] = graphs.senders[edge_flat] + shift
  receivers[:num_edges] = graphs.receivers[edge_flat] + shift
  w_in = np.zeros(edge_budget, np.float32)
  w_out = np.zeros(edge_budget, np.float32)
  w_in[:num_edges] = graphs.w_in[edge_flat]
  w_out[:num_edges] = graphs.w_out[edge_flat]
  n_node = np.zeros(batch_size + 1, np.int32)
  n_edge = np.zeros(batch_size + 1, np.int32)
  n_node[:num_real] = node_counts
  n_edge[:num_real] = edge_counts
  n_node[-1] = node_budget - num_nodes
  n_edge[-1] = edge_budget - num_edges
  graph = jraph.GraphsTuple(
      nodes=nodes, edges={"w_in": w_in, "w_out": w_out}, senders=senders,
      receivers=receivers, n_node=n_node, n_edge=n_edge, globals=None)

  lengths = np.zeros(batch_size, np.int32)
  lengths[:num_real] = graphs.lengths[idx]
  cols = np.arange(max_len)[None, :]
  positions = np.full((batch_size, max_len), node_budget - 1, np.int32)
  positions[:num_real] = np.where(
      cols < lengths[:num_real, None],
      graphs.positions[idx] + node_offsets[:-1, None], node_budget - 1)
  targets = np.zeros(batch_size, np.int32)
  targets[:num_real] = graphs.targets[idx]
  graph_mask = np.zeros(batch_size, bool)
  graph_mask[:num_real] = True
  index = np.full(batch_size, -1, np.int32)
  index[:num_real] = idx
  negatives = None
  if graphs.negatives is not None:
    negatives = np.zeros((batch_size, graphs.negatives.shape[1]), np.int32)
    negatives[:num_real] = graphs.negatives[idx]
  return GraphBatch(graph=graph, positions=positions, lengths=lengths,
                    targets=targets, graph_mask=graph_mask, index=index,
                    negatives=negatives)


def probe_batch(max_len: int) -> GraphBatch:
  """A one-session batch (one click of item 0) for shapes only: init, ``eval_shape``."""
  split = Split(np.zeros(1, np.int32), np.array([0, 1], np.int64),
                np.zeros(1, np.int32), np.zeros(1, np.int32))
  return make_batch(build_graphs(split, max_len), np.arange(1), 1)


def _resolve_cap(graphs: SessionGraphs, batch_size: int, node_cap) -> Optional[int]:
  if node_cap is None:
    return None
  if isinstance(node_cap, str):
    if node_cap != "auto":
      raise ValueError(f"node_cap must be 'auto', None or an int, got {node_cap!r}")
    return node_cap_for(graphs, batch_size)
  node_cap = int(node_cap)
  largest = int(graphs.n_node.max()) if len(graphs) else 0
  if node_cap < max(largest, 1):
    raise ValueError(f"node_cap={node_cap} is smaller than the largest graph "
                     f"of the split ({largest} nodes).")
  return node_cap


def pack(n_node: np.ndarray, batch_size: int, node_cap: Optional[int],
         drop_remainder: bool = False) -> np.ndarray:
  """Batch boundaries [num_batches + 1] over graphs of sizes ``n_node``.

  Greedy in order (as ``jraph.dynamically_batch``): a batch takes the next
  graph while it has fewer than ``batch_size`` graphs and the nodes fit
  ``node_cap`` (None: no node limit). ``drop_remainder`` drops a last batch
  with fewer than ``batch_size`` graphs.
  """
  n = len(n_node)
  if node_cap is None:
    bounds = np.minimum(np.arange(0, n + batch_size, batch_size), n)
    bounds = np.unique(bounds)
  else:
    csum = np.zeros(n + 1, np.int64)
    np.cumsum(n_node, out=csum[1:])
    bounds = [0]
    start = 0
    while start < n:
      # Largest end with csum[end] - csum[start] <= node_cap.
      end = int(np.searchsorted(csum, csum[start] + node_cap, side="right")) - 1
      end = min(max(end, start + 1), start + batch_size, n)
      bounds.append(end)
      start = end
    bounds = np.asarray(bounds, np.int64)
  if drop_remainder and len(bounds) > 1 and bounds[-1] - bounds[-2] < batch_size:
    bounds = bounds[:-1]
  return bounds


def _order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
  return (np.random.default_rng([seed, epoch]).permutation(n) if shuffle
          else np.arange(n))


def num_batches(graphs: SessionGraphs, batch_size: int, *,
                drop_remainder: bool = False, node_cap=None,
                shuffle: bool = False, seed: int = 0, epoch: int = 0) -> int:
  """Number of batches ``iterate_batches`` yields with the same arguments.

  With ``node_cap=None`` this is ``ceil(N / batch_size)`` (or the floor with
  ``drop_remainder``); with a cap it can exceed that in rare epochs.
  """
  cap = _resolve_cap(graphs, batch_size, node_cap)
  if cap is None:
    n = len(graphs)
    return n // batch_size if drop_remainder else -(-n // batch_size)
  order = _order(len(graphs), shuffle, seed, epoch)
  return len(pack(graphs.n_node[order], batch_size, cap, drop_remainder)) - 1


def _prefetch(gen: Iterator, size: int) -> Iterator:
  """Runs ``gen`` in a daemon thread, keeping up to ``size`` items ready."""
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()
  done = object()

  def produce():
    try:
      for item in gen:
        while not stop.is_set():
          try:
            q.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
        if stop.is_set():
          return
      q.put(done)
    except BaseException as e:  # re-raised in the consumer thread
      q.put(e)

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()


def iterate_batches(graphs: SessionGraphs, batch_size: int, *,
                    shuffle: bool, seed: int = 0, epoch: int = 0,
                    drop_remainder: bool = False,
                    prefetch: int = 2,
                    node_cap: Union[int, str, None] = "auto"
                    ) -> Iterator[GraphBatch]:
  """Yields fixed-shape ``GraphBatch``es over ``graphs``.

  Args:
    graphs: output of ``build_graphs``.
    batch_size: sessions per batch (B).
    shuffle: permute examples; the order depends only on (seed, epoch).
    seed: base seed of the permutation.
    epoch: epoch number, mixed into the permutation seed.
    drop_remainder: drop a last batch with fewer than ``batch_size`` graphs
      instead of padding it with empty graphs (``graph_mask`` False).
    prefetch: batches assembled ahead in a background thread (0: none).
    node_cap: real nodes per batch: "auto" (``node_cap_for`` of this split),
      None (worst case ``batch_size * max_len``: exactly ``batch_size``
      graphs per batch but the last) or an int.

  Yields:
    ``GraphBatch`` of numpy arrays, one shape per (split, batch_size,
    node_cap).
  """
  if batch_size < 1:
    raise ValueError(f"iterate_batches: batch_size must be >= 1, got "
                     f"{batch_size}")
  cap = _resolve_cap(graphs, batch_size, node_cap)
  order = _order(len(graphs), shuffle, seed, epoch)
  bounds = pack(graphs.n_node[order], batch_size, cap, drop_remainder)

  def gen():
    for lo, hi in zip(bounds[:-1], bounds[1:]):
      yield make_batch(graphs, order[lo:hi], batch_size, cap)

  return _prefetch(gen(), prefetch) if prefetch > 0 else gen()
