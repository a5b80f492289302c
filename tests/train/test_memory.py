"""sbrjax.train.memory: the ahead-of-time step and its XLA memory account."""

import jax
import jax.numpy as jnp

from sbrjax.train import memory


def test_ahead_of_time_step_falls_back_to_jit_for_other_shapes():
  traced = []

  @jax.jit
  def step(state, batch):
    traced.append(batch.shape)
    return state + batch.sum(), {"n": batch.shape[0]}

  fast, account = memory.compile_with_memory(step, jnp.float32(0), jnp.ones((4, 2)))
  assert account["peak_bytes"] > 0 and traced == [(4, 2)]
  state, m = fast(jnp.float32(1), jnp.ones((4, 2)))
  assert float(state) == 9.0 and m["n"] == 4 and traced == [(4, 2)]  # no new trace
  state, m = fast(jnp.float32(1), jnp.ones((3, 2)))  # another shape: the jitted step
  assert float(state) == 7.0 and m["n"] == 3 and traced == [(4, 2), (3, 2)]
