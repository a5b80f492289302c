"""Optimisers and learning-rate schedules from the ``train`` config section."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import jax
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
                   params: Any, trainable: Iterable[str],
                   label_learning_rates: Optional[Mapping[str, float]] = None
                   ) -> optax.GradientTransformation:
  """Adam/AdamW for the trainable labels, ``set_to_zero`` (no state) elsewhere.

  Args:
    train: the ``train`` config section (optimizer, weight decay, clipping).
    schedule: the learning-rate schedule at ``train.learning_rate``.
    params: the parameter tree (its labels come from ``sbrjax.train.labels``).
    trainable: the labels that train.
    label_learning_rates: optional ``{label: peak rate}``; a trainable label
      listed with a rate > 0 follows ``schedule`` scaled by
      ``rate / train.learning_rate`` (same warm-up and decay shape), the
      others follow ``schedule``. With such a rate every trainable label
      gets its own optimizer state (``optax.multi_transform`` over labels);
      without, one group "trainable" (the layout earlier checkpoints hold).
      Frozen leaves get no state and zero updates. Gradient clipping, when
      on, uses the global norm over the trainable leaves only.
  """
  trainable = tuple(dict.fromkeys(trainable))
  unknown = set(trainable) - set(labels_lib.LABELS)
  if unknown:
    raise ValueError(f"Unknown trainable labels {sorted(unknown)}; choose from "
                     f"{labels_lib.LABELS}.")
  rates = dict(label_learning_rates or {})
  bad = {k: v for k, v in rates.items() if k not in labels_lib.LABELS or float(v) < 0}
  if bad:
    raise ValueError(f"Per-label learning rates {bad} name unknown labels or are negative; "
                     f"labels are {labels_lib.LABELS}, rates >= 0 (0: the stage's rate).")
  rates = {k: float(v) for k, v in rates.items() if float(v) > 0 and k in trainable}
  clip = (optax.clip_by_global_norm(float(train.grad_clip_norm))
          if train.grad_clip_norm and train.grad_clip_norm > 0 else None)
  label_of = labels_lib.label_tree(params)
  if not rates:
    # One group: the optimizer state keeps the layout it always had.
    mask = jax.tree.map(lambda l: "trainable" if l in trainable else "frozen", label_of)
    inner = optax.chain(*([clip] if clip else []), *_adam_parts(train, schedule))
    return optax.multi_transform({"trainable": inner, "frozen": optax.set_to_zero()}, mask)
  base = float(train.learning_rate)
  groups = {}
  for label in trainable:
    sched = _scaled(schedule, rates[label] / base) if label in rates else schedule
    groups[label] = optax.chain(*_adam_parts(train, sched))
  groups["frozen"] = optax.set_to_zero()
  mask = jax.tree.map(lambda l: l if l in trainable else "frozen", label_of)
  tx = optax.multi_transform(groups, mask)
  if clip is None:
    return tx
  # One global norm over every trainable leaf, as with a single group.
  return optax.chain(optax.masked(clip, jax.tree.map(lambda g: g != "frozen", mask)), tx)


def _scaled(schedule: optax.Schedule, factor: float) -> optax.Schedule:
  return lambda step: schedule(step) * factor


def _adam_parts(train: ml_collections.ConfigDict, schedule: optax.Schedule) -> list:
  wd = float(train.weight_decay)
  if train.optimizer == "adam":
    if wd and train.weight_decay_mode == "l2":
      return [optax.add_decayed_weights(wd), optax.adam(schedule)]
    if wd and train.weight_decay_mode == "decoupled":
      return [optax.adamw(schedule, weight_decay=wd)]
    if wd:
      raise ValueError(f"config.train.weight_decay_mode={train.weight_decay_mode!r} is not "
                       "supported; choose 'l2' or 'decoupled'.")
    return [optax.adam(schedule)]
  if train.optimizer == "adamw":
    return [optax.adamw(schedule, weight_decay=wd)]
  raise ValueError(f"config.train.optimizer={train.optimizer!r} is not supported; "
                   "choose 'adam' or 'adamw'.")
