"""Gated graph neural network of SR-GNN, jraph-style over a padded batch.

The batch is a ``jraph.GraphsTuple`` from ``sbrjax.data.graphs`` whose
``edges`` hold the SR-GNN aggregation weights ``w_in`` (1 / in-degree of the
receiver) and ``w_out`` (1 / out-degree of the sender). With ``H_in, H_out``
the edge transforms, one propagation step is SR-GNN's eqs. (1)-(5):

  a_in[v]  = sum_{e = u->v} w_in[e]  (H_in h_u + b_in)      # A_in  row of v
  a_out[u] = sum_{e = u->v} w_out[e] (H_out h_v + b_out)    # A_out row of u
  a = [a_in; a_out]                                          # (1)
  z = sigmoid(W_z a + U_z h + b_z)                           # (2)
  r = sigmoid(W_r a + U_r h + b_r)                           # (3)
  c = tanh(W_o a + U_o (r * h) + b_o)                        # (4)
  h' = (1 - z) * h + z * c                                   # (5)

Biases follow the original TensorFlow code (edge biases inside the sum, one
bias per gate); the PyTorch port's extra ``b_iah``/``b_oah`` outside the sum
is a reparameterisation of ``b_z, b_r, b_o`` and is left out. Padding edges
carry weight 0, so padding graphs never send into real nodes; all totals come
from static shapes, so one compiled program serves every batch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph


def uniform_init(scale: float):
  """Initializer drawing from U(-scale, scale) (SR-GNN's reference init)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def propagate(values: jax.Array, senders: jax.Array, receivers: jax.Array,
              weights: jax.Array) -> jax.Array:
  """Weighted sum of ``values[sender]`` into each receiver.

  Args:
    values: [N, D] per-node messages.
    senders: int32 [E] source node of each edge.
    receivers: int32 [E] destination node of each edge.
    weights: [E] edge weights (0 on padding edges).

  Returns:
    [N, D] with row ``v`` = sum over edges ``e`` into ``v`` of
    ``weights[e] * values[senders[e]]``.
  """
  messages = values[senders] * weights[:, None].astype(values.dtype)  # [E, D]
  return jax.ops.segment_sum(messages, receivers,
                             num_segments=values.shape[0])


def aggregate(graph: jraph.GraphsTuple, msg_in: jax.Array,
              msg_out: jax.Array) -> jax.Array:
  """SR-GNN eq. (1): ``[A_in msg_in; A_out msg_out]`` per node, [N, 2D]."""
  a_in = propagate(msg_in, graph.senders, graph.receivers,
                   graph.edges["w_in"])
  a_out = propagate(msg_out, graph.receivers, graph.senders,
                    graph.edges["w_out"])
  return jnp.concatenate([a_in, a_out], axis=-1)


class GatedGNN(nn.Module):
  """SR-GNN's gated GNN: ``steps`` propagation steps sharing one set of weights.

  Attributes:
    hidden: node state width D.
    steps: number of propagation steps (weights shared across steps).
    dtype: computation dtype.
  """

  hidden: int
  steps: int = 1
  dtype: Any = jnp.float32

  def setup(self):
    init = uniform_init(1.0 / self.hidden**0.5)
    dense = lambda n, bias: nn.Dense(  # pylint: disable=g-long-lambda
        n, use_bias=bias, dtype=self.dtype, kernel_init=init, bias_init=init)
    self.edge_in = dense(self.hidden, True)  # H_in, b_in
    self.edge_out = dense(self.hidden, True)  # H_out, b_out
    self.input_gates = dense(3 * self.hidden, True)  # [W_z; W_r; W_o], biases
    self.state_gates = dense(2 * self.hidden, False)  # [U_z; U_r]
    self.candidate = dense(self.hidden, False)  # U_o

  def step(self, graph: jraph.GraphsTuple, h: jax.Array) -> jax.Array:
    """One propagation step, SR-GNN eqs. (1)-(5). h: [N, D] -> [N, D]."""
    a = aggregate(graph, self.edge_in(h), self.edge_out(h))  # [N, 2D]
    gz, gr, go = jnp.split(self.input_gates(a), 3, axis=-1)  # 3 x [N, D]
    uz, ur = jnp.split(self.state_gates(h), 2, axis=-1)
    z = jax.nn.sigmoid(gz + uz)
    r = jax.nn.sigmoid(gr + ur)
    c = jnp.tanh(go + self.candidate(r * h))
    return (1.0 - z) * h + z * c

  def __call__(self, graph: jraph.GraphsTuple, h: jax.Array) -> jax.Array:
    """Runs ``steps`` steps from initial node states ``h`` [N, D]."""
    if self.steps < 1:
      raise ValueError(f"GatedGNN.steps must be >= 1, got {self.steps}")
    h = h.astype(self.dtype)
    for _ in range(self.steps):
      h = self.step(graph, h)
    return h
