"""GRU4Rec (Hidasi et al. 2016) on ml-100k, LLMGR protocol (sbrjax.models.sequence.GRU4Rec).

One GRU layer of d = 64 units over one-hot clicks, LLMGR's dropout 0.3 on the
hidden layer, trained with the full-softmax cross-entropy (not the paper's
sampled BPR / TOP1 losses).
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "sbr_ml100k_base.py"))
  config.sbr.backbone = "gru4rec"
  config.sbr.hidden_dropout = 0.3         # LLMGR's dropout
  return config
