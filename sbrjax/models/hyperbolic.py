"""The Lorentz (hyperboloid) model of hyperbolic space, as HCGR uses it.

Points live on ``H^{d,K} = {x in R^{d+1}: <x, x>_L = -K, x_0 > 0}`` (sectional
curvature -1/K), with the Minkowski product ``<x, y>_L = -x_0 y_0 + sum_i x_i y_i``
and the origin ``o = (sqrt(K), 0, ..., 0)``. The operations (formulas as in
HGCN, Chami et al. 2019, whose Lorentz layers HCGR builds on):

  distance     d(x, y)     = sqrt(K) arcosh(-<x, y>_L / K)
  exp map      exp_x(v)    = cosh(|v|_L / sqrt K) x + sqrt(K) sinh(|v|_L / sqrt K) v / |v|_L
  log map      log_x(y)    = d(x, y) u / |u|_L,   u = y + <x, y>_L x / K
  at origin    exp_o((0, v)) = (sqrt K cosh(|v| / sqrt K), sqrt K sinh(|v| / sqrt K) v / |v|)
               log_o(x)      = (0, sqrt K arsinh(|x_s| / sqrt K) x_s / |x_s|)
  transport    P_{x->y}(v) = v + <y, v>_L / (K - <x, y>_L) (x + y)
  projections  onto the manifold (x_0 = sqrt(K + |x_s|^2)) and onto T_x H
               (v + <x, v>_L x / K)
  Poincare     p(x) = sqrt(K) x_s / (x_0 + sqrt K), the ball of radius sqrt K
  hyperbolic linear layer (HGCN eq. 5-6):
               W (x) b = exp_h(P_{o->h}(b)),  h = exp_o(W log_o(x))

``log_o`` uses ``arsinh(|x_s| / sqrt K)`` (equal to ``arcosh(x_0 / sqrt K)`` on
the manifold) because it stays accurate near the origin in float32. Norms and
the arcosh argument are clamped (``EPS``) so that coincident points and zero
tangent vectors give finite values and gradients. ``tests/models/test_hyperbolic.py``
checks every function against float64 NumPy, the Lorentz distance against the
Poincare-ball distance computed with Mobius addition, and the identities
(exp/log inverse, transport preserves norms and tangency).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 1e-7
# |v| / sqrt(K) is clipped here in exp maps: cosh(30) ~ 5e12 keeps <x, y>_L
# finite in float32 (its square stays below 3.4e38).
MAX_THETA = 30.0


def minkowski_dot(x: jax.Array, y: jax.Array, keepdims: bool = False) -> jax.Array:
  """``<x, y>_L = -x_0 y_0 + sum_i x_i y_i`` over the last axis."""
  out = -x[..., 0] * y[..., 0] + jnp.sum(x[..., 1:] * y[..., 1:], axis=-1)
  return out[..., None] if keepdims else out


def _safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = True) -> jax.Array:
  return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=keepdims), EPS * EPS))


def minkowski_norm(v: jax.Array, keepdims: bool = True) -> jax.Array:
  """``|v|_L = sqrt(<v, v>_L)`` of tangent vectors (clamped at ``EPS``)."""
  return jnp.sqrt(jnp.maximum(minkowski_dot(v, v, keepdims), EPS * EPS))


def _arcosh(z: jax.Array) -> jax.Array:
  """arcosh(z) for z >= 1 with a finite gradient at z = 1."""
  z = jnp.maximum(z, 1.0 + EPS)
  return jnp.log(z + jnp.sqrt(jnp.maximum(z * z - 1.0, EPS)))


def distance(x: jax.Array, y: jax.Array, k: float = 1.0) -> jax.Array:
  """Geodesic distance between points of ``H^{d,K}`` (last axis), shape ``x.shape[:-1]``."""
  sk = k**0.5
  return sk * _arcosh(-minkowski_dot(x, y) / k)


def origin(dim: int, k: float = 1.0, dtype=jnp.float32) -> jax.Array:
  """``o = (sqrt K, 0, ..., 0)`` in R^{dim+1}."""
  return jnp.zeros((dim + 1,), dtype).at[0].set(k**0.5)


def project(x: jax.Array, k: float = 1.0) -> jax.Array:
  """Onto the hyperboloid: keeps ``x_s``, sets ``x_0 = sqrt(K + |x_s|^2)``."""
  xs = x[..., 1:]
  x0 = jnp.sqrt(k + jnp.sum(xs * xs, axis=-1, keepdims=True))
  return jnp.concatenate([x0, xs], axis=-1)


def project_tangent(x: jax.Array, v: jax.Array, k: float = 1.0) -> jax.Array:
  """Onto ``T_x H``: ``v + <x, v>_L x / K`` (then ``<x, result>_L = 0``)."""
  return v + minkowski_dot(x, v, keepdims=True) * x / k


def expmap(x: jax.Array, v: jax.Array, k: float = 1.0) -> jax.Array:
  """``exp_x(v)`` for ``v`` in ``T_x H``, re-projected onto the manifold."""
  sk = k**0.5
  n = minkowski_norm(v)
  theta = jnp.minimum(n / sk, MAX_THETA)
  return project(jnp.cosh(theta) * x + sk * jnp.sinh(theta) * v / n, k)


def logmap(x: jax.Array, y: jax.Array, k: float = 1.0) -> jax.Array:
  """``log_x(y)`` in ``T_x H`` (zero for ``y = x``)."""
  u = y + minkowski_dot(x, y, keepdims=True) * x / k
  return distance(x, y, k)[..., None] * u / minkowski_norm(u)


def expmap0(v: jax.Array, k: float = 1.0) -> jax.Array:
  """``exp_o((0, v))`` for spatial tangent vectors ``v`` [..., d] -> points [..., d + 1]."""
  sk = k**0.5
  n = _safe_norm(v)
  theta = jnp.minimum(n / sk, MAX_THETA)
  return jnp.concatenate([sk * jnp.cosh(theta), sk * jnp.sinh(theta) * v / n], axis=-1)


def logmap0(x: jax.Array, k: float = 1.0) -> jax.Array:
  """Spatial part of ``log_o(x)`` (its time coordinate is 0), [..., d]."""
  sk = k**0.5
  xs = x[..., 1:]
  n = _safe_norm(xs)
  return sk * jnp.arcsinh(n / sk) * xs / n


def transport(x: jax.Array, y: jax.Array, v: jax.Array, k: float = 1.0) -> jax.Array:
  """Parallel transport ``P_{x->y}(v)`` of ``v`` in ``T_x H`` along the geodesic."""
  coef = minkowski_dot(y, v, keepdims=True) / (k - minkowski_dot(x, y, keepdims=True))
  return v + coef * (x + y)


def transport0(y: jax.Array, v: jax.Array, k: float = 1.0) -> jax.Array:
  """``P_{o->y}((0, v))`` for spatial ``v`` [..., d] -> tangent vectors at ``y`` [..., d + 1]."""
  o = origin(v.shape[-1], k, v.dtype)
  u = jnp.concatenate([jnp.zeros_like(v[..., :1]), v], axis=-1)
  return transport(jnp.broadcast_to(o, y.shape), y, u, k)


def to_poincare(x: jax.Array, k: float = 1.0) -> jax.Array:
  """The point of the Poincare ball (radius sqrt K) that ``x`` maps to."""
  sk = k**0.5
  return sk * x[..., 1:] / (x[..., :1] + sk)


def hyperbolic_linear(x: jax.Array, kernel: jax.Array, bias: jax.Array,
                      k: float = 1.0) -> jax.Array:
  """HGCN's linear layer: ``exp_h(P_{o->h}(b))`` with ``h = exp_o(W log_o(x))``.

  Args:
    x: [..., d_in + 1] points.
    kernel: [d_in, d_out] (applied as ``log_o(x) @ kernel``).
    bias: [d_out] spatial tangent vector at the origin.
  """
  h = expmap0(logmap0(x, k) @ kernel, k)
  b = jnp.broadcast_to(bias, h.shape[:-1] + bias.shape)
  return expmap(h, transport0(h, b, k), k)
