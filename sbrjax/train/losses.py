"""Losses shared by every method (computed in float32 over the real rows)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of ``values`` [B] over the rows where ``mask`` [B] is True (0 if none)."""
  maskf = mask.astype(jnp.float32)
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(maskf), 1.0)


def masked_xent(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of ``logits`` [B, I] against ``targets`` [B]."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return masked_mean(ce, mask)
