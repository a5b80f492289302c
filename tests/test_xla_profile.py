"""sbrjax.train.xla_profile: HLO parsing, phase / kind classification, trace reading."""

import jax
import jax.numpy as jnp
import pytest

from sbrjax.train import xla_profile

B, D, H, O = 64, 128, 256, 32


def _loss(w1, w2, x, y):
  return jnp.sum((jnp.tanh(x @ w1) @ w2 - y) ** 2)


def _args():
  k = jax.random.split(jax.random.key(0), 4)
  return (jax.random.normal(k[0], (D, H)), jax.random.normal(k[1], (H, O)),
          jax.random.normal(k[2], (B, D)), jax.random.normal(k[3], (B, O)))


def test_train_step_dots_split_into_forward_and_backward_with_their_flops():
  step = jax.jit(jax.value_and_grad(_loss, argnums=(0, 1)))
  args = _args()
  text = step.lower(*args).compile().as_text()
  jax.block_until_ready(step(*args))
  prof = xla_profile.profile_step(lambda: step(*args), text, repeats=3, top=50)
  # Forward: x @ w1 and h @ w2. Backward: dh = ct @ w2^T, dw2 = h^T @ ct, dw1 = x^T @ dz.
  forward = 2 * B * D * H + 2 * B * H * O
  backward = 2 * B * O * H + 2 * H * B * O + 2 * D * B * H
  flops = prof["dot_gflop_per_step_by_phase"]
  assert flops["forward"] * 1e9 == pytest.approx(forward)
  assert flops["backward"] * 1e9 == pytest.approx(backward)
  assert set(prof["by_phase_s"]) <= {"forward", "backward", "other"}
  assert prof["runs_counted"] == 2
  assert sum(prof["by_kind_s"].values()) == pytest.approx(prof["op_s_per_step"])
  kinds = {(op["phase"], op["kind"]) for op in prof["top_ops"]}
  assert ("forward", "dot") in kinds and ("backward", "dot") in kinds
  assert all("transpose(" in op["op_name"] for op in prof["top_ops"]
             if op["phase"] == "backward")


def test_loop_bodies_count_once_per_iteration_and_the_container_not_at_all():
  def body(i, h, w):
    return jnp.tanh(h @ w)

  f = jax.jit(lambda w, x: jax.lax.fori_loop(0, 5, lambda i, h: body(i, h, w), x))
  w, x = jax.random.normal(jax.random.key(1), (H, H)) / 16, jnp.ones((B, H))
  text = f.lower(w, x).compile().as_text()
  jax.block_until_ready(f(w, x))
  infos = xla_profile.classify(xla_profile.parse_hlo(text))
  assert not any(i.name.startswith("while") for i in infos.values())
  prof = xla_profile.profile_step(lambda: f(w, x), text, repeats=3)
  assert prof["dot_gflop_per_step_by_phase"] == {"other": pytest.approx(5 * 2 * B * H * H / 1e9)}


def test_parse_hlo_reads_tuple_types_operands_and_called_computations():
  text = """HloModule m, entry_computation_layout={(f32[2,3]{1,0})->(f32[2,2]{1,0}, f32[])}

%fused (p0: f32[2,3], p1: f32[2,3]) -> f32[2,2] {
  %p0 = f32[2,3]{1,0} parameter(0)
  %p1 = f32[2,3]{1,0} parameter(1)
  ROOT %d = f32[2,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={1}, metadata={op_name="jit(f)/transpose(jvp())/dot_general"}
}

ENTRY %main (x: f32[2,3]) -> (f32[2,2], f32[]) {
  %x = f32[2,3]{1,0} parameter(0)
  %f = f32[2,2]{1,0} fusion(%x, %x), kind=kCustom, calls=%fused
  %c = f32[] constant(0)
  ROOT %t = (f32[2,2]{1,0}, f32[]) tuple(%f, %c)
}
"""
  comps = xla_profile.parse_hlo(text)
  assert set(comps) == {"fused", "main"}
  assert comps["main"]["f"].calls == ["fused"]
  assert comps["main"]["f"].operands == ["x", "x"]
  assert comps["main"]["t"].type_str == "(f32[2,2]{1,0}, f32[])"
  info = xla_profile.classify(comps)["f"]
  assert (info.phase, info.kind, info.flops) == ("backward", "dot", 2 * 2 * 2 * 3)


def test_a_run_that_executes_another_module_is_refused():
  def traced(x):
    return jnp.tanh(x) @ x

  def executed(x):
    return x @ x.T

  # Modules are told apart by name (the jitted function's): these differ.
  f, g = jax.jit(traced), jax.jit(executed)
  x = jnp.ones((8, 8))
  jax.block_until_ready(g(x))
  with pytest.raises(RuntimeError, match="no thunk events of this module"):
    xla_profile.profile_step(lambda: g(x), f.lower(x).compile().as_text(), repeats=2)
