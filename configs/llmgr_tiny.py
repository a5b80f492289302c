"""A tiny LLMGR run for tests: random 2-layer LLaMA, byte tokenizer, few prompts.

Point ``data.manual_dir`` at raw ml-100k-format files (tests write small ones).
"""

from sbrjax.llmgr.config import llmgr_config


def get_config():
  config = llmgr_config("llmgr")
  config.data.max_len = 8
  config.data.num_negatives = 9
  config.sbr.embed_dim = 16
  config.llm.source = "random"
  config.llm.preset = "tiny"
  config.lora.rank = 4
  config.lora.dropout = 0.0
  config.llmgr.max_nodes = 6
  config.llmgr.max_text_tokens = 16
  config.llmgr.num_candidates = 5
  config.llmgr.max_successors = 2
  config.llmgr.length_buckets = (128, 192)
  config.llmgr.train_limit = 24
  config.llmgr.eval_limit = 16
  config.train.batch_size = 8
  config.train.log_every_steps = 2
  config.train.progress_bar = False
  config.eval.batch_size = 8
  for stage in config.stages.values():
    stage.epochs = 1
    stage.learning_rate = 1e-3
  config.sbr_train.batch_size = 32
  config.sbr_train.epochs = 1
  config.sbr_train.progress_bar = False
  return config
