"""A tiny SR-GNN run for tests: small dims, few epochs, no progress bar.

Point ``data.manual_dir`` at raw ml-100k-format files (tests write small ones).
"""

from sbrjax.config import base_config


def get_config():
  config = base_config()
  config.data.max_len = 8
  config.data.num_negatives = 9
  config.sbr.embed_dim = 16
  config.train.batch_size = 32
  config.train.epochs = 3
  config.train.patience = 0
  config.train.log_every_steps = 2
  config.train.progress_bar = False
  config.eval.batch_size = 64
  return config
