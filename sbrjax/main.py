"""Command-line entry point.

  python -m sbrjax.main --config=configs/srgnn_ml100k.py --workdir=workdirs/x \
      --config.data.max_len=20

This file is intentionally kept short; the logic lives in ``sbrjax.pipeline``
and the libraries it calls, which can be tested.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "configs")
DEFAULT_CONFIG = os.path.join(_REPO_CONFIGS, "default.py")

_CONFIG = config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG, "Experiment config file (configs/*.py).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "Run directory for checkpoints, TensorBoard and results "
    "(default: workdirs/<config file name>).")


class _QuietLibraries:
  """Drops INFO records of chatty libraries (Orbax logs every checkpoint step)."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from sbrjax.parallel import distributed  # pylint: disable=g-import-not-at-top
  from sbrjax import pipeline  # pylint: disable=g-import-not-at-top
  # Multi-host runs (SLURM or SBRJAX_* variables) join before any device use.
  distributed.initialize_from_env()
  config_path = flags.FLAGS["config"].config_filename
  workdir = _WORKDIR.value or pipeline.default_workdir(config_path, _CONFIG.value)
  logging.info("Config %s, workdir %s", config_path, workdir)
  pipeline.run(_CONFIG.value, workdir)


if __name__ == "__main__":
  app.run(main)
