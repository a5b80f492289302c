"""Fixtures of the LLMGR tests."""

import os

import pytest

from sbrjax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture()
def cfg(tiny_raw_dir, tmp_path):
  """configs/llmgr_tiny.py reading the tiny raw files, preparing into ``tmp_path``."""
  c = config_lib.load_config_file(os.path.join(REPO, "configs", "llmgr_tiny.py"))
  c.data.manual_dir = tiny_raw_dir
  c.data.data_dir = str(tmp_path / "data")
  return c
