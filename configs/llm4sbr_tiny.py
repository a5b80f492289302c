"""A tiny LLM4SBR run for tests: random tiny LLaMA (byte tokenizer), MiniLM.

Point ``data.manual_dir`` at raw ml-100k-format files (tests write small
ones). Reductions: a 2-layer random LLaMA generates 4-token intents from
prompts of the 3 most recent clicks; SBR width 16, 2 epochs.
"""

from sbrjax.llm4sbr.config import llm4sbr_config


def get_config():
  config = llm4sbr_config()
  config.data.max_len = 8
  config.data.num_negatives = 9
  config.data.download = False
  config.sbr.embed_dim = 16
  config.llm.source = "random"
  config.llm.preset = "tiny"
  config.llm4sbr.prompt_max_items = 3
  config.llm4sbr.max_new_tokens = 4
  config.llm4sbr.chat = False
  config.llm4sbr.gen_batch_size = 64
  config.llm4sbr.gen_chunk = 128
  config.llm4sbr.length_bucket = 64
  config.text_encoder.max_length = 32
  config.train.batch_size = 32
  config.train.epochs = 2
  config.train.patience = 0
  config.train.log_every_steps = 2
  config.train.progress_bar = False
  config.eval.batch_size = 64
  return config
