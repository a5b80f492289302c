"""Command-line entry point.

  python -m sbrjax.main --config=configs/srgnn_ml100k.py --workdir=workdirs/x \
      --config.data.max_len=20

This file is intentionally kept short; the logic lives in ``sbrjax.pipeline``
and the libraries it calls, which can be tested. Errors the user can fix
(``sbrjax.errors.UserError``: a config key, a data file, a checkpoint, a
model file, a locked workdir) end the process with one line on stderr and
exit code 2; ``--verbose`` adds the traceback, which is also written to
``<workdir>/error.log``.
"""

import os
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "configs")
DEFAULT_CONFIG = os.path.join(_REPO_CONFIGS, "default.py")
EXIT_USER_ERROR = 2

_CONFIG = config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG, "Experiment config file (configs/*.py).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "Run directory for checkpoints, TensorBoard and results "
    "(default: workdirs/<config file name>).")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Print the full traceback of user errors (config, data, checkpoint, "
    "model file) instead of one line.")


class _QuietLibraries:
  """Drops INFO records of chatty libraries (Orbax logs every checkpoint step)."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def _fail(error: BaseException, verbose: bool, workdir: str = "") -> None:
  """One line on stderr (the traceback too with --verbose), exit code 2."""
  from sbrjax import errors  # pylint: disable=g-import-not-at-top
  detail = "".join(traceback.format_exception(error))
  if workdir and os.path.isdir(workdir):
    with open(os.path.join(workdir, "error.log"), "a") as f:
      f.write(detail)
  if verbose:
    sys.stderr.write(detail)
  kind = type(error).__name__ if isinstance(error, errors.UserError) else "error"
  hint = "" if verbose else " (--verbose for the traceback)"
  sys.stderr.write(f"sbrjax: {kind}: {error}{hint}\n")
  sys.exit(EXIT_USER_ERROR)


def parse_flags(argv):
  """absl flag parsing whose config and flag errors are one-line ConfigErrors."""
  from sbrjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from sbrjax import errors  # pylint: disable=g-import-not-at-top
  verbose = any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv)
  try:
    # Load the file and check every --config.KEY override first, so a typo names its
    # section and the closest keys instead of ending in an AttributeError.
    path = DEFAULT_CONFIG
    overrides = []
    for arg in argv[1:]:
      if arg.startswith("--config="):
        path = arg.split("=", 1)[1]
      elif arg.startswith("--config."):
        overrides.append(arg[len("--config."):].split("=", 1)[0])
    config = config_lib.load_config_file(path)
    for key in overrides:
      config_lib.check_override(config, key)
    return flags.FLAGS(argv)
  except errors.UserError as e:
    _fail(e, verbose)
  except flags.Error as e:
    _fail(errors.ConfigError(str(e)), verbose)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from sbrjax import errors  # pylint: disable=g-import-not-at-top
  from sbrjax import pipeline  # pylint: disable=g-import-not-at-top
  from sbrjax.parallel import distributed  # pylint: disable=g-import-not-at-top
  config_path = flags.FLAGS["config"].config_filename
  workdir = _WORKDIR.value or pipeline.default_workdir(config_path, _CONFIG.value)
  try:
    # Multi-host runs (SLURM or SBRJAX_* variables) join before any device use.
    distributed.initialize_from_env()
    logging.info("Config %s, workdir %s", config_path, workdir)
    pipeline.run(_CONFIG.value, workdir)
  except errors.UserError as e:
    _fail(e, _VERBOSE.value, os.path.abspath(workdir))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
