"""LLM4SBR(SR-GNN) on Amazon Beauty (2014 reviews; one session per user).

configs/llm4sbr_ml1m.py's settings on another dataset; the protocol's "auto"
augmentation makes every prefix of a session an example here (the paper:
"We enhance the dataset using the commonly employed sequence segmentation
method"), so intent generation for every row needs an accelerator (see
configs/llm4sbr_ml100k.py for the CPU-sized reductions).
"""

from sbrjax.config import sibling_config


def get_config():
  config = sibling_config(__file__, "llm4sbr_ml1m.py")
  config.data.dataset = "amazon"
  config.data.variant = "beauty2014"
  return config
