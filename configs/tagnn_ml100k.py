"""TAGNN (Yu et al. 2020) on ml-100k, LLMGR leave-one-out protocol.

The SR-GNN settings of srgnn_ml100k.py with TAGNN's target-aware attention.
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "srgnn_ml100k.py"))
  config.sbr.backbone = "tagnn"
  # The target-aware term forms [batch, items, max_len] arrays: 256 x 1349 x 50
  # floats (69 MB) per array here, so the whole catalog is scored at once (0).
  # Large catalogs (Amazon, ml-1m) bound memory with chunks of items, e.g. 512.
  config.sbr.tagnn_item_chunk = 0
  return config
