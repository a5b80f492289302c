"""GC-SAN on Amazon Music (LLMGR leave-one-out protocol): gcsan_ml100k.py on another dataset.

  python -m sbrjax.main --config=configs/gcsan_music.py
"""

import os

from sbrjax.config import load_config_file


def get_config():
  config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "gcsan_ml100k.py"))
  config.data.dataset = "amazon"
  config.data.variant = "music"
  return config
