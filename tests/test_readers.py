"""readers.py: CIFAR-10 pickles are read in R, G, B order, and hostile ones build nothing big."""
import pickle

import numpy as np
import pytest

from segm import readers
from segm.errors import DataError
from test_data_files import peak_memory
from test_load_data import cifar_batch


def test_cifar_pixel_order_is_r_g_b_planes(tmp_path):
    rows = np.arange(3072, dtype=np.int64).reshape(1, 3072) % 251
    batch = {b"data": rows.astype(np.uint8), b"labels": [0]}
    (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=2))
    image = readers.read_cifar_batch(tmp_path / "b")
    assert image[0, 2, 5].tolist() == [(2 * 32 + 5) % 251, (1024 + 69) % 251, (2048 + 69) % 251]


def p2(value):
    """The protocol-2 opcodes that push value, to splice into a hand-built pickle."""
    return pickle.dumps(value, protocol=2)[2:-1]


RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
UINT8 = b"cnumpy\ndtype\n" + p2(("u1", False, True)) + b"R"


def hostile_batch(array_ops, labels=1):
    """Pickle bytes of {b"data": <what array_ops build>, b"labels": [0] * labels}."""
    return b"\x80\x02}(" + p2(b"data") + array_ops + p2(b"labels") + p2([0] * labels) + b"u."


def reconstruct(shape, state_shape=None, data=b"short", dtype=UINT8):
    """Opcodes for _reconstruct(ndarray, shape, b"b"), then (state_shape) its __setstate__."""
    ops = RECONSTRUCT + p2(shape) + p2(b"b") + b"\x87R"
    if state_shape is not None:
        ops += b"(" + p2(1) + p2(state_shape) + dtype + p2(False) + p2(data) + b"tb"
    return ops


HOSTILE_ARRAYS = {
    "reconstruct asks for 10**12": (reconstruct((10**12,), (10**12,)),
                                    "asks for an array of 1,000,000,000,000 values, more than "
                                    "the 10,000 x 3072 of a CIFAR-10 batch, so it was not loaded"),
    "reconstruct asks for 1 GB": (reconstruct((10**9,)), "asks for an array of 1,000,000,000"),
    "ndarray asks for 10**11": (b"cnumpy\nndarray\n" + p2(((10**11,),)) + b"R",
                                "asks for an array of 100,000,000,000 values"),
    "setstate asks for 2 GB": (reconstruct((0,), (2 * 10**9,)),
                               "is not a readable CIFAR-10 batch (ValueError)"),
    "setstate asks for a huge subarray": (
        reconstruct((0,), (5, 3072), b"x" * 15360, b"cnumpy\ndtype\n" + p2(("u1", False, False))
                    + b"R" + p2((3, "|", (np.dtype("u1"), (10**9,)), None, None, -1, -1, 0))
                    + b"b"), "does not hold N x 3072 uint8 images with N labels"),
    "object dtype": (reconstruct((0,), (1,), b"", b"cnumpy\ndtype\n" + p2(("O", False, True))
                                 + b"R"), "asks for the array type 'O'"),
    "hex codec": (b"c_codecs\nencode\n" + p2(("00", "hex")) + b"R", "asks to encode with 'hex'"),
}


@pytest.mark.parametrize("name", HOSTILE_ARRAYS)
def test_hostile_array_pickles_allocate_nothing(tmp_path, name):
    array_ops, expected = HOSTILE_ARRAYS[name]
    path = tmp_path / "data_batch_1"
    path.write_bytes(hostile_batch(array_ops, labels=5))
    error, peak = peak_memory(lambda: readers.read_cifar_batch(path))
    assert str(error).startswith(f"{path} ") and expected in str(error)
    assert str(error).endswith("; delete it and download CIFAR-10 again (`python download.py`).")
    assert peak < 20e6 and np.dtype("u1").shape == ()  # numpy's own uint8 left alone


def test_cifar_batch_beyond_10000_images_is_refused(tmp_path):
    images = np.zeros((10_001, 32, 32, 3), np.uint8)
    (tmp_path / "b").write_bytes(pickle.dumps(cifar_batch(images), protocol=4))
    with pytest.raises(DataError, match="holds 10,001 images, more than the 10,000 of a "
                                        "CIFAR-10 batch; delete it"):
        readers.read_cifar_batch(tmp_path / "b")
    with open(tmp_path / "huge", "wb") as f:  # sparse: 64 MB on paper, nothing on disk
        f.truncate(readers.CIFAR_FILE_LIMIT + 1)
    error, peak = peak_memory(lambda: readers.read_cifar_batch(tmp_path / "huge"))
    assert "holds 67,108,865 bytes, more than any CIFAR-10 batch, so it was not loaded" in str(
        error) and peak < 1e6
