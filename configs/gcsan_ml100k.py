"""GC-SAN (Xu et al. 2019) on ml-100k, LLMGR leave-one-out protocol."""

from sbrjax.config import base_config


def get_config():
  config = base_config()
  config.sbr.backbone = "gcsan"
  config.sbr.embed_dim = 64
  config.sbr.gcsan_blocks = 1
  config.sbr.gcsan_heads = 1
  config.sbr.gcsan_weight = 0.6
  config.sbr.gcsan_dropout = 0.2
  # Beyond the paper, RecBole 1.2.1's GC-SAN (post-LayerNorm BERT layers, N(0, 0.02) weights;
  # README "SR-GNN and GC-SAN against RecBole"):
  #   --config.sbr.gcsan_block=bert --config.sbr.gcsan_init=normal
  config.sbr.gcsan_block = "paper"
  config.sbr.gcsan_init = "paper"
  config.train.batch_size = 256
  config.train.epochs = 9               # covers the lr schedule 1e-3, 1e-4, 1e-5
  config.train.patience = 2
  return config
