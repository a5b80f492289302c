"""The LLMGR paper's baseline settings on ml-100k (LLMGR leave-one-out protocol).

LLMGR (Guo et al.) trains every baseline with batch size 1024, dropout 0.3,
embedding size d = 64 and a learning rate from {1e-4, 1e-3, 1e-2}. The model
files (gcegnn_ml100k.py, s2dhcn_ml100k.py, hcgr_ml100k.py) load this base,
name their backbone and say where the dropout of 0.3 goes in their model.
Overrides of srgnn_ml100k.py (Adam, x0.1 every 3 epochs, L2 1e-5, 9 epochs,
early stopping on validation sampled NDCG@10 with patience 2):

  train.batch_size     256 -> 1024   (paper)
  train.learning_rate  1e-3          (the grid's middle value; no grid search was
                                      run here: --config.train.learning_rate=1e-2 | 1e-4)
  sbr.embed_dim        64            (paper; as srgnn_ml100k.py)
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "srgnn_ml100k.py"))
  config.train.batch_size = 1024
  config.train.learning_rate = 1e-3
  config.sbr.embed_dim = 64
  return config
