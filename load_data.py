"""MNIST digits pasted on CIFAR-10 photos: images and their segmentation masks.

    python load_data.py [--data_dir DIR] [--out PATH]   # sample grid -> im/input_data.png
    python load_data.py --bench                         # generator speed in images/s
    python load_data.py --download [--mirror URL]       # fetch MNIST and CIFAR-10 into data/

Without the real files the generator falls back to a built-in synthetic source
(font digits on procedural backgrounds), so everything runs on a fresh clone.
"""
import argparse
import codecs
import functools
import gzip
import hashlib
import os
import pickle
import shutil
import struct
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np
from mnist import MNIST

HERE = Path(__file__).resolve().parent

# data
DEFAULT_DATA_DIR = HERE / "data"  # beside the script, so any working directory works
SOURCES = ("auto", "real", "synthetic")
SPLITS = ("train", "test")
HELD_OUT = 0.1  # share of the train files kept for testing when t10k/test_batch are absent
THRESHOLD = 0.3  # seed protocol: a pixel is digit where the digit's intensity (0..1) exceeds this
INK = 200.0  # seed protocol: mask pixels get a flat +200 (clipped to 255); the rest stay as is
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FOLDER = "cifar-10-batches-py"  # what the official tarball extracts to
GET_DATA = "run `python load_data.py --download` or put the files in DIR/mnist and DIR/cifar"
MNIST_FIX = "replace it with a good copy (`python load_data.py --download`)"

# synthetic source: a fixed bank, like a data set; the Datagen seed only drives sampling
SYNTHETIC_SEED = 20240611
SYNTHETIC_DIGITS = {"train": 3000, "test": 750}
SYNTHETIC_BACKGROUNDS = {"train": 2000, "test": 500}
FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSansMono", "DejaVuSerif",
         "DejaVuSerif-Italic", "STIXGeneral", "STIXGeneralItalic", "STIXGeneralBol", "cmr10",
         "cmss10", "cmtt10", "cmb10", "cmti10")  # the matplotlib fonts that draw all ten digits

# download
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # yann.lecun.com often answers 403
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"

# output
DEFAULT_OUT = HERE / "im" / "input_data.png"


class DataError(Exception):
    """A problem the user can fix; the message is one sentence: what is wrong, what to do."""


class Remote(NamedTuple):
    folder: str  # under the data folder
    name: str
    md5: str  # as published (and used by torchvision)
    base_url: str


REMOTES = (
    Remote("mnist", "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", MNIST_URL),
    Remote("mnist", "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", MNIST_URL),
    Remote("mnist", "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", MNIST_URL),
    Remote("mnist", "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", MNIST_URL),
    Remote("cifar", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", CIFAR_URL),
)


class Split(NamedTuple):
    digits: np.ndarray  # (N, 28, 28) uint8, as in the MNIST files
    labels: np.ndarray  # (N,) 0..9
    digit_ids: np.ndarray  # (N,) record numbers in the file they came from
    backgrounds: np.ndarray  # (M, 32, 32, 3) uint8
    background_ids: np.ndarray  # (M,)


class Layout(NamedTuple):
    split: str
    background: np.ndarray  # (B,) index into the split's backgrounds
    digit: np.ndarray  # (B, K) index into the split's digits; later ones lie on top
    size: np.ndarray  # (B, K) side of each pasted digit in pixels
    y: np.ndarray  # (B, K) top-left corner
    x: np.ndarray  # (B, K)


def normalize(rgb):
    """0..255 pixels -> float32 in [-1, 1]."""
    images = np.asarray(rgb).astype(np.float32, order="C")  # a fresh copy, so in-place is safe
    images *= np.float32(1 / 127.5)
    images -= 1
    return images


def denormalize(images):
    """[-1, 1] images -> float32 in [0, 1] for display."""
    return np.clip((np.asarray(images, np.float32) + 1) / 2, 0, 1)


# ---------------------------------------------------------------- real files

class _IdxReader(MNIST):
    """python-mnist's parser, opening each file gzipped or plain by its own name."""

    def opener(self, path, *args, **kwargs):
        return (gzip.open if str(path).endswith(".gz") else open)(path, *args, **kwargs)


def _find_idx(folder, stem, kind):
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


def read_mnist(images_path, labels_path):
    """Digits (N, 28, 28) uint8 and labels (N,) from an IDX pair; N comes from the files."""
    try:
        (count,) = _idx_sizes(labels_path, 2049, 1)
        n, rows, cols = _idx_sizes(images_path, 2051, 3)
        if (n, rows, cols) != (count, 28, 28):  # before python-mnist allocates what they claim
            raise DataError(f"{images_path} claims {n:,} images of {rows}x{cols} for {count:,} "
                            f"labels, not one label per 28x28 image; {MNIST_FIX}.")
        images, labels = _IdxReader(return_type="lists").load(str(images_path), str(labels_path))
    except DataError:
        raise
    except Exception as e:  # struct, gzip, EOF and OS errors: all mean an unreadable file
        raise DataError(f"{images_path} or {labels_path.name} could not be read ({e}); "
                        f"{MNIST_FIX}.") from None
    if not images or len(images[-1]) != 784 or len(labels) != len(images):  # data cut short
        raise DataError(f"{images_path} or {labels_path.name} is truncated or holds no images; "
                        f"{MNIST_FIX}.")
    labels = np.frombuffer(bytes(labels), np.uint8).copy()
    if labels.max() > 9:
        raise DataError(f"{labels_path} holds labels above 9, so it is not MNIST; {MNIST_FIX}.")
    return np.array(images, np.uint8).reshape(-1, 28, 28), labels


class _Refused(pickle.UnpicklingError):
    """A pickle named something a CIFAR batch never needs."""


class _CifarUnpickler(pickle.Unpickler):
    """Builds numpy arrays and nothing else: a pickle can call anything it names."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}  # bytes pickled by Python 3

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise _Refused(f"{module}.{name}")
        return self.ALLOWED[module, name]


def read_cifar_batch(path):
    """Images (N, 32, 32, 3) uint8 from a CIFAR-10 python batch, loaded without running code."""
    fix = "delete it and download CIFAR-10 again (`python load_data.py --download`)"
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise DataError(f"{path} asks to run {e}, which no CIFAR-10 batch does, so it was not "
                        f"loaded; {fix}.") from None
    except Exception as e:  # truncated or garbled pickles fail in many ways
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}); "
                        f"{fix}.") from None
    if isinstance(batch, dict):  # the original files have bytes keys, home-made ones str keys
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if not isinstance(batch, dict) or not {"data", "labels"} <= batch.keys():
        raise DataError(f"{path} lacks the 'data' and 'labels' entries of a CIFAR-10 batch; {fix}.")
    data = batch["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3072 and len(batch["labels"]) == len(data) > 0):
        raise DataError(f"{path} does not hold N x 3072 uint8 images with N labels; {fix}.")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # rows are R, G, B planes


def _cifar_dir(data_dir):
    """data_dir/cifar, or the cifar-10-batches-py folder the tarball makes inside it."""
    inner = Path(data_dir) / "cifar" / CIFAR_FOLDER
    return inner if inner.is_dir() else Path(data_dir) / "cifar"


def has_real_files(data_dir):
    """True if data_dir holds any MNIST file or CIFAR-10 batch."""
    mnist_dir, cifar_dir = Path(data_dir) / "mnist", _cifar_dir(data_dir)
    return bool(any(_find_idx(mnist_dir, f"{stem}-{kind}", idx) for stem in ("train", "t10k")
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
    data_dir, mnist_dir, cifar_dir = Path(data_dir), Path(data_dir) / "mnist", _cifar_dir(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"the data folder {data_dir} does not exist; {GET_DATA}.")
    train, test = ((_find_idx(mnist_dir, f"{stem}-images", "idx3"),
                    _find_idx(mnist_dir, f"{stem}-labels", "idx1")) for stem in ("train", "t10k"))
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
                        f"(.gz or not); {GET_DATA}.")
    missing = [name for name in CIFAR_TRAIN if not (cifar_dir / name).is_file()]
    if missing:
        raise DataError(f"{cifar_dir} lacks {', '.join(missing)}; {GET_DATA}.")

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
def _load_real_once(folder, stamp):
    """load_real, reused while stamp (every file's path, size and time) stays the same."""
    return load_real(folder)


def _stamp(data_dir):
    """(path, size, mtime) of every file under data_dir: it changes whenever the data does."""
    files = sorted(p for p in Path(data_dir).glob("*/**/*") if p.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


# ---------------------------------------------------------------- synthetic source

def _resize_matrix(n_out, n_in):
    """(n_out, n_in) resampling weights: area average when shrinking, linear when enlarging."""
    if n_out <= n_in:
        step, pixel = n_in / n_out, np.arange(n_in)
        left = np.arange(n_out)[:, None] * step  # (n_out, 1) where each output pixel starts
        overlap = np.minimum(left + step, pixel + 1) - np.maximum(left, pixel)
        return (np.clip(overlap, 0, None) / step).astype(np.float32)
    centres = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    return np.clip(1 - np.abs(centres[:, None] - np.arange(n_in)), 0, None).astype(np.float32)


def resize(images, size):
    """(..., h, w) -> (..., size, size) float32 by separable resampling, for a whole batch."""
    rows, cols = _resize_matrix(size, images.shape[-2]), _resize_matrix(size, images.shape[-1])
    return rows @ np.asarray(images, np.float32) @ cols.T


def synthetic_digits(n, rng):
    """n MNIST-like digits (n, 28, 28) uint8 and labels, drawn with matplotlib's fonts."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = [ImageFont.truetype(str(folder / f"{name}.ttf"), 40) for name in FONTS]
    labels = rng.integers(10, size=n).astype(np.uint8)
    digits = np.zeros((n, 28, 28), np.uint8)
    drawn = {}  # (font, digit, stroke width) -> glyph: each is drawn once, then varied
    for i in range(n):  # builds the bank once; sampling never comes here
        key = (rng.integers(len(fonts)), str(labels[i]), int(rng.integers(0, 3)))
        if key not in drawn:
            drawn[key] = Image.new("L", (64, 64))
            ImageDraw.Draw(drawn[key]).text((32, 32), key[1], fill=255, anchor="mm",
                                            font=fonts[key[0]], stroke_width=key[2],
                                            stroke_fill=255)
        turn, shear = np.deg2rad(rng.uniform(-15, 15)), rng.uniform(-0.3, 0.3)
        # PIL maps output pixels to input ones, so it takes the inverse of shear-then-rotate.
        inverse = np.array([[1, -shear], [0, 1]]) @ [[np.cos(turn), np.sin(turn)],
                                                     [-np.sin(turn), np.cos(turn)]]
        shift = 32 - inverse @ [32, 32]  # about the centre
        glyph = drawn[key].transform((64, 64), Image.Transform.AFFINE,
                                     (*inverse[0], shift[0], *inverse[1], shift[1]),
                                     Image.Resampling.BILINEAR)
        glyph = glyph.crop(glyph.getbbox())
        scale = rng.integers(14, 21) / max(glyph.size)  # MNIST fits digits in 20x20; vary below
        w, h = (max(1, round(side * scale)) for side in glyph.size)
        top, left = (28 - h) // 2, (28 - w) // 2
        digits[i, top:top + h, left:left + w] = glyph.resize((w, h), Image.Resampling.LANCZOS)
    return digits, labels


def synthetic_backgrounds(n, rng):
    """n procedural 32x32 RGB backgrounds (uint8): gradients, stripes or smooth noise, in colour."""
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    turn = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    along = np.cos(turn) * xx + np.sin(turn) * yy  # (n, 32, 32) position along a direction
    low, high = along.min((1, 2), keepdims=True), along.max((1, 2), keepdims=True)
    frequency, phase = rng.uniform(6, 30, (n, 1, 1)), rng.uniform(0, 7, (n, 1, 1))
    stripes = 0.5 + 0.5 * np.sin(frequency * along + phase)
    noise = resize(rng.uniform(0, 1, (n, 4, 4)), 32)
    mix = np.choose(rng.integers(3, size=(n, 1, 1)), [(along - low) / (high - low), stripes, noise])
    first, second = rng.uniform(0, 255, (2, n, 1, 1, 3))
    images = first + (second - first) * mix[..., None]  # (n, 32, 32, 3)
    images += np.moveaxis(resize(rng.normal(0, 25, (n, 3, 6, 6)), 32), 1, -1)  # colour blotches
    images += rng.normal(0, 6, images.shape)  # grain, as in photos
    return np.clip(images, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def load_synthetic():
    """{"train": Split, "test": Split} of the fixed synthetic bank, built once per process."""
    data = {}
    for stream, split in enumerate(SPLITS):
        rng = np.random.default_rng([SYNTHETIC_SEED, stream])
        digits, labels = synthetic_digits(SYNTHETIC_DIGITS[split], rng)
        backgrounds = synthetic_backgrounds(SYNTHETIC_BACKGROUNDS[split], rng)
        data[split] = Split(digits, labels, np.arange(len(digits)), backgrounds,
                            np.arange(len(backgrounds)))
    return data


# ---------------------------------------------------------------- generator

def _whole(name, value, low):
    """value as an int of at least low, or DataError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise DataError(f"{name} must be a whole number of at least {low}, not {value!r}.")
    return int(value)


class Datagen:
    """Digits pasted on backgrounds, with their masks: sample() to train, test_set() to score."""

    def __init__(self, data_dir, canvas=32, digit_size=14, digits_per_image=1, num_classes=2,
                 seed=0, source="auto", digit_scale=None):
        self.canvas = _whole("canvas", canvas, 1)
        self.digit_size = _whole("digit_size", digit_size, 1)
        self.digits_per_image = _whole("digits_per_image", digits_per_image, 1)
        self.seed = _whole("seed", seed, 0)
        if self.digit_size > self.canvas:
            raise DataError(f"a {digit_size}-pixel digit does not fit a {canvas}-pixel canvas; "
                            f"choose digit_size <= canvas.")
        if num_classes not in (2, 11):
            raise DataError(f"num_classes must be 2 (background, digit) or 11 (background and "
                            f"the ten digits), not {num_classes!r}.")
        if source not in SOURCES:
            raise DataError(f"source must be one of {', '.join(SOURCES)}, not {source!r}.")
        self.num_classes, self.sizes = num_classes, self._sizes(digit_scale)
        self.data_dir, self._asked = Path(data_dir), source
        self.source = source if source != "auto" else (
            "real" if has_real_files(self.data_dir) else "synthetic")
        self.data = (_load_real_once(self.data_dir.resolve(), _stamp(self.data_dir))
                     if self.source == "real" else load_synthetic())
        if len(self.sizes) == 1:
            # Shrink every digit once, integers first: 2x2 means stay exact, so "> 0.3" has no ties.
            self._ink = {split: resize(data.digits, self.sizes[0]) / np.float32(255)
                         for split, data in self.data.items() if data is not None}
        else:  # one zero-padded resampling matrix per allowed side, applied when sampling
            self._ink = None
            self._rows = np.zeros((len(self.sizes), self.sizes[-1], 28), np.float32)
            for i, side in enumerate(self.sizes):
                self._rows[i, :side] = _resize_matrix(side, 28)
        self._rngs = {split: np.random.default_rng([self.seed, stream])
                      for stream, split in enumerate(SPLITS)}

    def _sizes(self, digit_scale):
        """Every digit side digit_scale allows, checked against the canvas."""
        if digit_scale is None:
            return np.array([self.digit_size])
        try:
            low, high = (float(s) for s in digit_scale)
        except (TypeError, ValueError):
            raise DataError(f"digit_scale must be a pair (low, high) of numbers, "
                            f"not {digit_scale!r}.") from None
        smallest = max(1, round(low * self.digit_size))
        largest = max(smallest, round(high * self.digit_size))
        if not 0 < low <= high or largest > self.canvas:
            raise DataError(f"digit_scale {digit_scale!r} must satisfy 0 < low <= high and "
                            f"high * digit_size <= canvas ({self.canvas}).")
        return np.arange(smallest, largest + 1)

    def describe(self):
        """One line naming the data behind the images."""
        train, test = self.data["train"], self.data["test"]
        if train is None:
            return (f"real MNIST t10k ({len(test.digits):,} digits) on CIFAR-10 test_batch "
                    f"({len(test.backgrounds):,} backgrounds) from {self.data_dir}, which only "
                    f"holds the test files: enough to evaluate a model, not to train one")
        if self.source == "real":
            return (f"real MNIST ({len(train.digits):,} train / {len(test.digits):,} test "
                    f"digits) on CIFAR-10 ({len(train.backgrounds):,} / "
                    f"{len(test.backgrounds):,} backgrounds) from {self.data_dir}")
        why = "as asked" if self._asked == "synthetic" else (
            f"no MNIST/CIFAR-10 files in {self.data_dir}; "
            f"`python load_data.py --download` gets them")
        return f"synthetic font digits on procedural backgrounds ({why})"

    def draw(self, batch_size, split="train", step=None):
        """The random layout of batch number step, or (step None) of the next batch."""
        if split not in SPLITS:
            raise DataError(f"split must be 'train' or 'test', not {split!r}.")
        if self.data[split] is None:
            raise DataError(f"{self.data_dir} holds only the test files, and training also "
                            f"needs train-images-idx3-ubyte, train-labels-idx1-ubyte and "
                            f"data_batch_1..5; {GET_DATA}.")
        n = _whole("batch_size", batch_size, 1)
        if step is None:  # advances the split's own generator
            return self._layout(self._rngs[split], n, split)
        # Its own stream: batch k is the same whatever ran before (a resumed run, a new iterator).
        step = _whole("step", step, 0)
        return self._layout(np.random.default_rng([self.seed, SPLITS.index(split), step]), n, split)

    def _layout(self, rng, n, split):
        """n random layouts: a background, digits, their sizes and offsets where they fit."""
        shape = (n, self.digits_per_image)
        size = (self.sizes[rng.integers(len(self.sizes), size=shape)] if len(self.sizes) > 1
                else np.full(shape, self.sizes[0]))
        room = self.canvas - size + 1  # (B, K) offsets where each digit fits
        return Layout(split, rng.integers(len(self.data[split].backgrounds), size=n),
                      rng.integers(len(self.data[split].digits), size=shape), size,
                      rng.integers(0, room), rng.integers(0, room))

    def _patches(self, layout):
        """(B, K, S, S) digit intensities in [0, 1], each zero-padded to the largest side S."""
        if self._ink is not None:
            return self._ink[layout.split][layout.digit]
        rows = self._rows[layout.size - self.sizes[0]]  # (B, K, S, 28)
        digits = self.data[layout.split].digits[layout.digit].astype(np.float32)  # (B, K, 28, 28)
        return rows @ digits @ np.swapaxes(rows, -1, -2) / np.float32(255)

    def render(self, layout):
        """(images (B, C, C, 3) float32 in [-1, 1], masks (B, C, C) int32) for a layout."""
        data, size = self.data[layout.split], self.canvas
        patches = self._patches(layout)  # (B, K, S, S)
        n, per_image, side = patches.shape[:3]
        # One flat canvas index per patch pixel, so each digit slot is pasted for the whole batch
        # at once; only inked pixels are written, and those always lie inside the canvas.
        corner = (np.arange(n)[:, None] * size + layout.y) * size + layout.x  # (B, K)
        where = corner[..., None, None] + np.arange(side)[:, None] * size + np.arange(side)
        ink = np.zeros(n * size * size, np.float32)  # (B*C*C,) intensity of the top digit
        several = per_image > 1 and self.num_classes == 11  # then masks need each pixel's digit
        owner = np.zeros(n * size * size, np.int32) if several else None  # its class
        classes = data.labels[layout.digit].astype(np.int32) + 1  # (B, K)
        for k in range(per_image):  # later digits on top: they replace wherever they have ink
            on = patches[:, k] > 0  # (B, S, S)
            spot = where[:, k][on]
            ink[spot] = patches[:, k][on]
            if owner is not None:
                owner[spot] = np.broadcast_to(classes[:, k, None, None], on.shape)[on]
        digit = (ink > THRESHOLD).reshape(n, size, size)
        if self.num_classes == 2:
            masks = digit.astype(np.int32)
        else:
            masks = digit * classes[:, :1, None] if owner is None else np.where(
                digit, owner.reshape(n, size, size), 0)
        backgrounds = data.backgrounds[layout.background]  # (B, 32, 32, 3) uint8
        if size != backgrounds.shape[1]:
            backgrounds = np.moveaxis(resize(np.moveaxis(backgrounds, -1, 1), size), 1, -1)
        images = normalize(backgrounds)  # (B, C, C, 3)
        # Only mask pixels get the add-and-clip: far less work than doing every pixel.
        hit = np.flatnonzero(digit)  # (H,) flat canvas indices
        channels = (3 * hit[:, None] + np.arange(3)).ravel()  # (H*3,) flat image indices
        lit = backgrounds.reshape(-1)[channels] + INK
        images.reshape(-1)[channels] = normalize(np.minimum(lit, 255))
        return images, masks

    def sample(self, batch_size, split="train", step=None, rows=None):
        """(images (B, C, C, 3) float32 in [-1, 1], masks (B, C, C) int32): batch step, or next.

        rows (a slice) renders only those images of the batch: one replica's share.
        """
        layout = self.draw(batch_size, split, step)
        if rows is not None:
            layout = layout._replace(**{name: value[rows] for name, value
                                        in layout._asdict().items() if name != "split"})
        return self.render(layout)

    def test_set(self, n):
        """The fixed test set of n images: same data and seed, same images, whatever ran before."""
        rng = np.random.default_rng([self.seed, len(SPLITS)])  # a stream no split uses
        return self.render(self._layout(rng, _whole("n", n, 1), "test"))


# ---------------------------------------------------------------- picture and benchmark

def _check_out(path):
    """path as a PNG destination whose folder exists, or DataError."""
    if path.suffix.lower() != ".png" or path.is_dir():
        raise DataError(f"--out {path} must name a .png file, not a folder or another format.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot make the folder for --out {path} ({e.strerror}); "
                        f"choose another path.") from None
    return path


def save_grid(gen, path, rows=4, cols=4):
    """A rows x cols grid of (input, mask) pairs; path is replaced only by a complete PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    images, masks = gen.sample(rows * cols)
    colours = matplotlib.colors.ListedColormap(  # background black; digit white or by class
        ["black", *(plt.cm.tab10.colors if gen.num_classes == 11 else ["white"] * 10)])
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2.2 * cols, 1.2 * rows + 0.4))
    for ax, image, mask in zip(axes.reshape(-1, 2), images, masks):
        ax[0].imshow(denormalize(image), interpolation="nearest")
        ax[1].imshow(mask, cmap=colours, vmin=0, vmax=10, interpolation="nearest")
    for ax, title in zip(axes[0], ["input", "mask"] * cols):
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(gen.describe(), fontsize=7, wrap=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def benchmark(gen, batch_size=64, batches=500, repeats=7):
    """Images per second of gen.sample(batch_size) per timed repeat: (wall clock, CPU time)."""
    gen.sample(batch_size)  # warm-up: first-call allocations are not the steady state
    wall, cpu = [], []
    for _ in range(repeats):  # CPU time too: on a shared machine the wall clock counts others
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            gen.sample(batch_size)
        wall.append(batches * batch_size / (time.perf_counter() - start))
        cpu.append(batches * batch_size / (time.process_time() - start_cpu))
    return wall, cpu


# ---------------------------------------------------------------- download

def _md5(path):
    """Hex md5 of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _stream(url, out, name, progress, timeout=30):
    """Copy url into the open file out; returns (md5, bytes), or DataError on any failure."""
    digest, got = hashlib.md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
                if progress:  # drawn by hand: keras.utils.Progbar would pull in TensorFlow
                    bar = "#" * int(30 * got / total) if total else ""
                    sys.stderr.write(f"\r{name} [{bar:<30}] {got / 1e6:7.1f} / "
                                     f"{total / 1e6:.1f} MB")
    except urllib.error.HTTPError as e:
        raise DataError(f"{url} answered {e.code} {e.reason}; check the address or pass another "
                        f"--mirror.") from None
    except urllib.error.URLError as e:
        raise DataError(f"could not reach {url} ({e.reason}); check the connection or pass "
                        f"--mirror.") from None
    except Exception as e:  # resets, timeouts and broken chunked transfers
        raise DataError(f"the transfer from {url} broke off ({e}); "
                        f"run the command again.") from None
    finally:
        if progress:
            sys.stderr.write("\n")
    if total and got != total:
        raise DataError(f"the transfer from {url} stopped after {got:,} of {total:,} bytes; "
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
    except (tarfile.TarError, OSError, EOFError) as e:
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
        os.replace(staging / CIFAR_FOLDER, folder / CIFAR_FOLDER)
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"extracting {path} failed ({e}); free some disk space and "
                        f"run again.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(data_dir, remote, mirror=None, progress=False):
    """Download one file into data_dir, verified; returns what happened, or DataError."""
    folder, archive = Path(data_dir) / remote.folder, remote.name.endswith(".tar.gz")
    target = folder / remote.name
    batches = [_cifar_dir(data_dir) / name for name in CIFAR_TRAIN]
    if archive and not target.exists() and all(path.is_file() for path in batches):
        return "CIFAR-10 batches already present, not fetched"
    if target.is_file() and _md5(target) == remote.md5:
        status = "already present, checksum ok"
    else:
        url = (mirror.rstrip("/") + "/" if mirror else remote.base_url) + remote.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot make {folder} ({e.strerror}); "
                            f"choose another --data_dir.") from None
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{remote.name}.", suffix=".part")
        try:  # the final name appears only once the checksum (and the archive check) pass
            with os.fdopen(fd, "wb") as out:
                md5, size = _stream(url, out, remote.name, progress)
            if md5 != remote.md5:
                raise DataError(f"the file from {url} has md5 {md5}, not the published "
                                f"{remote.md5}, so it was discarded; run again or use "
                                f"another --mirror.")
            if archive:
                _check_archive(tmp, folder)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        status = f"downloaded {size / 1e6:.1f} MB, checksum ok"
    if archive and not all((folder / CIFAR_FOLDER / name).is_file() for name in CIFAR_TRAIN):
        _extract(target, folder)
        status += f", extracted to {folder / CIFAR_FOLDER}"
    return status


def download(data_dir, mirror=None, remotes=REMOTES, progress=False):
    """Fetch every remote; returns [(file, DataError or None, message)], one entry per file."""
    if mirror and not mirror.startswith(("http://", "https://", "file://")):
        raise DataError(f"--mirror {mirror} must be an http://, https:// or file:// URL.")
    report = []
    for remote in remotes:
        try:
            outcome = None, fetch(data_dir, remote, mirror, progress)
        except DataError as e:
            outcome = e, str(e)
        report.append((f"{remote.folder}/{remote.name}", *outcome))
    return report


# ---------------------------------------------------------------- command line

def main(argv=None):
    """Sample grid, benchmark or download; a user error ends as one line on stderr and exit 1."""
    parser = argparse.ArgumentParser(description="MNIST-on-CIFAR images and masks.")
    parser.add_argument("--data_dir", type=Path,
                        help="holds mnist/ and cifar/ (default: data/ beside this script)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG for the sample grid")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="auto: the real files if present, else synthetic")
    parser.add_argument("--canvas", type=int, default=32)
    parser.add_argument("--digits_per_image", type=int, default=1)
    parser.add_argument("--num_classes", type=int, choices=(2, 11), default=2,
                        help="2: background/digit; 11: also which digit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench", action="store_true", help="time sample(64) instead")
    parser.add_argument("--download", action="store_true", help="fetch MNIST and CIFAR-10")
    parser.add_argument("--mirror", help="with --download: fetch from URL/<file name>")
    args = parser.parse_args(argv)
    if args.mirror and not args.download:
        parser.error("--mirror only applies with --download")
    data_dir = args.data_dir or DEFAULT_DATA_DIR
    try:
        if args.download:
            report = download(data_dir, args.mirror, progress=sys.stderr.isatty())
            for name, error, message in report:
                print(f"{'error: ' if error else ''}{name}: {message}",
                      file=sys.stderr if error else sys.stdout)
            if any(error for _, error, _ in report):
                return 1
            print(f"data ready in {data_dir}; `python load_data.py` now uses it")
            return 0
        if args.data_dir is not None and not args.data_dir.is_dir():
            raise DataError(f"--data_dir {args.data_dir} is not a folder; {GET_DATA}.")
        out = None if args.bench else _check_out(args.out)
        gen = Datagen(data_dir, canvas=args.canvas, digits_per_image=args.digits_per_image,
                      num_classes=args.num_classes, seed=args.seed, source=args.source)
        print(f"data: {gen.describe()}")
        if args.bench:
            wall, cpu = benchmark(gen)
            print(f"sample(64): median {np.median(wall):,.0f} images/s over {len(wall)} repeats "
                  f"of 500 batches (min {min(wall):,.0f}, max {max(wall):,.0f}); "
                  f"{np.median(cpu):,.0f} per CPU-second")
        else:
            save_grid(gen, out)
            print(f"wrote {out}")
        return 0
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
