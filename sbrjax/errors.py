"""The errors a user can fix, as a small hierarchy.

``python -m sbrjax.main`` turns any :class:`UserError` into one line on
stderr and exit code 2 (the traceback goes to the log file, and to stderr
with ``--verbose``); anything else is a bug and keeps its traceback. Each
class also derives from the built-in exception it used to be raised as, so
callers that catch ``ValueError`` / ``FileNotFoundError`` keep working.

  UserError
    ConfigError          a config key, value or flag (names the key, the choices, the fix)
    DataError            a raw data file or what the protocol leaves of it
      MissingDataError   a raw file that is not there (also a FileNotFoundError)
    CheckpointError      a checkpoint or run directory
      CheckpointMismatch another model / optimizer / stage wrote it (use another workdir)
      CheckpointDamaged  its files cannot be read (names the step and what to delete)
    ModelFileError       an LLM / text-encoder file or directory that is not a model
      MissingModelFile   one that is not there (also a FileNotFoundError)
    WorkdirLocked        another live run holds the workdir
"""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
  """An error the user fixes by changing a file, a flag or a config value."""


class ConfigError(UserError, ValueError):
  """A config key, value or command-line flag is wrong."""


class DataError(UserError, ValueError):
  """A raw data file, or what the preparation protocol leaves of it, is unusable."""


class MissingDataError(DataError, FileNotFoundError):
  """A raw data file is missing."""


class CheckpointError(UserError, ValueError):
  """A checkpoint or run directory cannot be used."""


class CheckpointMismatch(CheckpointError):
  """A checkpoint was written for another model, catalog, dataset or stage."""


class CheckpointDamaged(CheckpointError):
  """A checkpoint's files are missing or unreadable (interrupted copy, disk error)."""


class ModelFileError(UserError, ValueError):
  """A model file or directory (LLM, text encoder) is not a model sbrjax reads."""


class MissingModelFile(ModelFileError, FileNotFoundError):
  """A model file or directory is missing (or could not be fetched)."""


class WorkdirLocked(UserError, RuntimeError):
  """Another live run holds the workdir."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> str:
  """``" Did you mean 'a', 'b'?"`` for the closest ``choices``, or ``""``."""
  near = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
  return (" Did you mean " + ", ".join(repr(x) for x in near) + "?") if near else ""
