"""SR-GNN (Wu et al. 2019) on ml-100k, LLMGR leave-one-out protocol."""

from sbrjax.config import base_config


def get_config():
  config = base_config()
  config.sbr.backbone = "srgnn"
  config.sbr.embed_dim = 64
  config.train.batch_size = 256
  config.train.learning_rate = 1e-3
  config.train.epochs = 9               # covers the lr schedule 1e-3, 1e-4, 1e-5
  config.train.patience = 2
  return config
