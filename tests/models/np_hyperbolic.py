"""Float64 NumPy references of the Lorentz-model operations (textbook formulas).

Written independently of ``sbrjax.models.hyperbolic`` (no clamping, the
arcosh form of log_o) and shared by its tests and HCGR's.
"""

import numpy as np


def mdot(x, y):
  return -x[..., 0] * y[..., 0] + np.sum(x[..., 1:] * y[..., 1:], axis=-1)


def mnorm(v):
  return np.sqrt(np.maximum(mdot(v, v), 0.0))


def dist(x, y, k):
  return np.sqrt(k) * np.arccosh(np.maximum(-mdot(x, y) / k, 1.0))


def origin(d, k):
  o = np.zeros(d + 1)
  o[0] = np.sqrt(k)
  return o


def expmap(x, v, k):
  n = mnorm(v)[..., None]
  return np.cosh(n / np.sqrt(k)) * x + np.sqrt(k) * np.sinh(n / np.sqrt(k)) * v / n


def logmap(x, y, k):
  u = y + (mdot(x, y)[..., None] / k) * x
  return dist(x, y, k)[..., None] * u / mnorm(u)[..., None]


def expmap0(v, k):
  """Spatial v [..., d] -> point [..., d + 1], via the general exp map at o."""
  o = np.broadcast_to(origin(v.shape[-1], k), v.shape[:-1] + (v.shape[-1] + 1,))
  u = np.concatenate([np.zeros(v.shape[:-1] + (1,)), v], axis=-1)
  n = np.linalg.norm(v, axis=-1, keepdims=True)
  safe = np.where(n > 0, n, 1.0)
  out = np.cosh(n / np.sqrt(k)) * o + np.sqrt(k) * np.sinh(n / np.sqrt(k)) * u / safe
  return np.where(n > 0, out, o)


def logmap0(x, k):
  """Point -> spatial part of log_o(x), via the arcosh form of the distance."""
  xs = x[..., 1:]
  n = np.linalg.norm(xs, axis=-1, keepdims=True)
  r = np.sqrt(k) * np.arccosh(np.maximum(x[..., :1] / np.sqrt(k), 1.0))
  return np.where(n > 0, r * xs / np.where(n > 0, n, 1.0), 0.0)


def transport(x, y, v, k):
  """Parallel transport via logs: v - <log_x y, v> / d^2 (log_x y + log_y x)."""
  lxy, lyx = logmap(x, y, k), logmap(y, x, k)
  d2 = dist(x, y, k)[..., None] ** 2
  return v - mdot(lxy, v)[..., None] / d2 * (lxy + lyx)


def to_poincare(x, k):
  return np.sqrt(k) * x[..., 1:] / (x[..., :1] + np.sqrt(k))


def mobius_add(u, v, c):
  """Mobius addition on the Poincare ball of curvature -c."""
  uv = np.sum(u * v, -1, keepdims=True)
  u2 = np.sum(u * u, -1, keepdims=True)
  v2 = np.sum(v * v, -1, keepdims=True)
  num = (1 + 2 * c * uv + c * v2) * u + (1 - c * u2) * v
  return num / (1 + 2 * c * uv + c * c * u2 * v2)


def poincare_dist(u, v, c):
  """d_c(u, v) = 2 / sqrt(c) artanh(sqrt(c) |(-u) (+)_c v|)."""
  return 2 / np.sqrt(c) * np.arctanh(np.sqrt(c) * np.linalg.norm(mobius_add(-u, v, c), axis=-1))


def hyperbolic_linear(x, kernel, bias, k):
  h = expmap0(logmap0(x, k) @ kernel, k)
  o = np.broadcast_to(origin(kernel.shape[1], k), h.shape)
  b = np.concatenate([np.zeros(h.shape[:-1] + (1,)), np.broadcast_to(bias, h.shape[:-1] +
                                                                     bias.shape)], -1)
  return expmap(h, transport(o, h, b, k), k)
