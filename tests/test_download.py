"""download.py against a real HTTP server on 127.0.0.1, with test sizes and checksums."""
import hashlib
import http.server
import io
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import download
from download import Remote
from load_data import Datagen
from test_load_data import T10K, shape_digits, write_cifar, write_idx

SCRIPT = Path(download.__file__)
MNIST_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR_NAME = "cifar-10-python.tar.gz"


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server for tmp_path/www.

    Names in .cut are sent only half-way; names in .endless get no Content-Length and a body
    that never ends (or, in .claims, a Content-Length of that many bytes and a short body).
    """
    www = tmp_path / "www"
    www.mkdir()
    state = SimpleNamespace(www=www, requests=[], cut=set(), endless=set(), claims={}, sent={})

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append(self.path)
            name = self.path.lstrip("/")
            if name in state.endless:
                return self.send_endless(name)
            if name in state.claims:
                self.send_response(200)
                self.send_header("Content-Length", str(state.claims[name]))
                self.end_headers()
                self.wfile.write(b"x" * 1000)
                self.close_connection = True
                return None
            if name not in state.cut:
                return super().do_GET()
            body = (www / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])  # then the connection closes
            self.close_connection = True
            return None

        def send_endless(self, name):
            """Zeros until the client hangs up (or 200 MB, so a broken client cannot hang us)."""
            self.send_response(200)
            self.end_headers()
            self.close_connection = True
            state.sent[name] = 0
            try:
                while state.sent[name] < 200 << 20:
                    self.wfile.write(bytes(1 << 16))
                    state.sent[name] += 1 << 16
            except OSError:  # the client stopped reading, as it should
                pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_port}/"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def remote_for(server, name, folder="mnist"):
    """The Remote of a file the server holds, with its true size and md5."""
    path = server.www / name
    return Remote(folder, name, path.stat().st_size, md5(path), server.url)


def serve_real_format(server, tmp_path):
    """Tiny MNIST gz files and a CIFAR tarball on the server; their remotes with test md5s."""
    for name, n in zip(MNIST_NAMES, (30, 30, 6, 6)):
        if "images" in name:
            write_idx(server.www / name, shape_digits(n, T10K if name.startswith("t10k") else 0),
                      2051)
        else:
            write_idx(server.www / name, np.arange(n) % 10, 2049)
    write_cifar(tmp_path / "build", n=4, nested=True, test=3)
    with tarfile.open(server.www / CIFAR_NAME, "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return [remote_for(server, name, "cifar" if name == CIFAR_NAME else "mnist")
            for name in MNIST_NAMES + (CIFAR_NAME,)]


def leftovers(folder):
    """Temporary files or folders a download left behind."""
    return [p.name for p in folder.rglob(".*")] if folder.exists() else []


def run_script(*args):
    """Run download.py as a user would; returns the finished process."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=SCRIPT.parent)


def test_published_sizes_and_checksums():
    assert {remote.name: remote.size for remote in download.REMOTES} == {
        "train-images-idx3-ubyte.gz": 9912422, "train-labels-idx1-ubyte.gz": 28881,
        "t10k-images-idx3-ubyte.gz": 1648877, "t10k-labels-idx1-ubyte.gz": 4542,
        "cifar-10-python.tar.gz": 170498071}
    assert all(len(remote.md5) == 32 for remote in download.REMOTES)


def test_download_verifies_extracts_and_does_not_fetch_twice(server, tmp_path):
    remotes = serve_real_format(server, tmp_path)
    data = tmp_path / "data"
    report = download.download(data, remotes=remotes)
    assert [error for _, error, _ in report] == [None] * 5
    assert all("downloaded" in message and "checksum ok" in message for _, _, message in report)
    assert md5(data / "mnist" / MNIST_NAMES[0]) == remotes[0].md5
    assert (data / "cifar" / "cifar-10-batches-py" / "test_batch").is_file()
    gen = Datagen(data)
    assert gen.source == "real" and "30 train / 6 test digits" in gen.describe()
    assert "(20 / 3 backgrounds)" in gen.describe()  # test_batch, not a held-out part

    fetched = len(server.requests)
    report = download.download(data, remotes=remotes)
    assert all(message == "already present, checksum ok" for _, _, message in report)
    assert len(server.requests) == fetched and leftovers(data) == []


def test_progress_bar_on_stderr(server, tmp_path, capsys):
    remotes = serve_real_format(server, tmp_path)
    download.download(tmp_path / "data", remotes=remotes[:1], progress=True)
    err = capsys.readouterr().err
    assert f"\r{MNIST_NAMES[0]} [{'#' * 30}]" in err and err.endswith("MB\n")


def test_corrupt_file_is_discarded_and_the_old_one_kept(server, tmp_path):
    (server.www / "file.gz").write_bytes(b"what the mirror holds")
    target = tmp_path / "data" / "mnist" / "file.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"what was here before")
    remote = Remote("mnist", "file.gz", 100, hashlib.md5(b"the published file").hexdigest(),
                    server.url)
    [(name, error, message)] = download.download(tmp_path / "data", remotes=[remote])
    assert error and "not the published" in message and name == "mnist/file.gz"
    assert target.read_bytes() == b"what was here before" and leftovers(tmp_path / "data") == []


def test_endless_transfer_stops_at_the_published_size(server, tmp_path):
    # The server sends no Content-Length and never stops: only the published size ends it.
    remote = Remote("mnist", "endless.gz", 100_000, "0" * 32, server.url)
    server.endless.add(remote.name)
    target = tmp_path / "data" / "mnist" / remote.name
    target.parent.mkdir(parents=True)
    target.write_bytes(b"what was here before")
    [(_, error, message)] = download.download(tmp_path / "data", remotes=[remote])
    assert message == (f"{server.url}endless.gz sends 131,072 bytes or more, but endless.gz is "
                       f"published at 100,000, so the transfer was stopped; use another --mirror.")
    assert server.sent[remote.name] < 50 << 20  # it hung up long before the server's own cap
    assert target.read_bytes() == b"what was here before" and leftovers(tmp_path / "data") == []


def test_content_length_beyond_the_published_size_is_refused_at_once(server, tmp_path):
    remote = Remote("mnist", "big.gz", 4542, "0" * 32, server.url)
    server.claims[remote.name] = 10**12
    [(_, error, message)] = download.download(tmp_path / "data", remotes=[remote])
    assert error and "sends 1,000,000,000,000 bytes or more" in message
    assert "published at 4,542" in message
    assert list((tmp_path / "data" / "mnist").iterdir()) == []


def test_missing_file_fails_alone(server, tmp_path):
    remotes = serve_real_format(server, tmp_path)
    (server.www / MNIST_NAMES[2]).unlink()
    report = download.download(tmp_path / "data", remotes=remotes)
    assert [error is None for _, error, _ in report] == [True, True, False, True, True]
    assert "answered 404" in report[2][2]
    assert not (tmp_path / "data" / "mnist" / MNIST_NAMES[2]).exists()


def test_interrupted_transfer_leaves_nothing(server, tmp_path):
    remotes = serve_real_format(server, tmp_path)
    server.cut.add(CIFAR_NAME)
    [(_, error, message)] = download.download(tmp_path / "data", remotes=remotes[4:])
    size = (server.www / CIFAR_NAME).stat().st_size
    assert error and f"stopped after {size // 2:,} of {size:,} bytes" in message
    assert list((tmp_path / "data" / "cifar").iterdir()) == []


def tar_with(member, target=None):
    """A tar.gz holding one file (or, with target, one symlink) named member."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(member)
        if target:
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buffer.getvalue()


@pytest.mark.parametrize("member,target", [("../../escaped.txt", None),
                                           ("/tmp/segm-escaped.txt", None),
                                           ("cifar-10-batches-py/link", "../../../..")])
def test_archive_escaping_the_data_folder_is_refused(server, tmp_path, member, target):
    (server.www / CIFAR_NAME).write_bytes(tar_with(member, target))
    [(_, error, message)] = download.download(tmp_path / "data",
                                              remotes=[remote_for(server, CIFAR_NAME, "cifar")])
    assert error and "tries to write outside" in message and member in message
    assert list((tmp_path / "data" / "cifar").iterdir()) == []  # not even the archive is kept
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data/escaped.txt").exists()


def test_archive_that_is_not_a_tarball(server, tmp_path):
    (server.www / CIFAR_NAME).write_bytes(b"not a tarball at all")
    [(_, error, message)] = download.download(tmp_path / "data",
                                              remotes=[remote_for(server, CIFAR_NAME, "cifar")])
    assert error and "not a readable tar.gz" in message


def test_cifar_batches_already_present_are_not_fetched(server, tmp_path):
    write_cifar(tmp_path / "data" / "cifar")
    remote = Remote("cifar", CIFAR_NAME, 100, "0" * 32, server.url)
    [(_, error, message)] = download.download(tmp_path / "data", remotes=[remote])
    assert error is None and "already present" in message and server.requests == []


def test_a_file_where_the_data_folder_should_be(server, tmp_path):
    (server.www / "file.gz").write_bytes(b"content")
    (tmp_path / "data").write_bytes(b"a file the user keeps")
    [(_, error, message)] = download.download(tmp_path / "data",
                                              remotes=[remote_for(server, "file.gz")])
    assert message == f"a part of {tmp_path / 'data' / 'mnist' / 'file.gz'} is a file, not a " \
                      f"folder; choose another place."
    assert (tmp_path / "data").read_bytes() == b"a file the user keeps"


# ---------------------------------------------------------------- command line

def test_cli_reports_one_line_per_failed_file(server, tmp_path):
    done = run_script("--data_dir", tmp_path / "data", "--mirror", server.url.rstrip("/"))
    err = done.stderr.splitlines()
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    assert len(err) == 5 and all(line.startswith("error: ") and "answered 404" in line
                                 for line in err)
    assert sorted(server.requests) == sorted(f"/{name}" for name in MNIST_NAMES + (CIFAR_NAME,))


def test_cli_stops_a_transfer_beyond_the_published_size(server, tmp_path):
    # t10k-labels is published at 4,542 bytes; this mirror would send 200 MB.
    old = tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an earlier copy")
    server.endless.add(old.name)
    done = run_script("--data_dir", tmp_path / "data", "--mirror", server.url)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = [line for line in done.stderr.splitlines() if f"mnist/{old.name}:" in line]
    assert len(line) == 1 and line[0].startswith("error: ") and all(fact in line[0] for fact in (
        f"{server.url}{old.name}", "65,536", "4,542", "--mirror"))
    assert old.read_bytes() == b"an earlier copy" and leftovers(tmp_path / "data") == []


@pytest.mark.parametrize("args,facts", [
    (["--mirror", "ftp://x"], ["--mirror ftp://x", "http://"]),
    (["--mirror"], ["--mirror"]),
    (["--download"], ["--download"]),
])
def test_cli_usage_errors_exit_2_and_write_nothing(tmp_path, args, facts):
    done = run_script("--data_dir", tmp_path / "data", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    last = done.stderr.splitlines()[-1]
    assert "error" in last and all(fact in last for fact in facts)
    assert list(tmp_path.iterdir()) == []


def namespaces_work():
    """True if this machine lets an unprivileged user mount a tmpfs in its own namespace."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs none /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not namespaces_work(), reason="needs unshare and a private tmpfs mount")
def test_cli_full_disk_is_one_sentence_and_keeps_the_old_file(server, tmp_path):
    # A real full disk: a 256 kB tmpfs, private to the command, and a 1 MB file to fetch.
    name = MNIST_NAMES[0]
    (server.www / name).write_bytes(np.random.default_rng(0).bytes(1 << 20))
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f'mount -t tmpfs -o size=256k none "$1" && mkdir "$1/mnist" && '
              f'printf "an earlier copy" > "$1/mnist/{name}" && '
              f'"{sys.executable}" download.py --data_dir "$1" --mirror "$2"; '
              f'echo "exit $?"; ls -A "$1/mnist"; cat "$1/mnist/{name}"')
    done = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script, "sh", str(disk), server.url],
                          capture_output=True, text=True, timeout=120, cwd=SCRIPT.parent)
    assert "Traceback" not in done.stderr
    line = [line for line in done.stderr.splitlines() if f"mnist/{name}:" in line]
    assert len(line) == 1 and line[0].startswith("error: ") and "full" in line[0]
    assert str(disk / "mnist" / name) in line[0]
    assert done.stdout == f"exit 1\n{name}\nan earlier copy"  # nothing lost, nothing left
