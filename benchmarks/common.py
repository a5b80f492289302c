"""Shared by the benchmark scripts: medians, machine load and a matmul peak.

Every script prints one JSON object that includes

* ``loadavg_1min``: the 1-minute load average before and after (a figure
  measured under load says little; quote runs whose load stayed below ~1 on
  this 2-core machine);
* ``matmul_peak_gflops``: a jitted float32 matmul timed in the same process,
  before and after, so each throughput can be read as a fraction of what this
  machine did at that moment.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable, Dict

import jax
import jax.numpy as jnp

# Benchmarks run as scripts from the repository root: make ``sbrjax`` importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sbrjax import llm  # noqa: E402


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
  """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def matmul_peak(n: int = 2048, repeats: int = 7, dtype=jnp.float32) -> float:
  """GFLOP/s of a jitted n x n matmul (median of ``repeats``).

  A narrower dtype (bfloat16) accumulates in float32, as the models' matmuls do
  (``sbrjax.models.lora.matmul``).
  """
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  mm = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  mm(a, b).block_until_ready()
  return 2 * n**3 / median_time(lambda: mm(a, b).block_until_ready(), repeats) / 1e9


def cpu_info() -> Dict[str, object]:
  """The CPU model and its bf16 matmul instructions (Linux /proc/cpuinfo)."""
  model = ""
  try:
    with open("/proc/cpuinfo") as f:
      model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
  except OSError:
    pass
  return {"cpu_model": model, "cpu_bf16_flags": llm.cpu_bf16_flags()}


class Machine:
  """Load average and matmul peak at the start and at the end of a benchmark."""

  def __init__(self):
    self.load_before = os.getloadavg()[0]
    self.peak_before = matmul_peak()

  def report(self) -> Dict[str, object]:
    peak_after = matmul_peak()
    return {"loadavg_1min": {"before": self.load_before, "after": os.getloadavg()[0]},
            "matmul_peak_gflops": {"before": self.peak_before, "after": peak_after},
            "cpu_count": os.cpu_count(), **cpu_info(), "jax": jax.__version__,
            "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend()}

  @property
  def peak(self) -> float:
    return self.peak_before
