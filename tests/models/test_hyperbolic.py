"""Lorentz-model operations against float64 NumPy and the Poincare ball (Mobius addition)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbrjax.models import hyperbolic as hyp
from tests.models import np_hyperbolic as ref

D = 5
KS = [1.0, 0.5, 2.5]


def points(k, n=7, seed=0, scale=0.4):
  """Points of H^{D,K} from random spatial tangent vectors at the origin.

  Within a few units of the origin, where float32 keeps ~1e-6 relative
  accuracy of the Minkowski products (the models stay there too).
  """
  v = np.random.default_rng(seed).normal(size=(n, D)) * scale
  return ref.expmap0(v, k)


def tangent(x, k, seed=1, length=0.9):
  """Random tangent vectors at x (v + <x, v> x / K), rescaled to |v|_L = length."""
  v = np.random.default_rng(seed).normal(size=x.shape)
  v = v + (ref.mdot(x, v)[..., None] / k) * x
  return v * (length / ref.mnorm(v))[..., None]


def f32(x):
  return jnp.asarray(x, jnp.float32)


@pytest.mark.parametrize("k", KS)
def test_points_lie_on_the_hyperboloid_and_project_is_identity_there(k):
  x = points(k)
  np.testing.assert_allclose(ref.mdot(x, x), -k, rtol=1e-12)
  np.testing.assert_allclose(hyp.project(f32(x), k), x, rtol=1e-5, atol=1e-5)
  # project() repairs the time coordinate of a perturbed point.
  bad = x.copy()
  bad[:, 0] *= 1.3
  np.testing.assert_allclose(hyp.project(f32(bad), k), x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(hyp.origin(D, k), ref.origin(D, k), rtol=1e-7)


@pytest.mark.parametrize("k", KS)
def test_minkowski_dot_and_distance_match_numpy(k):
  x, y = points(k, seed=0), points(k, seed=1)
  np.testing.assert_allclose(hyp.minkowski_dot(f32(x), f32(y)), ref.mdot(x, y), rtol=1e-5)
  np.testing.assert_allclose(hyp.distance(f32(x), f32(y), k), ref.dist(x, y, k),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", KS)
def test_lorentz_distance_equals_poincare_ball_distance_via_mobius_addition(k):
  x, y = points(k, seed=2), points(k, seed=3)
  u, v = ref.to_poincare(x, k), ref.to_poincare(y, k)
  np.testing.assert_allclose(hyp.to_poincare(f32(x), k), u, rtol=1e-5, atol=1e-6)
  assert (np.linalg.norm(u, axis=-1) < np.sqrt(k)).all()  # inside the ball of radius sqrt K
  np.testing.assert_allclose(hyp.distance(f32(x), f32(y), k), ref.poincare_dist(u, v, 1 / k),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", KS)
def test_exp_and_log_maps_match_numpy_and_invert_each_other(k):
  x, y = points(k, seed=4), points(k, seed=5)
  v = tangent(x, k)
  np.testing.assert_allclose(hyp.expmap(f32(x), f32(v), k), ref.expmap(x, v, k),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(hyp.logmap(f32(x), f32(y), k), ref.logmap(x, y, k),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(hyp.expmap(f32(x), hyp.logmap(f32(x), f32(y), k), k), y,
                             rtol=1e-4, atol=1e-4)
  # The geodesic from x along v has length |v|_L.
  np.testing.assert_allclose(hyp.distance(f32(x), hyp.expmap(f32(x), f32(v), k), k),
                             ref.mnorm(v), rtol=1e-4, atol=1e-5)
  # log_x(y) is tangent at x.
  np.testing.assert_allclose(ref.mdot(np.asarray(hyp.logmap(f32(x), f32(y), k), np.float64), x),
                             0, atol=1e-4)


@pytest.mark.parametrize("k", KS)
def test_maps_at_the_origin_match_the_general_maps(k):
  v = np.random.default_rng(6).normal(size=(7, D))
  x = hyp.expmap0(f32(v), k)
  np.testing.assert_allclose(x, ref.expmap0(v, k), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(hyp.logmap0(x, k), v, rtol=1e-5, atol=1e-5)
  y = points(k, seed=7)
  np.testing.assert_allclose(hyp.logmap0(f32(y), k), ref.logmap0(y, k), rtol=1e-5, atol=1e-5)
  o = np.broadcast_to(ref.origin(D, k), y.shape)
  np.testing.assert_allclose(hyp.logmap0(f32(y), k), ref.logmap(o, y, k)[:, 1:],
                             rtol=1e-4, atol=1e-5)
  # The zero vector maps to the origin and back, with finite gradients.
  np.testing.assert_allclose(hyp.expmap0(jnp.zeros((1, D)), k)[0], ref.origin(D, k), atol=1e-6)
  grad = jax.grad(lambda z: jnp.sum(hyp.logmap0(hyp.expmap0(z, k), k) ** 2))(jnp.zeros((2, D)))
  assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize("k", KS)
def test_parallel_transport_matches_numpy_and_preserves_norm_and_tangency(k):
  x, y = points(k, seed=8), points(k, seed=9)
  v = tangent(x, k, seed=10)
  got = np.asarray(hyp.transport(f32(x), f32(y), f32(v), k), np.float64)
  np.testing.assert_allclose(got, ref.transport(x, y, v, k), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ref.mdot(got, y), 0, atol=1e-4)
  np.testing.assert_allclose(ref.mnorm(got), ref.mnorm(v), rtol=1e-4)
  # From the origin: transport0 of a spatial vector.
  us = np.random.default_rng(11).normal(size=(7, D))
  u = np.concatenate([np.zeros((7, 1)), us], -1)
  o = np.broadcast_to(ref.origin(D, k), y.shape)
  np.testing.assert_allclose(hyp.transport0(f32(y), f32(us), k), ref.transport(o, y, u, k),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", KS)
def test_project_tangent(k):
  x = points(k, seed=12)
  v = np.random.default_rng(13).normal(size=x.shape)
  got = np.asarray(hyp.project_tangent(f32(x), f32(v), k), np.float64)
  np.testing.assert_allclose(ref.mdot(got, x), 0, atol=1e-4)
  np.testing.assert_allclose(got, v + (ref.mdot(x, v)[..., None] / k) * x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", KS)
def test_hyperbolic_linear_layer_matches_numpy(k):
  x = points(k, seed=14)
  rng = np.random.default_rng(15)
  kernel, bias = rng.normal(size=(D, 3)) * 0.5, rng.normal(size=(3,)) * 0.3
  got = hyp.hyperbolic_linear(f32(x), f32(kernel), f32(bias), k)
  want = ref.hyperbolic_linear(x, kernel, bias, k)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ref.mdot(want, want), -k, rtol=1e-9)


def test_coincident_points_and_zero_vectors_give_finite_values_and_gradients():
  x = f32(points(1.0, n=3))
  d = hyp.distance(x, x)
  assert np.all(np.asarray(d) < 1e-3)
  for fn in (lambda z: hyp.distance(z, z).sum(),
             lambda z: hyp.logmap(z, z).sum(),
             lambda z: hyp.expmap(z, jnp.zeros_like(z)).sum()):
    assert np.isfinite(np.asarray(jax.grad(fn)(x))).all()
