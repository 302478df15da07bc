"""Real-format data files: MNIST and CIFAR-10 read in their spellings and layouts; damaged,
hostile and oversized files refused in one sentence, before memory is spent on them."""
import gzip
import os
import pickle
import struct
import tracemalloc

import numpy as np
import pytest

from load_data import Datagen
from segm import readers
from segm.errors import DataError
from test_load_data import (T10K, cifar_batch, shape_digits, tiny_data, write_cifar, write_idx,
                            write_mnist)


# ---------------------------------------------------------------- readers

@pytest.mark.parametrize("sep", ["-", "."])
@pytest.mark.parametrize("ext", ["", ".gz"])
def test_mnist_reader_reads_both_spellings_gzipped_or_not(tmp_path, sep, ext):
    write_mnist(tmp_path / "mnist", n=30, sep=sep, ext=ext, t10k=7)
    write_cifar(tmp_path / "cifar")
    data = readers.load_real(tmp_path)
    np.testing.assert_array_equal(data["train"].digits, shape_digits(30))
    np.testing.assert_array_equal(data["train"].labels, np.arange(30) % 10)
    np.testing.assert_array_equal(data["test"].digits, shape_digits(7, T10K))


def test_mnist_is_read_by_python_mnist_once_then_from_the_cache_until_the_files_change(
        tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MNIST_CACHE", tmp_path / "cache")
    write_mnist(tmp_path / "mnist", n=30)
    pair = [tmp_path / "mnist" / f"train-{kind}-idx{d}-ubyte.gz"
            for kind, d in (("images", 3), ("labels", 1))]
    first = readers.read_mnist(*pair)
    assert len(list((tmp_path / "cache").glob("mnist-*.npz"))) == 1

    def refuse(*args):
        raise AssertionError("python-mnist read the files again")
    with monkeypatch.context() as patched:
        patched.setattr(readers._IdxReader, "load", refuse)
        again = readers.read_mnist(*pair)
    np.testing.assert_array_equal(again[0], shape_digits(30))
    np.testing.assert_array_equal(again[1], first[1])
    write_mnist(tmp_path / "mnist", n=30, t10k=0)  # the same files written anew: a new time
    os.utime(pair[0], ns=(1, 1))
    monkeypatch.setattr(readers._IdxReader, "load", refuse)
    with pytest.raises(DataError, match="python-mnist read the files again"):
        readers.read_mnist(*pair)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_cache_is_read_past_and_rewritten_never_blamed_on_the_mnist_files(
        tmp_path, monkeypatch, damage):
    monkeypatch.setattr(readers, "MNIST_CACHE", tmp_path / "cache")
    write_mnist(tmp_path / "mnist", n=30)
    pair = [tmp_path / "mnist" / f"train-{kind}-idx{d}-ubyte.gz"
            for kind, d in (("images", 3), ("labels", 1))]
    readers.read_mnist(*pair)
    [kept] = (tmp_path / "cache").glob("mnist-*.npz")
    whole = kept.read_bytes()
    kept.write_bytes({"garbage": b"not a zip file" * 50, "truncated": whole[:len(whole) // 2],
                      "empty": b""}[damage])
    digits, labels = readers.read_mnist(*pair)
    np.testing.assert_array_equal(digits, shape_digits(30))
    np.testing.assert_array_equal(labels, np.arange(30) % 10)
    with np.load(kept) as rewritten:  # rewritten whole from the files
        np.testing.assert_array_equal(rewritten["digits"], digits)


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar_reader_reads_both_layouts(tmp_path, nested, str_keys):
    write_mnist(tmp_path / "mnist")
    write_cifar(tmp_path / "cifar", n=6, nested=nested, test=4, str_keys=str_keys)
    data = readers.load_real(tmp_path)
    assert data["train"].backgrounds.shape == (30, 32, 32, 3)
    np.testing.assert_array_equal(data["train"].backgrounds[:, 3, 7, 0], np.arange(30))
    assert (data["test"].backgrounds[..., 1] == 5).all() and len(data["test"].backgrounds) == 4


class Hostile:
    """Unpickling this runs a shell command, which must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    root = tiny_data(tmp_path / "data")
    marker = tmp_path / "pwned"
    batch = cifar_batch(np.zeros((3, 32, 32, 3), np.uint8))
    batch[b"labels"] = Hostile(marker)
    (root / "cifar" / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="data_batch_3 asks to run posix.system"):
        Datagen(root, source="real")
    assert not marker.exists()


def test_real_files_counts_come_from_the_files(real_data_dir):
    data = readers.load_real(real_data_dir)
    digits = np.concatenate([data["train"].labels, data["test"].labels])
    assert len(digits) == 22_699
    assert np.bincount(digits).tolist() == [2258, 2581, 2215, 2369, 2222, 2010, 2235, 2356,
                                            2163, 2290]  # the data README's label counts
    assert len(data["train"].backgrounds) + len(data["test"].backgrounds) == 5_085
    assert not set(data["train"].digit_ids) & set(data["test"].digit_ids)
    assert not set(data["train"].background_ids) & set(data["test"].background_ids)


# ---------------------------------------------------------------- bad input

def truncate(path, keep):
    """Cut a (possibly gzipped) file's content to its first keep bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        content = f.read()[:keep]
    with opener(path, "wb") as f:
        f.write(content)


def rewrite_cifar(root, name, batch):
    (root / "cifar" / name).write_bytes(pickle.dumps(batch, protocol=2))


MNIST_IMAGES = "mnist/train-images-idx3-ubyte.gz"
MNIST_LABELS = "mnist/train-labels-idx1-ubyte.gz"
BREAKAGES = {
    "missing mnist file": (lambda r: (r / MNIST_LABELS).unlink(), "lacks train-images"),
    "missing cifar batch": (lambda r: (r / "cifar/data_batch_4").unlink(), "lacks data_batch_4"),
    "lone t10k file": (lambda r: write_idx(r / "mnist/t10k-images-idx3-ubyte",
                                           shape_digits(3), 2051), "only one of the two"),
    "truncated images": (lambda r: truncate(r / MNIST_IMAGES, 16 + 784 * 5 + 100), "truncated"),
    "truncated header": (lambda r: truncate(r / MNIST_IMAGES, 10), "could not be read"),
    "damaged gzip": (lambda r: (r / MNIST_IMAGES).write_bytes(b"\x1f\x8b" + b"junk" * 9),
                     "could not be read"),
    "too few labels": (lambda r: truncate(r / MNIST_LABELS, 8 + 30), "truncated"),
    "header count too large": (lambda r: write_idx(r / MNIST_IMAGES, shape_digits(40), 2051,
                                                   count=41), "claims 41 images of 28x28 for 40"),
    "absurd header count": (lambda r: write_idx(r / MNIST_IMAGES, shape_digits(40), 2051,
                                                count=2**32 - 1), "claims 4,294,967,295 images"),
    "both counts too large": (lambda r: [write_idx(r / MNIST_IMAGES, shape_digits(40), 2051,
                                                   count=45),
                                         write_idx(r / MNIST_LABELS, np.zeros(40), 2049, count=45)],
                              "truncated"),
    "not 28x28": (lambda r: write_idx(r / MNIST_IMAGES, np.zeros((40, 20, 20)), 2051),
                  "40 images of 20x20"),
    "image magic": (lambda r: write_idx(r / MNIST_IMAGES, shape_digits(40), 2049),
                    "train-images-idx3-ubyte.gz has the wrong magic number"),
    "label magic": (lambda r: write_idx(r / MNIST_LABELS, np.zeros(40), 2051),
                    "train-labels-idx1-ubyte.gz has the wrong magic number"),
    "label above 9": (lambda r: write_idx(r / MNIST_LABELS, np.full(40, 12), 2049), "above 9"),
    "cifar keys": (lambda r: rewrite_cifar(r, "data_batch_2", {b"data": np.zeros((2, 3072))}),
                   "lacks the 'data' and 'labels'"),
    "cifar shape": (lambda r: rewrite_cifar(r, "data_batch_2", {
        b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}), "N x 3072 uint8"),
    "cifar dtype": (lambda r: rewrite_cifar(r, "data_batch_2", {
        b"data": np.zeros((2, 3072)), b"labels": [0, 1]}), "N x 3072 uint8"),
    "cifar label count": (lambda r: rewrite_cifar(r, "data_batch_2", {
        b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "N x 3072 uint8"),
    "cifar not a dict": (lambda r: rewrite_cifar(r, "data_batch_2", [1, 2]), "lacks the 'data'"),
    "truncated pickle": (lambda r: truncate(r / "cifar/data_batch_1", 300), "not a readable"),
    "one record": (lambda r: [write_idx(r / MNIST_IMAGES, shape_digits(1), 2051),
                              write_idx(r / MNIST_LABELS, np.zeros(1), 2049)], "too few"),
}


@pytest.mark.parametrize("name", BREAKAGES)
def test_bad_files_give_one_clear_sentence(tmp_path, name):
    root = tiny_data(tmp_path)
    breakage, expected = BREAKAGES[name]
    breakage(root)
    with pytest.raises(DataError, match=expected) as error:
        Datagen(root)  # auto: the real files are there, so they must be right
    message = str(error.value)
    assert message.endswith(".") and "\n" not in message and ";" in message  # what, then what to do


def peak_memory(call):
    """(the exception call raised, peak bytes Python and numpy allocated while it ran)."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            call()
        return error.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("ext", ["", ".gz"])
def test_mnist_header_claiming_more_than_the_file_holds_allocates_nothing(tmp_path, ext):
    # A 76-byte images file claiming 500,000 images once made python-mnist allocate 3 GB.
    root = tiny_data(tmp_path, n=0)
    write_idx(root / f"mnist/train-labels-idx1-ubyte{ext}", np.arange(500_000) % 10, 2049)
    images = root / f"mnist/train-images-idx3-ubyte{ext}"
    with (gzip.open if ext else open)(images, "wb") as f:
        f.write(struct.pack(">IIII", 2051, 500_000, 28, 28) + bytes(60))
    error, peak = peak_memory(lambda: readers.load_real(root))
    assert str(error) == (f"{images} should hold 392,000,016 bytes for the 500,000 images its "
                          f"header claims, but it is truncated; replace it with a good copy "
                          f"(`python download.py`).")
    assert peak < 20e6


def test_gzip_longer_than_its_header_is_refused_early(tmp_path):
    root = tiny_data(tmp_path, n=40)
    images = root / MNIST_IMAGES
    with gzip.open(images, "wb", compresslevel=1) as f:  # 40 images, then 64 MB of zeros
        f.write(struct.pack(">IIII", 2051, 40, 28, 28) + shape_digits(40).tobytes())
        for _ in range(64):
            f.write(bytes(1 << 20))
    error, peak = peak_memory(lambda: readers.load_real(root))
    assert str(error) == (f"{images} should hold 31,376 bytes for the 40 images its header "
                          f"claims, but it is longer than that; replace it with a good copy "
                          f"(`python download.py`).")
    assert peak < 20e6


@pytest.mark.parametrize("kwargs,expected", [
    ({"digit_size": 40}, "does not fit"),
    ({"canvas": 0}, "canvas must be a whole number"),
    ({"num_classes": 10}, "num_classes must be 2"),
    ({"source": "web"}, "source must be one of"),
    ({"source": "real"}, "does not exist"),
    ({"digit_scale": (1, 3)}, "high \\* digit_size <= canvas"),
    ({"digit_scale": (2, 1)}, "0 < low <= high"),
    ({"digit_scale": "big"}, "pair"),
    ({"seed": -1}, "seed must be"),
    ({"digits_per_image": 1.5}, "digits_per_image must be a whole number"),
])
def test_bad_arguments_give_one_clear_sentence(tmp_path, kwargs, expected):
    with pytest.raises(DataError, match=expected):
        Datagen(tmp_path / "missing", **kwargs)


def test_bad_split_and_sizes(tmp_path):
    gen = Datagen(tiny_data(tmp_path))
    with pytest.raises(DataError, match="split must be 'train' or 'test', not 'valid'"):
        gen.sample(4, split="valid")
    with pytest.raises(DataError, match="batch_size must be"):
        gen.sample(0)
    with pytest.raises(DataError, match="n must be"):
        gen.test_set(-3)
    with pytest.raises(DataError, match="step must be a whole number of at least 0, not -1"):
        gen.sample(4, step=-1)


# ---------------------------------------------------------------- through main.py

def test_hostile_data_ends_in_one_sentence_and_runs_nothing(tmp_path, capsys):
    from helpers import call_main, one_sentence
    root = tiny_data(tmp_path / "data")
    rewrite_cifar(root, "data_batch_1", Hostile(tmp_path / "pwned"))
    status, _, err = call_main(capsys, "--data_dir", root, "--canvas", "16", "--digit_size", "8",
                               "--out_dir", tmp_path / "run")
    assert status == 1 and "was not loaded" in one_sentence(err)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()
