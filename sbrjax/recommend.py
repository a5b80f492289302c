"""Top-K items for sessions from a trained run.

  python -m sbrjax.recommend --workdir=workdirs/default --items="12,7,301"
  python -m sbrjax.recommend --workdir=workdirs/gcsan_ml100k --items="Star Wars (1977),Fargo"
  printf '12,7,301\n1,2\n' | python -m sbrjax.recommend --workdir=workdirs/default
  python -m sbrjax.recommend --workdir=workdirs/default --items="12,7" --exclude_seen

Items are dense ids (as in the per-example files), raw dataset ids with
``--raw_ids``, or titles (exact, or the only title containing the text).
Without ``--items`` every line of stdin is one session (all scored at once).
Errors print one line on stderr and exit with code 2 (in stdin mode a bad
line is reported and skipped; the exit code is 2 if any was). The logic
lives in ``sbrjax.analysis.recommend``.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory of a trained run.")
_ITEMS = flags.DEFINE_string("items", None, "One session: ids or titles; else read stdin.")
_TOP_K = flags.DEFINE_integer("top_k", 10, "Items to recommend per session.")
_RAW = flags.DEFINE_bool("raw_ids", False, "Numbers are the dataset's raw item ids.")
_SEP = flags.DEFINE_string("sep", ",", "Separator between the items of a session.")
_FORMAT = flags.DEFINE_enum("format", "text", ["text", "json"], "Output format.")
_EXCLUDE = flags.DEFINE_bool("exclude_seen", False,
                             "Leave out the session's own items (the evaluation keeps them).")


def _fail(message: str) -> int:
  print(f"sbrjax.recommend: {' '.join(str(message).split())}", file=sys.stderr)
  return 2


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:  # results on stdout, one-line errors on stderr
    logging.set_verbosity(logging.ERROR)
  from sbrjax.analysis import recommend as rec_lib  # pylint: disable=g-import-not-at-top
  if not _WORKDIR.value:
    return _fail("give --workdir=RUN_DIR.")
  try:
    rec = rec_lib.Recommender.from_workdir(_WORKDIR.value, _TOP_K.value,
                                           exclude_seen=_EXCLUDE.value)
  except rec_lib.RecommendError as e:
    return _fail(e)
  lines = [_ITEMS.value] if _ITEMS.value is not None else sys.stdin.read().splitlines()
  sessions, failed = [], False
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      sessions.append(rec.resolve(line, raw_ids=_RAW.value, sep=_SEP.value))
    except rec_lib.RecommendError as e:
      failed = True
      where = "" if _ITEMS.value is not None else f"line {lineno}: "
      _fail(f"{where}{e}")
  if sessions:
    try:
      ids, scores = rec.recommend(sessions)
    except rec_lib.RecommendError as e:
      return _fail(e)
    for session, i, s in zip(sessions, ids, scores):
      if _FORMAT.value == "json":
        print(json.dumps(rec_lib.format_json(rec, session, i, s)))
      else:
        print(rec_lib.format_text(rec, session, i, s) + "\n")
  elif not failed:
    return _fail("no sessions given (--items or one per line on stdin).")
  return 2 if failed else 0


if __name__ == "__main__":
  app.run(main)
