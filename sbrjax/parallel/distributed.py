"""Multi-process start-up, and local multi-process CPU runs for tests.

One JAX process runs per host (or per node under SLURM) and drives all of
that host's local devices. :func:`initialize_from_env` must run before any
other JAX call touches the devices.

Environment (highest priority first):

* ``SBRJAX_COORDINATOR_ADDRESS`` (``host:port``), ``SBRJAX_NUM_PROCESSES``,
  ``SBRJAX_PROCESS_ID`` and optionally ``SBRJAX_LOCAL_DEVICE_IDS``
  (``"0,1"``): explicit set-up, e.g. several processes on one machine.
* SLURM (``SLURM_JOB_ID``, ``SLURM_NTASKS``, ``SLURM_PROCID``,
  ``SLURM_JOB_NODELIST``): the coordinator is the first node of the job on
  port ``SBRJAX_COORDINATOR_PORT`` (default derived from the job id, as JAX
  does). Every process sees all of its node's GPUs unless
  ``SBRJAX_LOCAL_DEVICE_IDS`` says otherwise or several tasks share a node
  (then task ``SLURM_LOCALID`` takes GPU ``SLURM_LOCALID``).
* Neither, or one process in total: nothing to initialise.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Mapping, Optional, Sequence

import jax

from sbrjax import errors

_ENV_ADDR = "SBRJAX_COORDINATOR_ADDRESS"
_ENV_NUM = "SBRJAX_NUM_PROCESSES"
_ENV_ID = "SBRJAX_PROCESS_ID"
_ENV_LOCAL = "SBRJAX_LOCAL_DEVICE_IDS"
_ENV_PORT = "SBRJAX_COORDINATOR_PORT"


def first_slurm_host(node_list: str) -> str:
  """First host name of a SLURM node list like ``"gpu[003-007,009],cpu1"``."""
  m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", node_list.strip())
  if not m:
    raise errors.ConfigError(f"cannot parse SLURM node list {node_list!r}")
  prefix, ranges = m.group(1), m.group(2)
  if ranges is None:
    return prefix
  return prefix + re.split(r"[,-]", ranges)[0]


def _int_env(env, key) -> int:
  try:
    return int(env[key])
  except ValueError as e:
    raise errors.ConfigError(f"environment variable {key}={env[key]!r} is not an "
                     "integer.") from e


def _ids(text: str, key: str):
  try:
    return [int(x) for x in text.split(",") if x.strip()]
  except ValueError as e:
    raise errors.ConfigError(f"{key}={text!r} must be comma-separated integers, "
                     "e.g. '0,1'.") from e


def distributed_args_from_env(
    env: Optional[Mapping[str, str]] = None) -> Optional[dict]:
  """The ``jax.distributed.initialize`` arguments the environment asks for.

  Returns:
    A dict of keyword arguments, or None for a single-process run.

  Raises:
    ValueError: naming the variable that is missing or malformed.
  """
  env = os.environ if env is None else env
  local = (_ids(env[_ENV_LOCAL], _ENV_LOCAL) if env.get(_ENV_LOCAL) else None)
  explicit = [k for k in (_ENV_ADDR, _ENV_NUM, _ENV_ID) if env.get(k)]
  if explicit:
    if len(explicit) != 3:
      missing = {_ENV_ADDR, _ENV_NUM, _ENV_ID} - set(explicit)
      raise errors.ConfigError(f"set all of {_ENV_ADDR}, {_ENV_NUM}, {_ENV_ID}; "
                       f"missing {sorted(missing)}.")
    args = dict(coordinator_address=env[_ENV_ADDR],
                num_processes=_int_env(env, _ENV_NUM),
                process_id=_int_env(env, _ENV_ID))
  elif env.get("SLURM_JOB_ID") and env.get("SLURM_NTASKS"):
    if _int_env(env, "SLURM_NTASKS") <= 1:
      return None
    for key in ("SLURM_PROCID", "SLURM_JOB_NODELIST"):
      if not env.get(key):
        raise errors.ConfigError(f"SLURM run with SLURM_NTASKS>1 but {key} is unset; "
                         f"launch with srun or set {_ENV_ADDR} etc.")
    port = env.get(_ENV_PORT) or str(
        _int_env(env, "SLURM_JOB_ID") % 2**12 + (65535 - 2**12 + 1))
    host = first_slurm_host(env["SLURM_JOB_NODELIST"])
    args = dict(coordinator_address=f"{host}:{port}",
                num_processes=_int_env(env, "SLURM_NTASKS"),
                process_id=_int_env(env, "SLURM_PROCID"))
    tasks_per_node = env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]
    if local is None and tasks_per_node.isdigit() and int(tasks_per_node) > 1:
      local = [_int_env(env, "SLURM_LOCALID")]
  else:
    return None
  if args["num_processes"] <= 1:
    return None
  if not 0 <= args["process_id"] < args["num_processes"]:
    raise errors.ConfigError(f"process id {args['process_id']} is outside "
                     f"[0, {args['num_processes']}).")
  args["local_device_ids"] = local
  return args


def initialize_from_env(env: Optional[Mapping[str, str]] = None,
                        initialization_timeout: int = 300) -> bool:
  """Calls ``jax.distributed.initialize`` when the environment asks for it.

  Must be called before anything else queries JAX devices. JAX's own cluster
  auto-detection is switched off: it would pin each SLURM task to one GPU,
  whereas here one process per node drives all of the node's GPUs.

  Returns:
    True if a multi-process runtime was initialised, False for one process.
  """
  args = distributed_args_from_env(env)
  if args is None:
    return False
  jax.distributed.initialize(
      **args, cluster_detection_method="deactivate",
      initialization_timeout=initialization_timeout)
  return True


# ------------------------------------------------ local test processes ---


def free_port() -> int:
  """A TCP port on 127.0.0.1 that was free a moment ago."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cpu_env(num_cpu_devices: int, extra: Optional[Mapping[str, str]],
             xla_flags: str = ""):
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={num_cpu_devices}")
  flags.extend(xla_flags.split())
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (root, env.get("PYTHONPATH")) if p)
  env.update(extra or {})
  return env


def _last_json(out: str, err: str, what: str) -> Any:
  for line in reversed(out.strip().splitlines()):
    if line.startswith("{") or line.startswith("["):
      return json.loads(line)
  raise RuntimeError(f"{what} printed no JSON line.\nstdout:\n{out[-3000:]}\n"
                     f"stderr:\n{err[-3000:]}")


def run_python(code: str, num_cpu_devices: int = 4, timeout: float = 300,
               env: Optional[Mapping[str, str]] = None, xla_flags: str = "") -> Any:
  """Runs ``code`` in a fresh CPU-only Python with simulated devices.

  The device count must be fixed before JAX is imported, hence a subprocess.
  The code must print one JSON line (the last one is returned). ``xla_flags``
  are appended to ``XLA_FLAGS`` after the device count.

  Raises:
    RuntimeError: with the subprocess's output if it fails or prints no JSON.
    subprocess.TimeoutExpired: after ``timeout`` seconds.
  """
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=timeout,
                        env=_cpu_env(num_cpu_devices, env, xla_flags))
  if proc.returncode:
    raise RuntimeError(f"subprocess failed (exit {proc.returncode}).\n"
                       f"stdout:\n{proc.stdout[-3000:]}\n"
                       f"stderr:\n{proc.stderr[-5000:]}")
  return _last_json(proc.stdout, proc.stderr, "subprocess")


def run_local_processes(code: str, num_processes: int = 2,
                        devices_per_process: int = 2,
                        timeout: float = 120, xla_flags: str = "") -> Sequence[Any]:
  """Runs ``code`` as ``num_processes`` jax.distributed CPU processes.

  ``xla_flags`` are appended to each process's ``XLA_FLAGS``.

  Processes talk over 127.0.0.1 on a free port; the ``SBRJAX_*`` variables
  are set so the code can call :func:`initialize_from_env`. All processes
  are killed if any fails or the timeout passes, so this never hangs.

  Raises:
    RuntimeError: with the output of the first process that fails.
    TimeoutError: after ``timeout`` seconds.

  Returns:
    The JSON line printed by each process, in process order.
  """
  port = free_port()
  procs, logs = [], []
  for pid in range(num_processes):
    env = _cpu_env(devices_per_process, {
        _ENV_ADDR: f"127.0.0.1:{port}", _ENV_NUM: str(num_processes),
        _ENV_ID: str(pid)}, xla_flags)
    # Files, not pipes: a chatty process must never block on a full pipe.
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    logs.append((out, err))
    procs.append(subprocess.Popen([sys.executable, "-c", code], env=env,
                                  stdout=out, stderr=err, text=True))

  def read(i):
    texts = []
    for f in logs[i]:
      f.seek(0)
      texts.append(f.read())
    return texts
  deadline = time.monotonic() + timeout
  outputs = [None] * num_processes
  try:
    # Poll all of them so that one failing process ends the run at once
    # instead of leaving its peers waiting for the coordinator.
    while any(o is None for o in outputs):
      if time.monotonic() > deadline:
        tails = "\n".join(f"process {i} stderr:\n{read(i)[1][-2000:]}"
                          for i in range(num_processes))
        raise TimeoutError(f"{num_processes} local processes did not finish "
                           f"in {timeout} s (all killed).\n{tails}")
      for i, p in enumerate(procs):
        if outputs[i] is None and p.poll() is not None:
          out, err = read(i)
          outputs[i] = (p.returncode, out, err)
          if p.returncode:
            raise RuntimeError(f"process {i} failed (exit {p.returncode}).\n"
                               f"stdout:\n{out[-3000:]}\nstderr:\n"
                               f"{err[-5000:]}")
      time.sleep(0.05)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for f in (f for pair in logs for f in pair):
      f.close()
  return [_last_json(out, err, f"process {i}")
          for i, (_, out, err) in enumerate(outputs)]
