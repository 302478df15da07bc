"""Read the original MNIST and CIFAR-10 files safely: sizes checked first, pickles build arrays only.

A file's header can claim more than its bytes hold, and a pickle can ask for any
object or any size of array: every check here runs before memory is spent on it.
MNIST is parsed with python-mnist; CIFAR-10 batches with a restricted unpickler.
"""
import gzip
import math
import pickle
import struct

import numpy as np
from mnist import MNIST

CIFAR_BATCH = (10_000, 3072)  # the most images a CIFAR-10 batch file holds, bytes per image
CIFAR_FILE_LIMIT = 64 << 20  # Python 3's protocol 2 stores bytes as UTF-8: a full batch < 62 MB
MNIST_FIX = "replace it with a good copy (`python download.py`)"
CIFAR_FIX = "delete it and download CIFAR-10 again (`python download.py`)"


class DataError(Exception):
    """A problem the user can fix; the message is one sentence: what is wrong, what to do."""


class _IdxReader(MNIST):
    """python-mnist's parser, opening each file gzipped or plain by its own name."""

    def opener(self, path, *args, **kwargs):
        return (gzip.open if str(path).endswith(".gz") else open)(path, *args, **kwargs)


def find_idx(folder, stem, kind):
    """folder/stem-kind-ubyte in either spelling (-kind or .kind), gzipped or not, or None."""
    paths = [folder / f"{stem}{sep}{kind}-ubyte{gz}" for sep in "-." for gz in ("", ".gz")]
    return next((path for path in paths if path.is_file()), None)


def _idx_sizes(path, magic, dims):
    """The sizes in an IDX file's header, after checking its magic number."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        found, *sizes = struct.unpack(f">{1 + dims}I", f.read(4 + 4 * dims))
    if found != magic:
        raise DataError(f"{path} has the wrong magic number for an MNIST file; {MNIST_FIX}.")
    return sizes


def _check_length(path, header, count, size, what):
    """DataError unless path holds exactly the count records of size bytes its header claims."""
    claimed = header + count * size
    if path.suffix != ".gz":
        found = path.stat().st_size
    else:  # decompressed in chunks, and no further than one byte past the claim
        found = 0
        with gzip.open(path, "rb") as f:
            while found <= claimed and (chunk := f.read(min(1 << 20, claimed + 1 - found))):
                found += len(chunk)
    if found != claimed:
        state = "truncated" if found < claimed else "longer than that"
        raise DataError(f"{path} should hold {claimed:,} bytes for the {count:,} {what} its "
                        f"header claims, but it is {state}; {MNIST_FIX}.")


def read_mnist(images_path, labels_path):
    """Digits (N, 28, 28) uint8 and labels (N,) from an IDX pair; N comes from the files."""
    try:
        (count,) = _idx_sizes(labels_path, 2049, 1)
        n, rows, cols = _idx_sizes(images_path, 2051, 3)
        if (n, rows, cols) != (count, 28, 28):
            raise DataError(f"{images_path} claims {n:,} images of {rows}x{cols} for {count:,} "
                            f"labels, not one label per 28x28 image; {MNIST_FIX}.")
        if not n:
            raise DataError(f"{images_path} holds no images; {MNIST_FIX}.")
        # Before python-mnist allocates what the headers claim: a header can lie.
        _check_length(labels_path, 8, count, 1, "labels")
        _check_length(images_path, 16, n, 784, "images")
        images, labels = _IdxReader(return_type="lists").load(str(images_path), str(labels_path))
    except DataError:
        raise
    except Exception as e:  # struct, gzip, EOF and OS errors: all mean an unreadable file
        raise DataError(f"{images_path} or {labels_path.name} could not be read ({e}); "
                        f"{MNIST_FIX}.") from None
    labels = np.frombuffer(bytes(labels), np.uint8).copy()
    if labels.max() > 9:
        raise DataError(f"{labels_path} holds labels above 9, so it is not MNIST; {MNIST_FIX}.")
    return np.array(images, np.uint8).reshape(-1, 28, 28), labels


class _Refused(pickle.UnpicklingError):
    """A pickle asking for something no CIFAR-10 batch needs; the message says what."""


def _empty_array(shape):
    """An empty array standing in for one of shape, which must fit a batch: nothing is allocated.

    The pickle's next step hands ndarray.__setstate__ the array's real shape, dtype and bytes,
    and numpy refuses bytes that do not fill that shape, so no array outgrows the file.
    """
    dims = (shape,) if isinstance(shape, int) else shape
    if not (isinstance(dims, tuple) and all(isinstance(n, int) and n >= 0 for n in dims)):
        raise _Refused(f"asks for an array of shape {shape!r}")
    if math.prod(dims) > math.prod(CIFAR_BATCH):
        raise _Refused(f"asks for an array of {math.prod(dims):,} values, more than the "
                       f"{CIFAR_BATCH[0]:,} x {CIFAR_BATCH[1]} of a CIFAR-10 batch")
    return np.empty(0, np.uint8)


def _reconstruct(subtype, shape, dtype):
    """numpy's _reconstruct as a pickled array calls it, (ndarray, (0,), b'b'), minus allocation."""
    return _empty_array(shape)


def _ndarray(shape, *args):
    """numpy.ndarray as a pickle may call it, minus allocation."""
    return _empty_array(shape)


def _dtype(spec, align=False, copy=True):
    """numpy.dtype as a pickle calls it: plain numbers only, and a copy whatever copy says."""
    dtype = np.dtype(spec) if isinstance(spec, (str, bytes)) else None
    if dtype is None or dtype.kind not in "biuf" or dtype.shape or dtype.names:
        raise _Refused(f"asks for the array type {spec!r}, which no CIFAR-10 batch uses")
    return np.dtype(dtype, align, True)  # the pickle then sets its state: never numpy's own


def _latin1(text, encoding):
    """codecs.encode as Python 3 pickles bytes for protocol 2; no other codec."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused(f"asks to encode with {encoding!r}, which no CIFAR-10 batch does")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Builds arrays through the functions above, nothing else: a pickle runs what it names."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy", "ndarray"): _ndarray, ("numpy", "dtype"): _dtype,
               ("_codecs", "encode"): _latin1}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise _Refused(f"asks to run {module}.{name}, which no CIFAR-10 batch does")
        return self.ALLOWED[module, name]


def read_cifar_batch(path):
    """Images (N, 32, 32, 3) uint8 from a CIFAR-10 python batch, loaded without running code."""
    try:
        size = path.stat().st_size
        if size > CIFAR_FILE_LIMIT:
            raise _Refused(f"holds {size:,} bytes, more than any CIFAR-10 batch")
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise DataError(f"{path} {e}, so it was not loaded; {CIFAR_FIX}.") from None
    except Exception as e:  # truncated or garbled pickles fail in many ways
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}); "
                        f"{CIFAR_FIX}.") from None
    if isinstance(batch, dict):  # the original files have bytes keys, home-made ones str keys
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if not isinstance(batch, dict) or not {"data", "labels"} <= batch.keys():
        raise DataError(f"{path} lacks the 'data' and 'labels' entries of a CIFAR-10 batch; "
                        f"{CIFAR_FIX}.")
    data, labels = batch["data"], batch["labels"]
    # A pickle can rewrite a dtype's state, so only a plain uint8 passes, not one equal to it.
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.dtype.shape == ()
            and data.dtype.names is None and data.ndim == 2 and data.shape[1] == 3072
            and isinstance(labels, (list, np.ndarray)) and len(labels) == len(data) > 0):
        raise DataError(f"{path} does not hold N x 3072 uint8 images with N labels; "
                        f"{CIFAR_FIX}.")
    if len(data) > CIFAR_BATCH[0]:
        raise DataError(f"{path} holds {len(data):,} images, more than the {CIFAR_BATCH[0]:,} "
                        f"of a CIFAR-10 batch; {CIFAR_FIX}.")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # rows are R, G, B planes
