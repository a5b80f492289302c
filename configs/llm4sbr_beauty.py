"""LLM4SBR(SR-GNN) on Amazon Beauty (2014 reviews; one session per user).

configs/llm4sbr_ml1m.py's full-protocol settings on another dataset; intent
generation for every prefix row needs an accelerator (see
configs/llm4sbr_ml100k.py for the CPU-sized reductions).
"""

from sbrjax.config import sibling_config


def get_config():
  config = sibling_config(__file__, "llm4sbr_ml1m.py")
  config.data.dataset = "amazon"
  config.data.variant = "beauty2014"
  return config
