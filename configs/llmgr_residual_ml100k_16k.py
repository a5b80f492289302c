"""The residual configuration with 16,384 training prompts per task: a scaling point.

configs/llmgr_residual_ml100k.py (residual head and backbone rate 1e-4, both
beyond the paper) with four times the training prompts per task and stage
(llmgr.train_limit 4,096 -> 16,384; the contrastive task has fewer eligible
sessions than that on ml-100k and uses all of them). About four times the
default's LLMGR training time on CPU. The README's scaling study (issue 12)
runs it, and the other points of the grid, with

  --config.llmgr.train_limit=N      prompts per task (0 = every prefix)
  --config.llm.num_layers=L         decoder blocks kept (SmolLM2 has 30)
  --config.llmgr.control=no_decoder the blocks removed altogether

(launch/llmgr_scaling_ml100k.sh lists every point).
"""

from sbrjax.config import sibling_config


def get_config():
  config = sibling_config(__file__, "llmgr_residual_ml100k.py")
  config.llmgr.train_limit = 16384
  return config
