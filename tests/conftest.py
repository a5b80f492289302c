"""Shared fixtures: a tiny dataset written in the real GroupLens ml-100k format.

Also turns on JAX's persistent compilation cache for the test session (and the
subprocesses tests start, which inherit the environment) before JAX is
imported: many tests compile the same tiny programs again (each end-to-end
run, each resumed or second process), and a cache hit skips XLA. Entries are
keyed by the program, the compile options and the JAX version, so they
cannot serve a changed program. ``SBRJAX_TEST_JAX_CACHE=0`` turns it off.

``SUBPROCESS_XLA_FLAGS`` compiles the multi-device subprocess tests
(simulated devices, two local processes) with LLVM at -O0
(``--xla_backend_optimization_level=0``): they compile tiny LLMGR steps for
several meshes and run each once or twice, and -O0 cuts the tiny LLMGR train
step's compile about 3x (10.8 s -> 3.7 s on the slower 2-core machine kind;
test_parallel's worker 191 s -> 93 s on one core). XLA's HLO passes still
run; results agree with the default build to float32 rounding, not bit for
bit (the tiny LLMGR's loss after two steps: 3.7078147 vs 3.7078145), and
every such test compares against a tolerance. The test process itself keeps
the default: applied suite-wide, -O0 saved as much compile time as it cost in
slower generated loops (pytest 826 s vs 820 s, one fresh-clone run each;
same-code runs on that machine kind vary by a quarter). ``SBRJAX_TEST_XLA_O0=0``
turns it off.
"""

import os

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.environ.get("SBRJAX_TEST_JAX_CACHE", "1") != "0":
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_REPO, ".jax_test_cache"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
SUBPROCESS_XLA_FLAGS = ("--xla_backend_optimization_level=0"
                        if os.environ.get("SBRJAX_TEST_XLA_O0", "1") != "0" else "")

import pytest

from sbrjax import config as config_lib
from sbrjax.data import rawfiles


@pytest.fixture(scope="session")
def tiny_raw_dir(tmp_path_factory):
  """u.data / u.item of 40 users x 30 items, 14 ratings each."""
  d = tmp_path_factory.mktemp("tiny_ml100k")
  rows = rawfiles.synthetic_ratings(num_users=40, num_items=30, per_user=14)
  rawfiles.write_grouplens_100k(d, rows, {i: f"Movie {i} (1990)" for i in range(1, 31)})
  return str(d)


@pytest.fixture()
def tiny_config(tiny_raw_dir, tmp_path):
  """The tiny SBR config (configs/sbr_tiny.py) reading the tiny raw files."""
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "sbr_tiny.py")
  cfg = config_lib.load_config_file(path)
  cfg.data.manual_dir = tiny_raw_dir
  cfg.data.data_dir = str(tmp_path / "data")
  return cfg


def _repo_config(name):
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", name)
  return config_lib.load_config_file(path)


@pytest.fixture(scope="session")
def tiny_sbr_run(tiny_raw_dir, tmp_path_factory):
  """A finished tiny SR-GNN run (configs/sbr_tiny.py): (workdir, config)."""
  from sbrjax import pipeline
  root = tmp_path_factory.mktemp("tiny_sbr_run")
  cfg = _repo_config("sbr_tiny.py")
  cfg.data.manual_dir = tiny_raw_dir
  cfg.data.data_dir = str(root / "data")
  wd = str(root / "run")
  pipeline.run(cfg, wd)
  return wd, cfg


@pytest.fixture(scope="session")
def tiny_llmgr_run(tiny_raw_dir, tmp_path_factory):
  """A finished tiny LLMGR run (configs/llmgr_tiny.py, both stages): (workdir, config)."""
  from sbrjax import pipeline
  root = tmp_path_factory.mktemp("tiny_llmgr_run")
  cfg = _repo_config("llmgr_tiny.py")
  cfg.data.manual_dir = tiny_raw_dir
  cfg.data.data_dir = str(root / "data")
  wd = str(root / "run")
  pipeline.run(cfg, wd)
  return wd, cfg
