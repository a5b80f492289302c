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


def masked_multilabel_xent(logits: jax.Array, labels: jax.Array, label_mask: jax.Array,
                           mask: jax.Array) -> jax.Array:
  """Mean cross-entropy of ``logits`` [B, I] against the uniform distribution
  over each row's valid ``labels`` [B, T] (``label_mask`` [B, T]).

  Row i's loss is ``logsumexp(logits_i) - mean_{valid j} logits_i[labels_ij]``
  (= the mean of the integer-label cross-entropies over its labels); with one
  valid label per row it equals :func:`masked_xent`.
  """
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B]
  picked = jnp.take_along_axis(logits, labels, axis=-1)  # [B, T]
  w = label_mask.astype(jnp.float32)
  mean_picked = jnp.sum(picked * w, -1) / jnp.maximum(jnp.sum(w, -1), 1.0)
  return masked_mean(lse - mean_picked, mask)
