"""LLMGR-M on ml-100k: configs/llmgr_ml100k.py with the llmgr_m stage list."""

from sbrjax.config import sibling_config
from sbrjax.llmgr.config import with_variant


def get_config():
  return with_variant(sibling_config(__file__, "llmgr_ml100k.py"), "llmgr_m")
