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

Computation order. Aggregation is linear, so with ``W_a = [W_in; W_out]``
the [2D, 3D] input-gate kernel of eqs. (2)-(4),

  a W_a = (A_in h) (H_in W_in) + (A_out h) (H_out W_out)
          + deg_in (b_in W_in) + deg_out (b_out W_out),

where ``deg_in[v] = sum_{e->v} w_in[e]`` (1 if v has a predecessor, else 0)
and likewise ``deg_out``. ``GatedGNN`` evaluates the right-hand side: it
passes the states ``h`` themselves along the edges and multiplies once by the
[2D, 3D] product kernel (formed from the parameters each step, O(D^3)). Per
node that is 2D x 3D multiply-adds instead of 2 x D x D + 2D x 3D, 18% fewer
FLOPs in the layer that dominates training on CPU; the parameters are the
same tensors (``edge_in``, ``edge_out``, ``input_gates``) as in the
step-by-step form, which the tests keep as the reference.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

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


def in_out_degrees(graph: jraph.GraphsTuple, num_nodes: int) -> jax.Array:
  """[N, 2]: ``(sum of w_in into v, sum of w_out out of v)`` per node v."""
  deg_in = jax.ops.segment_sum(graph.edges["w_in"], graph.receivers,
                               num_segments=num_nodes)
  deg_out = jax.ops.segment_sum(graph.edges["w_out"], graph.senders,
                                num_segments=num_nodes)
  return jnp.stack([deg_in, deg_out], axis=-1)


class AffineParams(nn.Module):
  """A dense layer's parameters (``kernel`` [in, out], ``bias`` [out]), unapplied.

  The parameter tree is that of ``nn.Dense``; returning the tensors lets the
  caller multiply kernels together before touching the [N, D] activations.
  """

  features: int
  use_bias: bool
  init: Callable[..., jax.Array]
  bias_init: Optional[Callable[..., jax.Array]] = None  # None: ``init``

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param("kernel", self.init, (in_features, self.features))
    bias = (self.param("bias", self.bias_init or self.init, (self.features,))
            if self.use_bias else None)
    return kernel, bias


class GatedGNN(nn.Module):
  """SR-GNN's gated GNN: ``steps`` propagation steps sharing one set of weights.

  Attributes:
    hidden: node state width D.
    steps: number of propagation steps (weights shared across steps).
    edge_init_std: 0 gives every weight SR-GNN's U(-1/sqrt(D), 1/sqrt(D));
      > 0 gives the edge layers (H_in, H_out) N(0, std) kernels and zero
      biases instead, as RecBole's GC-SAN initialises its ``nn.Linear`` layers.
    dtype: computation dtype.
  """

  hidden: int
  steps: int = 1
  edge_init_std: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    init = uniform_init(1.0 / self.hidden**0.5)
    dense = lambda n, bias: nn.Dense(  # pylint: disable=g-long-lambda
        n, use_bias=bias, dtype=self.dtype, kernel_init=init, bias_init=init)
    edge = ((init, init) if not self.edge_init_std else
            (nn.initializers.normal(self.edge_init_std), nn.initializers.zeros))
    self.edge_in = AffineParams(self.hidden, True, *edge)  # H_in, b_in
    self.edge_out = AffineParams(self.hidden, True, *edge)  # H_out, b_out
    # [W_z; W_r; W_o] and their biases.
    self.input_gates = AffineParams(3 * self.hidden, True, init)
    self.state_gates = dense(2 * self.hidden, False)  # [U_z; U_r]
    self.candidate = dense(self.hidden, False)  # U_o

  def input_gate_terms(self, graph: jraph.GraphsTuple, h: jax.Array,
                       deg: jax.Array) -> jax.Array:
    """``a W_a + b_a`` of eqs. (2)-(4) in the fused order, [N, 3D].

    Args:
      graph: the batch graph.
      h: [N, D] node states.
      deg: [N, 2] output of ``in_out_degrees``.
    """
    d = self.hidden
    k_in, b_in = self.edge_in(d)  # [D, D], [D]
    k_out, b_out = self.edge_out(d)
    k_gate, b_gate = self.input_gates(2 * d)  # [2D, 3D], [3D]
    k_in, b_in, k_out, b_out, k_gate, b_gate = (
        x.astype(self.dtype) for x in (k_in, b_in, k_out, b_out, k_gate, b_gate))
    kernel = jnp.concatenate([k_in @ k_gate[:d], k_out @ k_gate[d:]])  # [2D, 3D]
    edge_bias = jnp.stack([b_in @ k_gate[:d], b_out @ k_gate[d:]])  # [2, 3D]
    ah = aggregate(graph, h, h)  # [N, 2D] = [A_in h, A_out h]
    return ah @ kernel + deg.astype(self.dtype) @ edge_bias + b_gate

  def step(self, graph: jraph.GraphsTuple, h: jax.Array,
           deg: jax.Array) -> jax.Array:
    """One propagation step, SR-GNN eqs. (1)-(5). h: [N, D] -> [N, D]."""
    gates = self.input_gate_terms(graph, h, deg)  # [N, 3D]
    gz, gr, go = jnp.split(gates, 3, axis=-1)  # 3 x [N, D]
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
    deg = in_out_degrees(graph, h.shape[0])  # [N, 2]
    for _ in range(self.steps):
      h = self.step(graph, h, deg)
    return h
