"""files.py: an atomic write leaves the old file or the new one, never half; one run per folder."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from segm import files
from segm.errors import FileError

ROOT = Path(__file__).resolve().parent.parent
HOLD = """import sys, time
from segm import files
with files.FolderLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "config.json"
    files.write_text(path, "old")
    files.write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(path.parent) == ["config.json"]


def test_a_failing_writer_leaves_the_old_contents_and_no_temporary(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with files.atomic_write(path) as tmp:
            # Beside the target, hidden, with its suffix (Keras picks the format by it).
            assert tmp.parent == tmp_path and tmp.name.startswith(".model.")
            assert tmp.suffix == ".keras" and tmp.exists()
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.keras"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_obeys_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        files.write_text(tmp_path / "log.csv", "epoch\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "log.csv").stat().st_mode) == mode


def test_an_impossible_place_is_one_sentence(tmp_path):
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(FileError, match="is a file, not a folder"):
        files.write_text(tmp_path / "a_file" / "config.json", "{}")
    assert (tmp_path / "a_file").read_text() == "mine"


def test_a_folder_has_one_holder(tmp_path):
    with files.FolderLock(tmp_path):
        assert (tmp_path / ".lock").is_file()
        with pytest.raises(files.FolderBusy, match="another run is writing"):
            with files.FolderLock(tmp_path):  # another open file, so another lock, refused
                pass
        other = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        assert other.returncode == 1 and "another run is writing" in other.stderr
        assert "held" not in other.stdout
    with files.FolderLock(tmp_path):  # free again once released
        pass


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(files.FolderBusy):
            with files.FolderLock(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: no Python clean-up runs, as in a crash
        holder.wait()
        holder.stdout.close()
    with files.FolderLock(tmp_path):  # taken at once, though the killed holder never let go
        pass


WITHOUT_FCNTL = """import sys
sys.modules["fcntl"] = None  # as on a system without it: importing it fails
from segm import files
with files.FolderLock(sys.argv[1]):
    try:
        with files.FolderLock(sys.argv[1]):
            print("a second holder got in")
    except files.FolderBusy as error:
        print("refused:", error)
with files.FolderLock(sys.argv[1]):
    print("free again")
"""


def test_the_lock_works_without_fcntl(tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_FCNTL, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("refused: another run is writing")
    assert done.stdout.splitlines()[1] == "free again"
