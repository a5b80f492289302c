"""Atomic writers leave files with the mode of a plain write, not tempfile's 0600/0700."""

import os
import stat
import tempfile

import numpy as np
import pytest

from sbrjax import fileio
from sbrjax.analysis import plots
from sbrjax.train import writer


@pytest.fixture
def umask_027():
  old = os.umask(0o027)
  yield 0o027
  os.umask(old)


def _mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing(umask_027):
  assert fileio.current_umask() == 0o027
  assert fileio.current_umask() == 0o027


def test_publish_file_and_folder(tmp_path, umask_027):
  fd, tmp = tempfile.mkstemp(dir=tmp_path)
  os.close(fd)
  assert _mode(tmp) == 0o600
  fileio.publish(tmp, tmp_path / "out.txt")
  assert _mode(tmp_path / "out.txt") == 0o640 and not os.path.exists(tmp)
  folder = tempfile.mkdtemp(dir=tmp_path)
  assert _mode(folder) == 0o700
  fileio.publish(folder, tmp_path / "out_dir")
  assert _mode(tmp_path / "out_dir") == 0o750


def test_writers_use_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    writer.write_json_atomic(str(tmp_path / "results.json"), {"a": 1})
    assert _mode(tmp_path / "results.json") == 0o644
    plt = plots._pyplot()
    fig = plt.figure(figsize=(1, 1))
    plt.plot(np.arange(3))
    plots.save_figure(fig, str(tmp_path / "f.png"))
    assert _mode(tmp_path / "f.png") == 0o644
  finally:
    os.umask(old)
