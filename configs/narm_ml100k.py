"""NARM (Li et al. 2017) on ml-100k, LLMGR protocol (sbrjax.models.sequence.NARM).

LLMGR's dropout 0.3 at both of NARM's dropout layers (item embeddings and
[c_g; c_l]; the NARM code used 0.25 and 0.5).
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "sbr_ml100k_base.py"))
  config.sbr.backbone = "narm"
  config.sbr.dropout = 0.3                # LLMGR's dropout, on the click embeddings
  config.sbr.hidden_dropout = 0.3         # and on [c_g; c_l]
  return config
