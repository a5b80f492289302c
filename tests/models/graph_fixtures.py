"""Shared toy sessions, batch checks and NumPy readouts for the GCE-GNN / S2-DHCN / HCGR tests."""

import jax
import numpy as np

from sbrjax.data.graphs import build_graphs, make_batch
from sbrjax.data.types import Split

NUM_ITEMS = 13
MAX_LEN = 6
# One-click sessions, consecutive repeats, revisits, a back-and-forth pair and a
# session longer than MAX_LEN (truncated to its last 6 clicks).
SESSIONS = [[1, 2, 3, 2, 4], [5], [7, 7, 8, 7], [0, 1, 0, 1, 0, 1],
            [9, 3, 9, 3, 3, 2, 6, 6, 12], [4, 4], [11], [2, 10, 2]]
FIELDS = ("local", "global_", "final", "logits")


def make_split(seqs, users=None):
  offsets = np.zeros(len(seqs) + 1, np.int64)
  np.cumsum([len(s) for s in seqs], out=offsets[1:])
  values = np.concatenate([np.asarray(s) for s in seqs]).astype(np.int32)
  n = len(seqs)
  targets = (np.arange(n) * 5 % NUM_ITEMS).astype(np.int32)
  users = np.arange(n) if users is None else users
  return Split(values, offsets, targets, np.asarray(users, np.int32))


SPLIT = make_split(SESSIONS)
GRAPHS = build_graphs(SPLIT, MAX_LEN)


def kept(i):
  """Session i as the model sees it (its last MAX_LEN clicks)."""
  return SESSIONS[i][-MAX_LEN:]


def batch_of(idx, batch_size):
  return make_batch(GRAPHS, np.asarray(idx), batch_size)


def f64(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


BATCH = 10  # every batched check uses this size (and 1): two compiles per model


def init_params(model, seed=0):
  """Parameters (shapes do not depend on the batch; jitted init of a one-session batch)."""
  return jax.jit(model.init)(jax.random.key(seed), batch_of([0], 1))["params"]


def apply_fn(model, **kw):
  """Jitted ``model.apply`` (one compile per batch shape; eager dispatch is slow on CPU)."""
  return jax.jit(lambda p, b: model.apply({"params": p}, b, **kw))


def assert_batch_equals_each_session_alone(apply, params):
  """Every session's outputs in a padded batch of all sessions equal its outputs alone."""
  full = apply(params, batch_of(np.arange(len(SESSIONS)), BATCH))  # 2 padding rows
  for i in range(len(SESSIONS)):
    alone = apply(params, batch_of([i], 1))
    for f in FIELDS:
      np.testing.assert_allclose(getattr(full, f)[i], getattr(alone, f)[0], rtol=1e-5,
                                 atol=1e-5, err_msg=f"{f} row {i}")
    n = GRAPHS.lengths[i]
    np.testing.assert_allclose(full.seq_states[i, :n], alone.seq_states[0, :n], rtol=1e-5,
                               atol=1e-5)
  assert np.isfinite(np.asarray(full.logits)).all()  # padding rows included
  return full


def assert_padding_does_not_matter(apply, params, num_real=4):
  """Scrambling padding nodes and padding rows' positions changes no real row."""
  batch = batch_of(np.arange(num_real), BATCH)
  ref = apply(params, batch)
  g = batch.graph
  real_nodes = int(g.n_node[:-1].sum())
  nodes = g.nodes.copy()
  nodes[real_nodes:] = np.random.default_rng(0).integers(0, NUM_ITEMS, len(nodes) - real_nodes)
  positions = batch.positions.copy()
  positions[num_real:] = real_nodes + 3
  scrambled = batch._replace(graph=g._replace(nodes=nodes), positions=positions)
  out = apply(params, scrambled)
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(out, f)[:num_real], getattr(ref, f)[:num_real])


def np_reversed_position_readout(p, x):
  """GCE-GNN / S2-DHCN readout of one session's click states x [n, D] (float64)."""
  n = len(x)
  pos = p["pos_embedding"][np.arange(n)[::-1]]  # last click -> p_0
  z = np.tanh(np.concatenate([pos, x], -1) @ p["w_1"])
  mean = x.mean(0)
  gate = 1 / (1 + np.exp(-(z @ p["glu1"]["kernel"] + p["glu1"]["bias"] +
                           mean @ p["glu2"]["kernel"])))
  beta = gate @ p["w_2"]  # [n, 1]
  return (beta * x).sum(0)


def np_soft_attention_readout(p, x):
  """SR-GNN readout of one session (float64): (s_g, s_h)."""
  last = x[-1]
  e = (1 / (1 + np.exp(-(last @ p["w1"]["kernel"] + p["w1"]["bias"] +
                         x @ p["w2"]["kernel"])))) @ p["q"]["kernel"]
  s_g = e[:, 0] @ x
  s_h = np.concatenate([last, s_g]) @ p["w3"]["kernel"] + p["w3"]["bias"]
  return s_g, s_h
