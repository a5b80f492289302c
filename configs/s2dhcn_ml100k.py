"""S^2-DHCN (Xia et al. 2021) on ml-100k with the LLMGR baseline settings (sbr_ml100k_base.py).

Reference defaults: 3 convolution layers, self-supervised loss weight
beta = 0.01, one hyperedge per training sequence (the paper; the reference
code's hyperedges are every training prefix: --config.sbr.s2dhcn_hyperedges=examples).
The model has no dropout (none in the reference), so LLMGR's dropout 0.3 has
no place to go. Both channels average their L + 1 layer outputs as the paper's
eqs. 3 and 8 say; the reference code sums them (X_h L + 1 times larger):
--config.sbr.s2dhcn_layer_mix=sum.
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "sbr_ml100k_base.py"))
  config.sbr.backbone = "s2dhcn"
  config.sbr.s2dhcn_layers = 3
  config.sbr.s2dhcn_beta = 0.01
  config.sbr.s2dhcn_hyperedges = "sessions"
  config.sbr.s2dhcn_layer_mix = "mean"
  return config
