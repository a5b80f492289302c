"""Data-only job: prepare ml-100k (LLMGR protocol) and print Table 1.

  python -m sbrjax.main --config=configs/data_ml100k.py
  python -m sbrjax.main --config=configs/data_ml100k.py --config.data.protocol=llm4sbr
"""

from sbrjax.config import base_config


def get_config():
  config = base_config()
  config.job = "data"
  return config
