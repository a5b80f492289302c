"""The embedded default that `python -m sbrjax.main` runs with no --config.

It points at one experiment file so the two stay identical.
"""

import os

from sbrjax.config import load_config_file

DEFAULT = "llmgr_residual_tuned_ml100k.py"


def get_config():
  return load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT))
