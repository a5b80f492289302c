"""S^2-DHCN (Xia et al. 2021) on ml-100k with the LLMGR baseline settings (sbr_ml100k_base.py).

3 convolution layers and one hyperedge per training sequence (the paper; the
reference code's hyperedges are every training prefix:
--config.sbr.s2dhcn_hyperedges=examples).

Self-supervised weight beta = 0.001. The reference code sums L_S over the
batch's sessions but averages the cross-entropy, so beta's weight against the
recommendation loss grows with the batch: its beta = 0.01 at its batch of 100
is about beta = 0.001 at this config's batch of 1024. With beta = 0.01 here
(rows "beta 0.01" in the README) L_S outweighed the cross-entropy all through
training and S2-DHCN ended last of every model; beta = 0.001 keeps the
reference's balance.

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
  config.sbr.s2dhcn_beta = 0.001  # = 0.01 x 100 / 1024: the reference's balance (docstring)
  config.sbr.s2dhcn_hyperedges = "sessions"
  config.sbr.s2dhcn_layer_mix = "mean"
  return config
