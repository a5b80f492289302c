"""The interface every SBR backbone shares: its config, its output, small helpers.

``sbrjax.models.sbr`` (graph backbones and the ``create_model`` registry) and
the modules of other backbone families (``sbrjax.models.sequence``) import
this module; it imports none of them, so backbones in separate modules can be
registered in ``sbr.create_model`` without an import cycle. ``sbr`` re-exports
every name defined here (``sbr.SBRConfig``, ``sbr.SBROutput``, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sbrjax.models.gnn import uniform_init


class GlobalGraph:
  """Catalog-wide arrays built once from the training split (by ``sbrjax.data.item_graphs``).

  GCE-GNN's global item graph and S^2-DHCN's hypergraph operator reach their
  model through this container: ``SBRConfig.global_graph`` carries it, the
  model copies each array into its parameter tree under ``global_graph/``
  (label "constant" in ``sbrjax.train.labels``: never trained, saved with
  the checkpoint) and reads it back from the parameters, so the arrays are
  arguments of the jitted step instead of constants XLA would try to fold.
  Equality and hashing go by ``digest`` (the cache key of the arrays), which
  keeps ``SBRConfig`` hashable.

  Attributes:
    kind: what the arrays are ("gcegnn" or "hypergraph").
    digest: hex digest of the arrays' provenance (data fingerprint + settings).
    arrays: name -> numpy array.
  """

  def __init__(self, kind: str, digest: str, arrays: Mapping[str, np.ndarray]):
    self.kind = kind
    self.digest = digest
    self.arrays = dict(arrays)

  def __eq__(self, other) -> bool:
    return isinstance(other, GlobalGraph) and (self.kind, self.digest) == (other.kind,
                                                                          other.digest)

  def __hash__(self) -> int:
    return hash((self.kind, self.digest))

  def __repr__(self) -> str:
    shapes = {k: tuple(v.shape) for k, v in sorted(self.arrays.items())}
    return f"GlobalGraph(kind={self.kind!r}, digest={self.digest!r}, arrays={shapes})"


def require_global_graph(graph: "GlobalGraph | None", kind: str, model: str,
                         what: str) -> None:
  """Raises a ValueError naming the fix unless ``graph`` is a ``GlobalGraph`` of ``kind``."""
  if graph is None or graph.kind != kind:
    raise ValueError(
        f"{model} needs SBRConfig.global_graph of kind {kind!r} ({what}); build the config "
        "with sbrjax.sbr.train.sbr_config, which makes it with sbrjax.data.item_graphs.")


class GlobalGraphParams(nn.Module):
  """Copies a ``GlobalGraph``'s arrays into the parameters, returns them gradient-free.

  The leaves sit at ``.../global_graph/<name>`` (label "constant": frozen by
  every optimizer) as float32 (integer ids included; exact below 2**24, which
  ``sbrjax.data.item_graphs`` checks), so ``jax.grad`` accepts the tree.
  """

  graph: GlobalGraph

  @nn.compact
  def __call__(self) -> Dict[str, jax.Array]:
    out = {}
    for name, value in sorted(self.graph.arrays.items()):
      leaf = self.param(name, lambda _, v=value: jnp.asarray(v, jnp.float32))
      if leaf.dtype != jnp.float32 or leaf.shape != value.shape:
        raise ValueError(
            f"global_graph/{name} is {leaf.dtype}{list(leaf.shape)} in the parameters but "
            f"float32{list(value.shape)} in SBRConfig.global_graph ({self.graph.kind}); "
            "keep these leaves float32 and restore checkpoints built from the same data.")
      out[name] = jax.lax.stop_gradient(leaf)
    return out


@dataclasses.dataclass(frozen=True)
class SBRConfig:
  """Configuration of an SBR backbone (graph, hypergraph or sequence).

  Attributes:
    backbone: one of ``BACKBONES``.
    num_items: catalog size I (item ids in [0, I)).
    embed_dim: width D of item embeddings and node states.
    gnn_steps: gated-GNN propagation steps (shared weights).
    dropout: dropout rate on the input item embeddings of the graph nodes
      (NISER+'s item dropout; 0 reproduces SR-GNN, GC-SAN and TAGNN, whose
      reference code has no embedding dropout) or of the clicks (sequence
      backbones: NARM's embedding dropout).
    hidden_dropout: dropout on the session vector just before the item
      scores (GRU4Rec's hidden-layer dropout, NARM's dropout on [c_g; c_l],
      Caser's dropout on the convolution outputs); unused by the others.
    gcsan_blocks: number of GC-SAN self-attention blocks.
    gcsan_heads: attention heads (must divide ``embed_dim``; the paper uses 1).
    gcsan_ffn_dim: inner width of the point-wise FFN (None: ``embed_dim``).
    gcsan_dropout: dropout on attention probabilities and FFN outputs.
    gcsan_weight: w in ``final = w * attn_last + (1 - w) * last_click``.
    gcsan_block: "paper" (eqs. 6-7: no output projection, no LayerNorm) or
      "bert" (beyond the paper: RecBole's post-LayerNorm BERT layer).
    gcsan_init: "paper" (SR-GNN's uniform init) or "normal" (beyond the
      paper: RecBole's N(0, 0.02) weights and zero biases).
    niser_scale: NISER's scale sigma on the cosine logits.
    niser_max_len: number of NISER+ position embeddings; batches must have
      ``max_len <= niser_max_len``.
    tagnn_item_chunk: if > 0, TAGNN computes its target-aware scores over
      item chunks of this size (lax.map) to bound memory at
      O(B * chunk * L) instead of O(B * I * L).
    caser_len: Caser's L, the number of most recent clicks its convolutions
      read (shorter sessions are zero-padded at the old end).
    caser_h_filters: Caser's n_h, horizontal filters per height 1..L.
    caser_v_filters: Caser's n_v, vertical filters.
    stamp_add_mean: STAMP's h_s reads m_a + m_s (the official code and
      RecBole) instead of the paper's m_a.
    pos_max_len: size of the reversed-position table of GCE-GNN and S^2-DHCN
      (200 in both references); batches must have ``max_len <= pos_max_len``.
    gcegnn_hops: GCE-GNN's global aggregation depth (``n_iter``, 1 or 2).
    gcegnn_neighbors: neighbours kept per item in the global graph (N = 12).
    gcegnn_window: epsilon, the largest click distance that links two items
      in the global graph (3 in the reference ``build_graph.py``).
    gcegnn_seed: seed of the global graph's neighbour resampling.
    gcegnn_dropout_local / gcegnn_dropout_global: dropout on the session-level
      and global-level item representations before they are summed.
    gcegnn_dropout_gcn: dropout inside the global aggregator.
    s2dhcn_layers: hypergraph / line-graph convolution layers L.
    s2dhcn_beta: weight beta of S^2-DHCN's self-supervised loss.
    s2dhcn_hyperedges: "sessions" (paper: one hyperedge per training
      sequence) or "examples" (reference code: one per training example,
      i.e. every augmented prefix).
    s2dhcn_layer_mix: how both channels combine their L + 1 layer outputs:
      "mean" (the paper's eqs. 3 and 8) or "sum" (the reference code: item
      table and line-graph vectors L + 1 times the mean's).
    hcgr_layers: hyperbolic graph attention layers.
    hcgr_curvature: K of the Lorentz model (sectional curvature -1/K).
    hcgr_cl_weight: weight lambda of HCGR's contrastive term.
    hcgr_cl_temperature: temperature tau of the contrastive term.
    hcgr_cl_negatives: items drawn per session as the term's negatives.
    global_graph: GCE-GNN's / S^2-DHCN's arrays built from the training
      split (None for every other backbone; see ``GlobalGraph``).
    dtype: computation dtype (parameters stay float32; logits are float32).
  """

  backbone: str
  num_items: int
  embed_dim: int = 100
  gnn_steps: int = 1
  dropout: float = 0.0
  hidden_dropout: float = 0.0
  gcsan_blocks: int = 1
  gcsan_heads: int = 1
  gcsan_ffn_dim: Optional[int] = None
  gcsan_dropout: float = 0.0
  gcsan_weight: float = 0.6
  gcsan_block: str = "paper"
  gcsan_init: str = "paper"
  niser_scale: float = 12.0
  niser_max_len: int = 50
  tagnn_item_chunk: int = 0
  caser_len: int = 5
  caser_h_filters: int = 16
  caser_v_filters: int = 4
  stamp_add_mean: bool = False
  pos_max_len: int = 200
  gcegnn_hops: int = 1
  gcegnn_neighbors: int = 12
  gcegnn_window: int = 3
  gcegnn_seed: int = 0
  gcegnn_dropout_local: float = 0.0
  gcegnn_dropout_global: float = 0.5
  gcegnn_dropout_gcn: float = 0.0
  s2dhcn_layers: int = 3
  s2dhcn_beta: float = 0.01
  s2dhcn_hyperedges: str = "sessions"
  s2dhcn_layer_mix: str = "mean"
  hcgr_layers: int = 1
  hcgr_curvature: float = 1.0
  hcgr_cl_weight: float = 0.1
  hcgr_cl_temperature: float = 1.0
  hcgr_cl_negatives: int = 100
  global_graph: Optional[GlobalGraph] = None
  dtype: Any = jnp.float32


@flax.struct.dataclass
class SBROutput:
  """What a backbone computes for one batch.

  Graph backbones are described here; the sequence backbones
  (``sbrjax.models.sequence``) fill the same fields as their docstrings say.

  Attributes:
    item_embeddings: [I, D] the scoring table (L2-normalised for NISER+);
      ``logits = final . item_embeddings^T`` except where a backbone adds
      a term (TAGNN's target-aware term, GRU4Rec's and Caser's item bias).
    node_states: [N_pad, D] node states after the gated GNN (sequence
      backbones: rows of ``item_embeddings`` of the graph's nodes).
    seq_states: [B, L, D] states of the clicks in order (with NISER+'s
      position embeddings added); rows past ``lengths`` are padding.
    local: [B, D] last-click state s_l as used by the readout.
    global_: [B, D] global preference (SR-GNN/NISER+/TAGNN: attention
      readout s_g; GC-SAN: last self-attention output at the last click).
    final: [B, D] session embedding that scores items (TAGNN: the
      target-independent part s_h; NISER+: unit norm, before the scale).
    logits: [B, I] float32 scores over the catalog (None from
      ``session_representations``).
    aux_losses: name -> weighted scalar loss a backbone adds to the
      recommendation loss when training (S^2-DHCN's self-supervised loss,
      HCGR's contrastive term); None (zero) for the others and whenever
      ``deterministic=True``. ``auxiliary_loss`` sums them.
  """

  item_embeddings: jax.Array
  node_states: jax.Array
  seq_states: jax.Array
  local: jax.Array
  global_: jax.Array
  final: jax.Array
  logits: Optional[jax.Array] = None
  aux_losses: Optional[Dict[str, jax.Array]] = None


def auxiliary_loss(out: SBROutput) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """(sum of ``out.aux_losses`` as float32, the named parts); (0, {}) without any."""
  parts = {k: jnp.asarray(v, jnp.float32) for k, v in (out.aux_losses or {}).items()}
  return sum(parts.values(), jnp.zeros((), jnp.float32)), parts


def click_mask(lengths: jax.Array, max_len: int) -> jax.Array:
  """bool [B, L]: True for the first ``lengths[b]`` clicks of row b."""
  return jnp.arange(max_len)[None, :] < lengths[:, None]


def last_click(seq_states: jax.Array, lengths: jax.Array) -> jax.Array:
  """[B, D] state at click ``lengths - 1`` (click 0 for empty rows)."""
  last = jnp.maximum(lengths - 1, 0)
  return seq_states[jnp.arange(seq_states.shape[0]), last]


def masked_softmax(logits: jax.Array, mask: jax.Array,
                   axis: int = -1) -> jax.Array:
  """Softmax over ``axis`` ignoring masked entries (uniform if all masked)."""
  fill = jnp.finfo(logits.dtype).min
  return jax.nn.softmax(jnp.where(mask, logits, fill), axis=axis)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along the last axis (torch F.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def dense(features: int, dim: int, dtype, *, use_bias: bool = True,
          name: Optional[str] = None) -> nn.Dense:
  """nn.Dense with U(-1/sqrt(dim), 1/sqrt(dim)) kernel and bias (SR-GNN's init)."""
  init = uniform_init(1.0 / dim**0.5)
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, kernel_init=init,
                  bias_init=init, name=name)
