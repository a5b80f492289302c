"""LLM4SBR(SR-GNN) on MovieLens-1M with the paper's protocol.

Data (config.data defaults for the llm4sbr protocol): 10-minute clock windows
per user, items clicked < 5 times and 1-click sessions dropped, one example
per session (the last click is the target), chronological 90/10 split with
validation = the last 10% of train. `--config.job=data` prints the paper's
Table 1 columns to compare with its 47,808 / 5,313 sessions, 987,610 clicks
and average length 17.59 (`--config.data.session_rule=gap` for the other
reading of "a 10-minute interval as the splitting point").

Stage 1: SmolLM2-135M-Instruct by default; the paper's family is Qwen
(`--config.llm.source=hf --config.llm.path=QWEN2_DIR --config.llm.dtype=bfloat16`
on a GPU machine, e.g. Qwen2-7B-Instruct). About 2 x 53k prompts of up to 20
clicks: an accelerator job; on a CPU use llm4sbr.session_fraction (a stated
reduction).
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
