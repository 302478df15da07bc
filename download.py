"""Fetch MNIST and CIFAR-10 into data/, each file checked against its published size and md5."""
import argparse
import contextlib
import hashlib
import http.client
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from segm import files
from segm.errors import DataError, FileError
from segm.readers import CIFAR_FOLDER, CIFAR_TRAIN, DEFAULT_DATA_DIR, cifar_folder

# By hand rather than keras.utils.get_file, which imports TensorFlow, has no size cap, leaves a
# file that fails its hash under the final name, and skips archive members that escape the
# folder instead of refusing the archive.
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # yann.lecun.com often answers 403
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
SCHEMES = ("http://", "https://", "file://")
CHUNK = 1 << 16  # bytes per read: the most a transfer can run past its published size


class Remote(NamedTuple):
    folder: str  # under the data folder
    name: str
    size: int  # bytes, as published: a transfer that passes it is stopped
    md5: str  # as published (and used by torchvision)
    base_url: str


REMOTES = (
    Remote("mnist", "train-images-idx3-ubyte.gz", 9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
           MNIST_URL),
    Remote("mnist", "train-labels-idx1-ubyte.gz", 28881, "d53e105ee54ea40749a09fcbcd1e9432",
           MNIST_URL),
    Remote("mnist", "t10k-images-idx3-ubyte.gz", 1648877, "9fb629c4189551a2d022fa330f9573f3",
           MNIST_URL),
    Remote("mnist", "t10k-labels-idx1-ubyte.gz", 4542, "ec29112dd5afa0611ce80d1b7f02629c",
           MNIST_URL),
    Remote("cifar", "cifar-10-python.tar.gz", 170498071, "c58f30108f718f92721af3b95e74349a",
           CIFAR_URL),
)


def _md5(path):
    """Hex md5 of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _open(url, timeout=30):
    """The response for url, or DataError saying why there is none."""
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise DataError(f"{url} answered {e.code} {e.reason}; check the address or pass another "
                        f"--mirror.") from None
    except urllib.error.URLError as e:
        raise DataError(f"could not reach {url} ({e.reason}); check the connection or pass "
                        f"--mirror.") from None
    except (OSError, http.client.HTTPException) as e:  # resets and timeouts
        raise DataError(f"the transfer from {url} broke off ({e}); "
                        f"run the command again.") from None
    except ValueError as e:
        raise DataError(f"{url} is not a usable address ({e}); check --mirror.") from None


def _chunks(response, url):
    """The response body in chunks; a broken connection becomes DataError."""
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"the transfer from {url} broke off ({e}); "
                            f"run the command again.") from None
        if not chunk:
            return
        yield chunk


def _too_big(url, remote, size):
    """DataError for a transfer of size bytes, beyond the remote's published size."""
    return DataError(f"{url} sends {size:,} bytes or more, but {remote.name} is published at "
                     f"{remote.size:,}, so the transfer was stopped; use another --mirror.")


def _stream(url, path, remote, progress):
    """Copy url into the file path, no more than remote.size bytes; returns (md5, bytes)."""
    digest, got = hashlib.md5(), 0
    with _open(url) as response, open(path, "wb") as out:
        length = response.headers.get("Content-Length", "")
        claimed = int(length) if length.isdigit() else 0  # 0: not said, or not a number
        if claimed > remote.size:  # refused before a byte is read
            raise _too_big(url, remote, claimed)
        try:
            for chunk in _chunks(response, url):
                got += len(chunk)
                if got > remote.size:
                    raise _too_big(url, remote, got)
                out.write(chunk)  # an OSError here is the disk's: atomic_write reports it
                digest.update(chunk)
                if progress:  # drawn by hand: keras.utils.Progbar would pull in TensorFlow
                    bar = "#" * int(30 * got / remote.size)
                    sys.stderr.write(f"\r{remote.name} [{bar:<30}] {got / 1e6:7.1f} / "
                                     f"{remote.size / 1e6:.1f} MB")
        finally:
            if progress:
                sys.stderr.write("\n")
    if claimed and got != claimed:
        raise DataError(f"the transfer from {url} stopped after {got:,} of {claimed:,} bytes; "
                        f"run the command again.")
    return digest.hexdigest(), got


def _check_archive(path, folder):
    """DataError unless every member of the tar.gz at path lands in folder/cifar-10-batches-py."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                parts = Path(member.name).parts
                if parts[:1] != (CIFAR_FOLDER,) or ".." in parts:
                    raise tarfile.FilterError(member.name)
                tarfile.data_filter(member, str(folder))  # the stdlib's checks, links included
    except tarfile.FilterError as e:
        raise DataError(f"the archive tries to write outside {folder / CIFAR_FOLDER} ({e}), so it "
                        f"was not extracted; use another --mirror.") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"the archive is not a readable tar.gz ({e}); "
                        f"run the command again.") from None
    if not members:
        raise DataError("the archive is empty; use another --mirror.")


def _extract(path, folder):
    """Extract the CIFAR tarball so that folder/cifar-10-batches-py appears whole or not at all."""
    _check_archive(path, folder)  # again: the archive may be older than this run
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".extract-"))
    try:
        with tarfile.open(path, "r:gz") as tar:
            tar.extractall(staging, filter="data")
        shutil.rmtree(folder / CIFAR_FOLDER, ignore_errors=True)  # an incomplete earlier copy
        staging.joinpath(CIFAR_FOLDER).rename(folder / CIFAR_FOLDER)
    except tarfile.TarError as e:
        raise DataError(f"extracting {path} failed ({e}); delete it and run again.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _disk_errors(path):
    """A full disk or an unwritable folder under path, as one DataError sentence."""
    try:
        yield
    except FileError as e:
        raise DataError(f"{e}.") from None
    except OSError as e:  # network errors are DataErrors by now: this one is the disk's
        raise DataError(f"{files.describe_os_error(e, path)}.") from None


def fetch(data_dir, remote, mirror=None, progress=False):
    """Download one file into data_dir, verified; returns what happened, or DataError."""
    folder, archive = Path(data_dir) / remote.folder, remote.name.endswith(".tar.gz")
    target = folder / remote.name
    batches = [cifar_folder(data_dir) / name for name in CIFAR_TRAIN]
    if archive and not target.exists() and all(path.is_file() for path in batches):
        return "CIFAR-10 batches already present, not fetched"
    with _disk_errors(folder):
        if target.is_file() and _md5(target) == remote.md5:
            status = "already present, checksum ok"
        else:
            url = (mirror.rstrip("/") + "/" if mirror else remote.base_url) + remote.name
            # Raising inside the block keeps the old file: the name moves only on success.
            with files.atomic_write(target) as tmp:
                md5, size = _stream(url, tmp, remote, progress)
                if md5 != remote.md5:
                    raise DataError(f"the file from {url} has md5 {md5}, not the published "
                                    f"{remote.md5}, so it was discarded; run again or use "
                                    f"another --mirror.")
                if archive:
                    _check_archive(tmp, folder)
            status = f"downloaded {size / 1e6:.1f} MB, checksum ok"
        if archive and not all((folder / CIFAR_FOLDER / name).is_file() for name in CIFAR_TRAIN):
            _extract(target, folder)
            status += f", extracted to {folder / CIFAR_FOLDER}"
    return status


def check_mirror(mirror):
    """DataError unless mirror is None or a URL fetch() can use."""
    if mirror is not None and not mirror.startswith(SCHEMES):
        raise DataError(f"--mirror {mirror} must be an http://, https:// or file:// URL.")


def download(data_dir, mirror=None, remotes=REMOTES, progress=False):
    """Fetch every remote; returns [(file, DataError or None, message)], one entry per file."""
    check_mirror(mirror)
    report = []
    for remote in remotes:
        try:
            outcome = None, fetch(data_dir, remote, mirror, progress)
        except DataError as e:
            outcome = e, str(e)
        report.append((f"{remote.folder}/{remote.name}", *outcome))
    return report


def main(argv=None):
    """One line per file; exit 1 if any failed, 2 for a bad flag."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="where mnist/ and cifar/ go (default: data/ beside this script)")
    parser.add_argument("--mirror", help="fetch URL/<file name> instead of the official sites")
    args = parser.parse_args(argv)
    try:
        check_mirror(args.mirror)
    except DataError as e:
        parser.error(str(e))  # exits 2, as argparse does for any bad flag
    report = download(args.data_dir, args.mirror, progress=sys.stderr.isatty())
    for name, error, message in report:
        print(f"{'error: ' if error else ''}{name}: {message}",
              file=sys.stderr if error else sys.stdout)
    if any(error for _, error, _ in report):
        return 1
    named = "" if args.data_dir == DEFAULT_DATA_DIR else f"; pass --data_dir {args.data_dir}"
    print(f"data ready in {args.data_dir}{named}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
