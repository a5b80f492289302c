"""HCGR (Guo et al. 2022) on ml-100k with the LLMGR baseline settings (sbr_ml100k_base.py).

HCGR here is a reconstruction (see sbrjax/models/hcgr.py: the paper's full
text and code were not available): one hyperbolic attention layer on the
Lorentz model with K = 1, contrastive term weight 0.1 over 100 sampled
negatives at temperature 1. LLMGR's dropout 0.3 goes on the item embeddings
before they are mapped onto the hyperboloid.
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "sbr_ml100k_base.py"))
  config.sbr.backbone = "hcgr"
  config.sbr.dropout = 0.3                 # LLMGR's dropout 0.3, on item embeddings
  config.sbr.hcgr_layers = 1
  config.sbr.hcgr_curvature = 1.0
  config.sbr.hcgr_cl_weight = 0.1
  config.sbr.hcgr_cl_temperature = 1.0
  config.sbr.hcgr_cl_negatives = 100
  return config
