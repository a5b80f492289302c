"""Config files: every section rejects keys it does not have."""

import os
import re

import ml_collections
import pytest

from sbrjax import config as config_lib
from sbrjax import errors
from sbrjax.llm4sbr import config as llm4sbr_config
from sbrjax.llmgr import config as llmgr_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDERS = {
    "sbrjax.config.base_config": config_lib.base_config,
    "sbrjax.llmgr.config.llmgr_config": llmgr_config.llmgr_config,
    "sbrjax.llm4sbr.config.llm4sbr_config": llm4sbr_config.llm4sbr_config,
}


def _sections(cfg, prefix="config"):
  yield prefix
  for key, value in cfg.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _sections(value, f"{prefix}.{key}")


def _cases():
  for name, build in BUILDERS.items():
    for section in _sections(build()):
      yield name, section


@pytest.mark.parametrize("builder,section", list(_cases()))
def test_a_misspelled_key_in_a_config_file_fails(tmp_path, builder, section):
  module, _, func = builder.rpartition(".")
  path = tmp_path / "typo.py"
  path.write_text(f"from {module} import {func}\n\n"
                  f"def get_config():\n"
                  f"  config = {func}()\n"
                  f"  {section}.lerning_rate = 1e-3\n"
                  f"  return config\n")
  with pytest.raises(errors.ConfigError,
                     match=rf"typo.py:5: .*{re.escape(section)} has no key 'lerning_rate'"):
    config_lib.load_config_file(str(path))


def test_every_shipped_config_is_locked_at_every_level():
  for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
    if name.endswith(".py"):
      cfg = config_lib.load_config_file(os.path.join(REPO, "configs", name))
      for section in _sections(cfg):
        node = cfg
        for part in section.split(".")[1:]:
          node = node[part]
        assert node.is_locked, (name, section)
