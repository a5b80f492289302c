"""Session readouts shared by several backbones: click states [B, L, D] -> session vector.

* ``SoftAttentionReadout``: SR-GNN's eqs. 6-7 (SR-GNN, NISER+, TAGNN, HCGR).
* ``ReversedPositionReadout``: the position-aware soft attention of GCE-GNN
  (Wang et al. 2020, eqs. 13-15) that S^2-DHCN (Xia et al. 2021, eqs. 5-6)
  reuses: click ``t`` of a session of ``n`` clicks gets the position embedding
  of its distance from the end, ``p_{n-1-t}`` (the last click gets ``p_0``),

    z_t = tanh(W_1 [p_{n-1-t}; x_t])               (no bias, reference code)
    s   = mean_t x_t
    b_t = w_2^T sigmoid(W_g1 z_t + b_g1 + W_g2 s)
    S   = sum_t b_t x_t                              (no softmax over t)

  Both reference implementations leave the weights b_t unnormalised and add
  no bias inside the tanh; so does this module. Masked clicks get b_t = 0
  and do not enter the mean.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbrjax.models.backbone import dense, masked_softmax
from sbrjax.models.gnn import uniform_init


class SoftAttentionReadout(nn.Module):
  """SR-GNN readout; ``softmax=True`` normalises alpha over clicks (TAGNN).

  Returns (s_g [B, D], s_h [B, D]).
  """

  dim: int
  softmax: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, seq: jax.Array, last: jax.Array, mask: jax.Array):
    q1 = dense(self.dim, self.dim, self.dtype, name="w1")(last)  # W1 v_n + c
    q2 = dense(self.dim, self.dim, self.dtype, use_bias=False,
               name="w2")(seq)  # [B, L, D]
    e = dense(1, self.dim, self.dtype, use_bias=False, name="q")(
        jax.nn.sigmoid(q1[:, None, :] + q2))[..., 0]  # [B, L]
    alpha = masked_softmax(e, mask) if self.softmax else jnp.where(mask, e, 0)
    s_g = jnp.einsum("bl,bld->bd", alpha, seq)
    s_h = dense(self.dim, self.dim, self.dtype, name="w3")(
        jnp.concatenate([last, s_g], axis=-1))
    return s_g, s_h


def reversed_positions(lengths: jax.Array, max_len: int) -> jax.Array:
  """int32 [B, L]: ``lengths[b] - 1 - t`` for click t (0 = last click), 0 on padding."""
  t = jnp.arange(max_len)[None, :]
  return jnp.maximum(lengths[:, None] - 1 - t, 0).astype(jnp.int32)


class ReversedPositionReadout(nn.Module):
  """GCE-GNN / S^2-DHCN position-aware attention readout (module docstring).

  Attributes:
    dim: width D of the click states.
    max_positions: size of the position table (the references use 200);
      sessions longer than this are an error.
  """

  dim: int
  max_positions: int = 200
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, seq: jax.Array, mask: jax.Array, lengths: jax.Array) -> jax.Array:
    """seq [B, L, D], mask bool [B, L], lengths int [B] -> S [B, D]."""
    b, l, d = seq.shape
    if l > self.max_positions:
      raise ValueError(f"ReversedPositionReadout: sessions of max_len {l} exceed "
                       f"SBRConfig.pos_max_len={self.max_positions}; raise pos_max_len.")
    init = uniform_init(1.0 / d**0.5)
    pos_table = self.param("pos_embedding", init, (self.max_positions, d))
    w_1 = self.param("w_1", init, (2 * d, d))
    w_2 = self.param("w_2", init, (d, 1))
    pos = pos_table.astype(self.dtype)[reversed_positions(lengths, l)]  # [B, L, D]
    maskf = mask.astype(self.dtype)[..., None]  # [B, L, 1]
    seq = seq * maskf
    z = jnp.tanh(jnp.concatenate([pos, seq], axis=-1) @ w_1.astype(self.dtype))
    mean = jnp.sum(seq, axis=1) / jnp.maximum(jnp.sum(maskf, axis=1), 1.0)  # [B, D]
    gate = jax.nn.sigmoid(dense(d, d, self.dtype, name="glu1")(z) +
                          dense(d, d, self.dtype, use_bias=False, name="glu2")(mean)[:, None])
    beta = (gate @ w_2.astype(self.dtype)) * maskf  # [B, L, 1]
    return jnp.sum(beta * seq, axis=1)
