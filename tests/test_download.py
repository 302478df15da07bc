"""load_data.py --download against a real HTTP server on 127.0.0.1, with test checksums."""
import hashlib
import http.server
import io
import tarfile
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import load_data
from load_data import Datagen, Remote
from test_load_data import T10K, shape_digits, write_cifar, write_idx

MNIST_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR_NAME = "cifar-10-python.tar.gz"


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server for tmp_path/www; names in .cut are sent only half-way."""
    www = tmp_path / "www"
    www.mkdir()
    state = SimpleNamespace(www=www, requests=[], cut=set())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append(self.path)
            name = self.path.lstrip("/")
            if name not in state.cut:
                return super().do_GET()
            body = (www / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])  # then the connection closes
            self.close_connection = True

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
    return [Remote("cifar" if name == CIFAR_NAME else "mnist", name, md5(server.www / name),
                   server.url) for name in MNIST_NAMES + (CIFAR_NAME,)]


def leftovers(folder):
    """Temporary files or folders a download left behind."""
    return [p.name for p in folder.rglob(".*")] if folder.exists() else []


def test_download_verifies_extracts_and_does_not_fetch_twice(server, tmp_path):
    remotes = serve_real_format(server, tmp_path)
    data = tmp_path / "data"
    report = load_data.download(data, remotes=remotes)
    assert [error for _, error, _ in report] == [None] * 5
    assert all("downloaded" in message and "checksum ok" in message for _, _, message in report)
    assert md5(data / "mnist" / MNIST_NAMES[0]) == remotes[0].md5
    assert (data / "cifar" / "cifar-10-batches-py" / "test_batch").is_file()
    gen = Datagen(data)
    assert gen.source == "real" and "30 train / 6 test digits" in gen.describe()
    assert "(20 / 3 backgrounds)" in gen.describe()  # test_batch, not a held-out part

    fetched = len(server.requests)
    report = load_data.download(data, remotes=remotes)
    assert all(message == "already present, checksum ok" for _, _, message in report)
    assert len(server.requests) == fetched and leftovers(data) == []


def test_progress_bar_on_stderr(server, tmp_path, capsys):
    remotes = serve_real_format(server, tmp_path)
    load_data.download(tmp_path / "data", remotes=remotes[:1], progress=True)
    err = capsys.readouterr().err
    assert f"\r{MNIST_NAMES[0]} [{'#' * 30}]" in err and err.endswith("MB\n")


def test_corrupt_file_is_discarded_and_the_old_one_kept(server, tmp_path):
    (server.www / "file.gz").write_bytes(b"what the mirror holds")
    target = tmp_path / "data" / "mnist" / "file.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"what was here before")
    remote = Remote("mnist", "file.gz", hashlib.md5(b"the published file").hexdigest(), server.url)
    [(name, error, message)] = load_data.download(tmp_path / "data", remotes=[remote])
    assert error and "not the published" in message and name == "mnist/file.gz"
    assert target.read_bytes() == b"what was here before" and leftovers(tmp_path / "data") == []


def test_missing_file_fails_alone(server, tmp_path):
    remotes = serve_real_format(server, tmp_path)
    (server.www / MNIST_NAMES[2]).unlink()
    report = load_data.download(tmp_path / "data", remotes=remotes)
    assert [error is None for _, error, _ in report] == [True, True, False, True, True]
    assert "answered 404" in report[2][2]
    assert not (tmp_path / "data" / "mnist" / MNIST_NAMES[2]).exists()


def test_interrupted_transfer_leaves_nothing(server, tmp_path):
    remotes = serve_real_format(server, tmp_path)
    server.cut.add(CIFAR_NAME)
    [(_, error, message)] = load_data.download(tmp_path / "data", remotes=remotes[4:])
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
    remote = Remote("cifar", CIFAR_NAME, md5(server.www / CIFAR_NAME), server.url)
    [(_, error, message)] = load_data.download(tmp_path / "data", remotes=[remote])
    assert error and "tries to write outside" in message and member in message
    assert list((tmp_path / "data" / "cifar").iterdir()) == []  # not even the archive is kept
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data/escaped.txt").exists()


def test_archive_that_is_not_a_tarball(server, tmp_path):
    (server.www / CIFAR_NAME).write_bytes(b"not a tarball at all")
    remote = Remote("cifar", CIFAR_NAME, md5(server.www / CIFAR_NAME), server.url)
    [(_, error, message)] = load_data.download(tmp_path / "data", remotes=[remote])
    assert error and "not a readable tar.gz" in message


def test_cifar_batches_already_present_are_not_fetched(server, tmp_path):
    write_cifar(tmp_path / "data" / "cifar")
    remote = Remote("cifar", CIFAR_NAME, "0" * 32, server.url)
    [(_, error, message)] = load_data.download(tmp_path / "data", remotes=[remote])
    assert error is None and "already present" in message and server.requests == []


def test_cli_reports_one_line_per_failed_file(server, tmp_path, capsys):
    code = load_data.main(["--download", "--data_dir", str(tmp_path / "data"),
                           "--mirror", server.url.rstrip("/")])
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and len(err) == 5 and "Traceback" not in "".join(err)
    assert all(line.startswith("error: ") and "answered 404" in line for line in err)
    assert sorted(server.requests) == sorted(f"/{name}" for name in MNIST_NAMES + (CIFAR_NAME,))


def test_cli_mirror_must_be_a_url(tmp_path, capsys):
    assert load_data.main(["--download", "--data_dir", str(tmp_path), "--mirror", "ftp://x"]) == 1
    assert capsys.readouterr().err == "error: --mirror ftp://x must be an http://, https:// or " \
                                      "file:// URL.\n"
    with pytest.raises(SystemExit) as done:
        load_data.main(["--mirror", "http://127.0.0.1/"])
    assert done.value.code == 2
