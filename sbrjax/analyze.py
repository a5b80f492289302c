"""Analyses of finished runs (session length, cold / warm items, PCA, strategies, LLM4SBR).

  python -m sbrjax.analyze --workdir=workdirs/default/sbr_pretrain \\
      --workdir=workdirs/llmgr_m_ml100k --workdir=workdirs/default --out=analysis

The logic lives in ``sbrjax.analysis.report``; see its docstring for what is
written. Exit code 2 with one line on stderr when a run cannot be read.
"""

import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "Run directory (repeat for several).")
_OUT = flags.DEFINE_string("out", "analysis", "Folder for summary.md, groups.json and PNGs.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "valid"], "Split to analyse.")
_LENGTH = flags.DEFINE_integer("length_threshold", 7,
                               "Short sessions have at most this many clicks (LLMGR Fig. 5).")
_COLD = flags.DEFINE_integer("cold_threshold", 10,
                             "Cold targets have fewer than this many training examples.")
_KS = flags.DEFINE_list("table_ks", ["10", "20"], "Cut-offs shown in the tables.")
_CASES = flags.DEFINE_integer("cases", 3, "LLM4SBR case studies (test rows) to show.")
_CASE_SEED = flags.DEFINE_integer("case_seed", 0, "Seed drawing the case-study rows.")
_LABELS = flags.DEFINE_list("labels", None, "Display names, one per --workdir.")
_PCA = flags.DEFINE_bool("pca", True, "Draw the PCA of LLMGR runs' item embeddings.")
_RESIDUAL = flags.DEFINE_bool(
    "residual_parts", False,
    "Re-evaluate residual-head LLMGR runs with parts of the correction zeroed (loads the LLM).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:  # results on stdout, one-line errors on stderr
    logging.set_verbosity(logging.ERROR)
  from sbrjax.analysis import report  # pylint: disable=g-import-not-at-top
  from sbrjax.analysis import runs  # pylint: disable=g-import-not-at-top
  if not _WORKDIR.value:
    print("sbrjax.analyze: give at least one --workdir=RUN_DIR.", file=sys.stderr)
    return 2
  try:
    summary = report.analyze(
        _WORKDIR.value, _OUT.value, split=_SPLIT.value, length_threshold=_LENGTH.value,
        cold_threshold=_COLD.value, table_ks=[int(k) for k in _KS.value],
        cases=_CASES.value, case_seed=_CASE_SEED.value, labels=_LABELS.value,
        pca=_PCA.value, residual_parts=_RESIDUAL.value)
  except (runs.RunError, ValueError) as e:
    print(f"sbrjax.analyze: {e}", file=sys.stderr)
    return 2
  print(summary)
  return 0


if __name__ == "__main__":
  app.run(main)
