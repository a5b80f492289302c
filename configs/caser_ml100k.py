"""Caser (Tang & Wang 2018) on ml-100k, LLMGR protocol (sbrjax.models.sequence.Caser).

The paper's convolution settings (L = 5 most recent clicks, n_h = 16
horizontal filters per height, n_v = 4 vertical filters) and LLMGR's dropout
0.3 on the convolution outputs (Caser's own dropout layer; the paper used 0.5).
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "sbr_ml100k_base.py"))
  config.sbr.backbone = "caser"
  config.sbr.caser_len = 5
  config.sbr.caser_h_filters = 16
  config.sbr.caser_v_filters = 4
  config.sbr.hidden_dropout = 0.3         # LLMGR's dropout
  return config
