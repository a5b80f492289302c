"""FPMC (Rendle et al. 2010) on ml-100k, LLMGR protocol (sbrjax.models.sequence.FPMC).

First-order FPMC with the session-mean user factor (the batch has no user
id); D = 64 splits into an MF and a Markov-chain factor of 32 each. No
dropout: FPMC has none.
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "sbr_ml100k_base.py"))
  config.sbr.backbone = "fpmc"
  return config
