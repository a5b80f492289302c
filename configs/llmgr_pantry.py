"""LLMGR on Amazon Prime_Pantry (2018) with LLaMA-2-7B: configs/llmgr_music.py on another category.

  python -m sbrjax.main --config=configs/llmgr_pantry.py --config.llm.path=/path/to/Llama-2-7b-hf
"""

from sbrjax.config import sibling_config


def get_config():
  config = sibling_config(__file__, "llmgr_music.py")
  config.data.variant = "pantry"
  return config
