"""Writing files safely: every output appears whole or not at all, and one run owns a folder."""
import contextlib
import errno
import os
import tempfile
from pathlib import Path

import filelock

from segm.errors import FileError


def describe_os_error(error, path):
    """One sentence for an OSError met while writing path."""
    if error.errno == errno.ENOSPC:
        return f"the disk holding {path} is full; free some space and run again"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path} cannot be written (permission denied or read-only); choose another place"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):  # EEXIST: mkdir met a file of that name
        return f"a part of {path} is a file, not a folder; choose another place"
    if error.errno == errno.EISDIR:
        return f"{path} is a folder; name a file instead"
    return f"{path} cannot be written ({error.strerror}); choose another place"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path):
    """Yields a temporary path beside `path`; on success it is synced and renamed onto `path`.

    The temporary keeps `path`'s suffix, so writers that choose their format by it
    (Keras, matplotlib) work unchanged. On any failure the temporary is removed and
    `path` keeps its old contents; an OSError becomes one FileError sentence.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an ordinary file obeys the umask
    except OSError as error:
        raise FileError(describe_os_error(error, path)) from None
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:  # the bytes reach the disk before the name does
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise FileError(describe_os_error(error, path)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_text(path, text):
    """Replace path's contents with text, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


class FolderBusy(FileError):
    """Another process holds the folder: nothing was written, so nothing needs continuing."""


class FolderLock:
    """An exclusive lock on a folder for one process: a second run there is refused.

    filelock's: on Linux and macOS an fcntl lock, on Windows an msvcrt one, both held on
    an open file that the operating system releases when the process ends however it
    ends, so a crashed run never leaves the folder stuck. Where neither call exists,
    filelock falls back to the file's mere existence, which a killed run leaves behind.
    """

    def __init__(self, folder):
        self.path = Path(folder) / ".lock"

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.lock = filelock.FileLock(self.path, timeout=0)
            self.lock.acquire()
        except filelock.Timeout:
            raise FolderBusy(f"another run is writing {self.path.parent} right now; wait for "
                             f"it to finish or choose another --out_dir") from None
        except OSError as error:
            raise FileError(describe_os_error(error, self.path.parent)) from None
        return self

    def __exit__(self, *exc):
        self.lock.release()  # the empty file may stay
