"""LLMGR-M on ml-100k: the embedded default with the llmgr_m stage list.

Only the stages differ from configs/llmgr_ml100k.py (see sbrjax.config.LLMGR_VARIANTS).
"""

import os

from sbrjax.config import LLMGR_VARIANTS, llmgr_config, load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "llmgr_ml100k.py"))
  variant = llmgr_config("llmgr_m")
  config.variant = variant.variant
  config.stage_order = variant.stage_order
  epochs = {name: st.epochs for name, st in config.stages.items()}
  config.stages = variant.stages
  for name, st in config.stages.items():
    st.epochs = epochs.get(name, epochs["major"])
    st.learning_rate = 1e-3
  return config
