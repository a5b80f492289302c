"""LLM4SBR(SR-GNN) on Amazon Beauty (2014 reviews; one session per user).

Full protocol; intent generation for every prefix row needs an accelerator
(see configs/llm4sbr_ml100k.py for the CPU-sized reductions).
"""

from sbrjax.llm4sbr.config import llm4sbr_config


def get_config():
  config = llm4sbr_config()
  config.data.dataset = "amazon"
  config.data.variant = "beauty2014"
  config.sbr.backbone = "srgnn"
  config.sbr.embed_dim = 100
  config.llm4sbr.prompt_max_items = 20
  config.llm4sbr.max_new_tokens = 16
  config.llm4sbr.gen_batch_size = 128
  config.llm4sbr.gen_chunk = 4096
  config.train.batch_size = 100
  config.train.epochs = 30
  config.train.patience = 5
  return config
