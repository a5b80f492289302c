"""NISER+ (Gupta et al. 2019) on ml-100k, LLMGR leave-one-out protocol.

The SR-GNN settings of srgnn_ml100k.py plus NISER+'s normalised item and
session embeddings (scale sigma), position embeddings and item dropout 0.1.
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "srgnn_ml100k.py"))
  config.sbr.backbone = "niser"
  config.sbr.niser_scale = 12.0
  config.sbr.dropout = 0.1
  return config
