"""GCE-GNN (Wang et al. 2020) on ml-100k with the LLMGR baseline settings (sbr_ml100k_base.py).

Global item graph from the training split: items within 3 clicks linked, the
12 most frequent neighbours kept (reference build_graph.py); one global hop
(the reference's setting for Tmall / Nowplaying). The paper setting's
dropout 0.3 replaces the reference's global-level dropout of 0.5; the local
and aggregator dropouts stay at the reference's 0.
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "sbr_ml100k_base.py"))
  config.sbr.backbone = "gcegnn"
  config.sbr.gcegnn_hops = 1
  config.sbr.gcegnn_neighbors = 12
  config.sbr.gcegnn_window = 3
  config.sbr.gcegnn_dropout_global = 0.3   # LLMGR's dropout 0.3 (reference: 0.5)
  config.sbr.gcegnn_dropout_local = 0.0
  config.sbr.gcegnn_dropout_gcn = 0.0
  return config
