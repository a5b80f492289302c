"""LLM4SBR(SR-GNN) on MovieLens-1M (session protocol, 10-minute gap).

Full protocol (no restriction): intents for every prefix row of every split
with SmolLM2-135M-Instruct + all-MiniLM-L6-v2. Generation of ~2 x 900k
prompts needs an accelerator (config.llm.dtype=bfloat16 there); on a CPU use
llm4sbr.session_fraction / llm4sbr.max_rows_per_session (stated reductions).
"""

from sbrjax.llm4sbr.config import llm4sbr_config


def get_config():
  config = llm4sbr_config()
  config.data.dataset = "movielens"
  config.data.variant = "ml-1m"
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
