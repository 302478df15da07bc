"""Read data files safely, before spending memory: MNIST, CIFAR-10, pictures and masks.

A file's header can claim more than its bytes hold, and a pickle can ask for any
object or any size of array: every check here runs before memory is spent on it.
MNIST is parsed with python-mnist; CIFAR-10 batches with a restricted unpickler;
pictures and masks with Pillow, which reads their size from the header alone.
"""
import functools
import gzip
import hashlib
import math
import os
import pickle
import struct
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from mnist import MNIST

from segm import files
from segm.errors import DataError, FileError

# data/ beside the scripts (above segm/), the same from whichever folder you run in
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
HELD_OUT = 0.1  # share of the train files kept for testing when t10k/test_batch are absent
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FOLDER = "cifar-10-batches-py"  # what the official tarball extracts to
CIFAR_BATCH = (10_000, 3072)  # the most images a CIFAR-10 batch file holds, bytes per image
CIFAR_FILE_LIMIT = 64 << 20  # Python 3's protocol 2 stores bytes as UTF-8: a full batch < 62 MB
IGNORE = 255  # a mask value no loss or metric counts: "not labelled" (Pascal VOC's convention)
# MNIST as arrays, after python-mnist's first read: a run after it reads them in milliseconds
MNIST_CACHE = Path(os.environ.get("SEGM_CACHE_DIR")
                   or Path(__file__).resolve().parent.parent / "im" / ".cache")
MNIST_FIX = "replace it with a good copy (`python download.py`)"
CIFAR_FIX = "delete it and download CIFAR-10 again (`python download.py`)"


# What every reader's pixels become for the models: the seed repository's [-1, 1].

def normalize(rgb):
    """0..255 pixels -> float32 in [-1, 1]."""
    images = np.asarray(rgb).astype(np.float32, order="C")  # a fresh copy, so in-place is safe
    images *= np.float32(1 / 127.5)
    images -= 1
    return images


def denormalize(images):
    """[-1, 1] images -> float32 in [0, 1] for display."""
    return np.clip((np.asarray(images, np.float32) + 1) / 2, 0, 1)


class Split(NamedTuple):
    digits: np.ndarray  # (N, 28, 28) uint8, as in the MNIST files
    labels: np.ndarray  # (N,) 0..9
    digit_ids: np.ndarray  # (N,) record numbers in the file they came from
    backgrounds: np.ndarray  # (M, 32, 32, 3) uint8
    background_ids: np.ndarray  # (M,)


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
        cached = _cached_mnist(images_path, labels_path, n)
        if cached:
            return cached
        images, labels = _IdxReader(return_type="lists").load(str(images_path), str(labels_path))
    except DataError:
        raise
    except Exception as e:  # struct, gzip, EOF and OS errors: all mean an unreadable file
        raise DataError(f"{images_path} or {labels_path.name} could not be read ({e}); "
                        f"{MNIST_FIX}.") from None
    labels = np.frombuffer(bytes(labels), np.uint8).copy()
    if labels.max() > 9:
        raise DataError(f"{labels_path} holds labels above 9, so it is not MNIST; {MNIST_FIX}.")
    # python-mnist gives a list of 784 ints per image; bytes() packs each row in C, twice
    # as fast as np.array over the nested lists.
    digits = np.frombuffer(bytearray().join(map(bytes, images)), np.uint8).reshape(-1, 28, 28)
    _cache_mnist(images_path, labels_path, digits, labels)
    return digits, labels


def _mnist_cache_file(images_path, labels_path):
    """(the cache file of this pair of files, the pair's path, size and time, as text)."""
    pair = [Path(images_path).resolve(), Path(labels_path).resolve()]
    where = hashlib.sha1(str(pair).encode()).hexdigest()[:16]
    stamp = repr([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in pair])
    return MNIST_CACHE / f"mnist-{where}.npz", stamp


def _cached_mnist(images_path, labels_path, n):
    """(digits, labels) from the cache, when it holds these files as they are now; else None.
    python-mnist builds a Python list per image (about a second per 20,000 digits)."""
    path, stamp = _mnist_cache_file(images_path, labels_path)
    try:
        with np.load(path, allow_pickle=False) as kept:
            if (str(kept["stamp"]) == stamp and kept["digits"].shape == (n, 28, 28)
                    and kept["labels"].shape == (n,)):
                return kept["digits"], kept["labels"]
    except Exception:  # none yet, or damaged in any way: the files are read again
        pass
    return None


def _cache_mnist(images_path, labels_path, digits, labels):
    """Keep what python-mnist read (one file per pair of files, replaced when they change);
    where im/ cannot be written, the next run reads the files again."""
    path, stamp = _mnist_cache_file(images_path, labels_path)
    try:
        with files.atomic_write(path) as tmp:
            np.savez(tmp, digits=digits, labels=labels, stamp=np.array(stamp))
    except FileError:
        pass


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


# ---------------------------------------------------------------- a data folder

def cifar_folder(data_dir):
    """data_dir/cifar, or the cifar-10-batches-py folder the tarball makes inside it."""
    inner = Path(data_dir) / "cifar" / CIFAR_FOLDER
    return inner if inner.is_dir() else Path(data_dir) / "cifar"


def get_data_hint(folder):
    """What to do about a data folder without the real files."""
    flag = "" if Path(folder) == DEFAULT_DATA_DIR else f" --data_dir {folder}"
    return (f"run `python download.py{flag}` or put the MNIST files in {Path(folder) / 'mnist'} "
            f"and the CIFAR-10 batches in {Path(folder) / 'cifar'}")


def has_real_files(data_dir):
    """True if data_dir holds any MNIST file or CIFAR-10 batch."""
    mnist_dir, cifar_dir = Path(data_dir) / "mnist", cifar_folder(data_dir)
    return bool(any(find_idx(mnist_dir, f"{stem}-{kind}", idx) for stem in ("train", "t10k")
                    for kind, idx in (("images", "idx3"), ("labels", "idx1")))
                or any((cifar_dir / name).is_file() for name in CIFAR_TRAIN + ("test_batch",)))


def _split_ids(n_train, n_test, what):
    """Record numbers (train, test): both files whole, or (n_test None) the train file's tail."""
    if n_test is not None:
        return np.arange(n_train), np.arange(n_test)
    if n_train < 2:
        raise DataError(f"{what} holds {n_train} record(s), too few to split into train and "
                        f"test; use the full files.")
    cut = n_train - max(1, round(n_train * HELD_OUT))
    return np.arange(cut), np.arange(cut, n_train)


def load_real(data_dir):
    """{"train": Split, "test": Split} from the MNIST and CIFAR-10 files in data_dir.

    A folder with only the t10k files and test_batch gives {"train": None, "test": Split}:
    enough to score a model.
    """
    data_dir, mnist_dir = Path(data_dir), Path(data_dir) / "mnist"
    cifar_dir = cifar_folder(data_dir)
    if not data_dir.is_dir():
        what = "is a file, not a folder" if data_dir.exists() else "does not exist"
        raise DataError(f"the data folder {data_dir} {what}; {get_data_hint(data_dir)}.")
    train, test = ((find_idx(mnist_dir, f"{stem}-images", "idx3"),
                    find_idx(mnist_dir, f"{stem}-labels", "idx1")) for stem in ("train", "t10k"))
    if test.count(None) == 1:
        raise DataError(f"{mnist_dir} has only one of the two t10k files; add the other or "
                        f"remove it.")
    any_train = train != (None, None) or any((cifar_dir / name).is_file() for name in CIFAR_TRAIN)
    if not any_train and None not in test and (cifar_dir / "test_batch").is_file():
        digits, labels = read_mnist(*test)
        backgrounds = read_cifar_batch(cifar_dir / "test_batch")
        return {"train": None, "test": Split(digits, labels, np.arange(len(digits)), backgrounds,
                                             np.arange(len(backgrounds)))}
    if None in train:
        raise DataError(f"{mnist_dir} lacks train-images-idx3-ubyte or train-labels-idx1-ubyte "
                        f"(.gz or not); {get_data_hint(data_dir)}.")
    missing = [name for name in CIFAR_TRAIN if not (cifar_dir / name).is_file()]
    if missing:
        raise DataError(f"{cifar_dir} lacks {', '.join(missing)}; {get_data_hint(data_dir)}.")

    digits, labels = read_mnist(*train)
    test_digits, test_labels = (digits, labels) if None in test else read_mnist(*test)
    d_train, d_test = _split_ids(len(digits), None if None in test else len(test_digits), mnist_dir)
    backgrounds = np.concatenate([read_cifar_batch(cifar_dir / name) for name in CIFAR_TRAIN])
    has_test = (cifar_dir / "test_batch").is_file()
    test_backgrounds = read_cifar_batch(cifar_dir / "test_batch") if has_test else backgrounds
    b_train, b_test = _split_ids(len(backgrounds), len(test_backgrounds) if has_test else None,
                                 cifar_dir)
    return {"train": Split(digits[d_train], labels[d_train], d_train,
                           backgrounds[b_train], b_train),
            "test": Split(test_digits[d_test], test_labels[d_test], d_test,
                          test_backgrounds[b_test], b_test)}


@functools.lru_cache(maxsize=1)
def load_real_cached(folder, stamp):
    """load_real, reused while stamp (every file's path, size and time) stays the same."""
    return load_real(folder)


def stamp(data_dir):
    """(path, size, mtime) of every file under data_dir: it changes whenever the data does."""
    paths = sorted(p for p in Path(data_dir).glob("*/**/*") if p.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


# ---------------------------------------------------------------- pictures and masks

def _open_picture(path, max_pixels):
    """PIL's image of path, its pixel count checked from the header before any decoding."""
    from PIL import Image
    # PIL refuses twice this before decoding anything; its limit is put back after.
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        # The filter is on before open(), which is where PIL warns of a large header.
        with warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning):
            picture = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if picture.width * picture.height > max_pixels:
        picture.close()
        raise DataError(f"{path} is {picture.width}x{picture.height} pixels, more than the "
                        f"{max_pixels:,} that fit in memory here; shrink it first")
    return picture


def _read(path, max_pixels, convert):
    """convert(upright PIL image) for the picture at path, or one sentence why not."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    def upright(picture):  # most pictures need no turning, and then no copy
        turned = picture.getexif().get(0x0112, 1) != 1
        return ImageOps.exif_transpose(picture) if turned else picture
    try:
        with _open_picture(path, max_pixels) as picture:
            return convert(picture, lambda: upright(picture))
    except DataError:
        raise
    except PermissionError:
        raise DataError(f"{path} cannot be read (permission denied); fix its permissions") from None
    except Image.DecompressionBombError:
        raise DataError(f"{path} claims more than {2 * max_pixels:,} pixels, too many to decode "
                        f"safely here; shrink it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # SyntaxError: PIL's
        raise DataError(f"{path} is not a readable image; pass a PNG or JPEG") from None


def read_image(path, max_pixels):
    """(H, W, 3) uint8 RGB of a PNG/JPEG as the eye sees it (EXIF orientation, 16-bit,
    palette and alpha handled), or one sentence why not."""
    def convert(picture, upright):
        picture = upright()
        if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey
            grey = np.asarray(picture, np.float64)
            top = 65535.0 if picture.mode != "F" else max(float(grey.max()), 1e-12)
            grey = np.clip(grey / top * 255, 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=-1)
        return np.asarray(picture.convert("RGB"))
    return _read(path, max_pixels, convert)


def read_mask(path, max_pixels):
    """(H, W) uint8 class indices of a mask PNG (mode L, P or 1), upright, or one sentence."""
    def convert(picture, upright):
        if picture.format != "PNG":
            raise DataError(f"{path} is a {picture.format} file; save masks as PNG, whose "
                            f"pixels stay exactly the class numbers written")
        if picture.mode not in ("L", "P", "1"):
            raise DataError(f"{path} is a {picture.mode} picture, but a mask holds one class "
                            f"number per pixel; save it as an 8-bit greyscale or palette PNG "
                            f"(mode L or P), or give each colour's class in a classes.csv "
                            f"(name,r,g,b) in the data folder")
        return np.asarray(upright(), np.uint8)
    return _read(path, max_pixels, convert)


def picture_size(path, max_pixels):
    """(height, width) of a picture as the eye sees it (after EXIF orientation), from its
    header alone."""
    def convert(picture, upright):
        turned = picture.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # a quarter turn
        return (picture.width, picture.height) if turned else (picture.height, picture.width)
    return _read(path, max_pixels, convert)
