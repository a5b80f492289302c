"""Optimisers and learning-rate schedules from the ``train`` config section."""

from __future__ import annotations

from typing import Any, Iterable

import ml_collections
import optax

from sbrjax.train import labels as labels_lib


def make_schedule(train: ml_collections.ConfigDict, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  """constant | step (x decay_rate every decay_epochs) | cosine (with warm-up)."""
  lr = float(train.learning_rate)
  if lr <= 0:
    raise ValueError(f"config.train.learning_rate must be > 0, got {lr}.")
  if train.schedule == "constant":
    return optax.constant_schedule(lr)
  if train.schedule == "step":
    if train.decay_epochs < 1:
      raise ValueError("config.train.decay_epochs must be >= 1 for the step schedule.")
    return optax.exponential_decay(
        lr, transition_steps=int(train.decay_epochs) * steps_per_epoch,
        decay_rate=float(train.decay_rate), staircase=True)
  if train.schedule == "cosine":
    warmup = int(train.warmup_steps)
    if warmup <= 0:
      return optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=0.0)
  raise ValueError(f"config.train.schedule={train.schedule!r} is not supported; "
                   "choose one of 'constant', 'step', 'cosine'.")


def make_optimizer(train: ml_collections.ConfigDict, schedule: optax.Schedule,
                   params: Any, trainable: Iterable[str]) -> optax.GradientTransformation:
  """Adam/AdamW for the trainable labels, ``set_to_zero`` (no state) elsewhere."""
  wd = float(train.weight_decay)
  parts = []
  if train.grad_clip_norm and train.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(train.grad_clip_norm)))
  if train.optimizer == "adam":
    if wd and train.weight_decay_mode == "l2":
      parts.append(optax.add_decayed_weights(wd))
      parts.append(optax.adam(schedule))
    elif wd and train.weight_decay_mode == "decoupled":
      parts.append(optax.adamw(schedule, weight_decay=wd))
    elif wd:
      raise ValueError(f"config.train.weight_decay_mode={train.weight_decay_mode!r} is not "
                       "supported; choose 'l2' or 'decoupled'.")
    else:
      parts.append(optax.adam(schedule))
  elif train.optimizer == "adamw":
    parts.append(optax.adamw(schedule, weight_decay=wd))
  else:
    raise ValueError(f"config.train.optimizer={train.optimizer!r} is not supported; "
                     "choose 'adam' or 'adamw'.")
  inner = optax.chain(*parts)
  mask = labels_lib.trainable_mask(params, trainable)
  return optax.multi_transform({"trainable": inner, "frozen": optax.set_to_zero()}, mask)
