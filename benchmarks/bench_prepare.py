"""Times data preparation on ml-100k (RecBole's bundled copy).

Prints JSON with the median seconds over ``--runs`` runs of
  * builder_parse_s: tfds builders (parse raw files, write array_record) and
    reading them back into canonical arrays, into a fresh tfds folder;
  * prepare_<protocol>_s: protocol + negatives on the canonical arrays.

Usage: python benchmarks/bench_prepare.py [--runs 3] [--data_dir DIR]
"""

import argparse
import contextlib
import json
import pathlib
import statistics
import sys
import tempfile
import time

import common  # noqa: F401  (puts the repository on sys.path)
from sbrjax.data import builders, prepared, raw  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--data_dir", default="")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(args.data_dir or tmp)
    # Raw files are fetched once, outside the timings.
    manual = root / "raw"
    raw.extract_recbole_ml100k(manual)
    options = builders.RawOptions(manual_dir=str(manual), download=False)
    parse_times, canonical = [], None
    for k in range(args.runs):
      # tfds prints progress to stdout; keep stdout for the JSON.
      with contextlib.redirect_stdout(sys.stderr):
        t = time.perf_counter()
        canonical = builders.load_canonical("movielens", "ml-100k",
                                            root / f"run{k}", options)
        parse_times.append(time.perf_counter() - t)
    result = {"dataset": "movielens/ml-100k", "runs": args.runs,
              "num_interactions": int(len(canonical.items)),
              "builder_parse_s": statistics.median(parse_times)}
    for protocol in prepared.PROTOCOLS:
      cfg = prepared.default_config()
      cfg.protocol = protocol
      cfg.data_dir = str(root)
      settings = prepared.validate(cfg)
      times = []
      for _ in range(args.runs):
        t = time.perf_counter()
        data = prepared.prepare(settings, canonical)
        times.append(time.perf_counter() - t)
      result[f"prepare_{protocol}_s"] = statistics.median(times)
      result[f"{protocol}_examples"] = {
          k: data.stats[k] for k in ("num_train", "num_valid", "num_test")}
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
