"""The SBR baselines' shared settings on ml-100k (LLMGR leave-one-out protocol).

LLMGR (Guo et al.) trains its baselines with batch size 1024, embedding size
d = 64 and dropout 0.3, the learning rate chosen from {1e-4, 1e-3, 1e-2}.
This base holds the settings every baseline shares (overrides of
``sbrjax.config.base_config``); each ``configs/<model>_ml100k.py`` adds its
model and its dropout where the model has a dropout layer. Every model runs
at 1e-3 from the paper's grid; no grid search over {1e-4, 1e-3, 1e-2} has
been run (``--config.train.learning_rate=1e-2`` is one line; the README's
baseline table says which models were still improving at the last epoch).

Beyond what the paper states (the optimiser and stopping rule are not
given): Adam at a constant learning rate, L2 1e-5 (the base default), at
most 30 epochs, early stopping on validation sampled NDCG@10 with patience
5, best validation epoch restored.
"""

from sbrjax.config import base_config


def get_config():
  config = base_config()
  config.sbr.embed_dim = 64               # paper: d = 64
  config.train.batch_size = 1024          # paper: batch 1024
  config.train.learning_rate = 1e-3       # paper grid {1e-4, 1e-3, 1e-2}; models override
  config.train.schedule = "constant"      # not stated in the paper
  config.train.epochs = 30
  config.train.patience = 5
  return config
