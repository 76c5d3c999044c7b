"""Atomic writes: a file is complete or absent; a failed write keeps the previous file."""

import os
import stat

import pytest

from colplugin._io import atomic_path, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash in the middle of a write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_written_files_are_ordinary_readable_files(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "report.md", "# report\n")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o644 & ~umask  # not mkstemp's 0600
    assert path.read_text() == "# report\n"
