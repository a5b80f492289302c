"""What a training run costs in memory: host RSS while it runs, XLA's account of a step."""

from __future__ import annotations

import resource
import threading
from typing import Any, Dict, Tuple

import jax
from absl import logging


class PeakMemory:
  """Peak host RSS (sampled from /proc/self/status) while the block runs.

  ``ru_maxrss`` is a whole-process high-water mark (it includes stage 1's
  LLM), so the training peak is sampled instead, every ``interval`` s.
  Device peaks come from ``jax.local_devices()[0].memory_stats()`` where the
  backend reports them (GPU/TPU; not CPU).
  """

  def __init__(self, interval: float = 0.02):
    self.interval = interval
    self.peak_rss = 0
    self._stop = threading.Event()
    self._thread = None

  @staticmethod
  def current_rss() -> int:
    try:
      with open("/proc/self/status") as f:
        for line in f:
          if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    except OSError:
      pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

  def _run(self):
    while not self._stop.is_set():
      self.peak_rss = max(self.peak_rss, self.current_rss())
      self._stop.wait(self.interval)

  def __enter__(self):
    self.start_rss = self.current_rss()
    self.peak_rss = self.start_rss
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_rss = max(self.peak_rss, self.current_rss())
    return False

  def summary(self) -> Dict[str, Any]:
    out = {"host_rss_start_bytes": self.start_rss,
           "host_rss_peak_bytes": self.peak_rss,
           "host_rss_peak_minus_start_bytes": self.peak_rss - self.start_rss,
           "host_rss_method": "max of /proc/self/status VmRSS sampled every "
                              f"{self.interval * 1000:.0f} ms during training",
           "process_maxrss_bytes":
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    stats = None
    try:
      stats = jax.local_devices()[0].memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      out["device_peak_bytes_in_use"] = int(stats["peak_bytes_in_use"])
    else:
      out["device_peak_bytes_in_use"] = None  # backend reports none (CPU)
    return out


def compile_with_memory(train_step, state, batch) -> Tuple[Any, Dict[str, Any]]:
  """Compiles the train step ahead of time: (step, XLA's buffer account).

  The account: ``argument`` (params, optimizer state, batch), ``output``,
  ``temp`` (activations, gradients, workspace) and ``alias`` (donated buffers
  reused for outputs) bytes from ``Compiled.memory_analysis()``;
  ``peak_bytes`` = argument + output + temp - alias is the step's live-buffer
  bound, the same figure on CPU and GPU up to layout; {} where the backend
  gives no analysis.

  The returned step runs that executable (so the step is not compiled twice)
  and falls back to the jitted ``train_step`` for arguments of other shapes.
  """
  try:
    compiled = train_step.lower(state, batch).compile()
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("No ahead-of-time compile of the train step: %s", e)
    return train_step, {}

  def step(state, batch):
    try:
      return compiled(state, batch)
    except TypeError:  # other shapes or pytree: raised before anything runs
      return train_step(state, batch)

  analysis = compiled.memory_analysis()
  if analysis is None:
    return step, {}
  out = {name: int(getattr(analysis, f"{name}_size_in_bytes"))
         for name in ("argument", "output", "temp", "alias", "generated_code")}
  out["peak_bytes"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return step, out
