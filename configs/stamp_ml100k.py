"""STAMP (Liu et al. 2018) on ml-100k, LLMGR protocol (sbrjax.models.sequence.STAMP).

The paper's h_s (from m_a alone; ``--config.sbr.stamp_add_mean=True`` gives the
official code's m_a + m_s). No dropout: STAMP has none.
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "sbr_ml100k_base.py"))
  config.sbr.backbone = "stamp"
  return config
