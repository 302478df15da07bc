"""MNIST digits pasted on CIFAR-10 photos: images and their segmentation masks.

The real files come from `python download.py`. While the default folder (data/
beside this script) holds none, the generator uses a built-in synthetic source
(font digits on procedural backgrounds), so everything runs on a fresh clone; a
folder named explicitly must hold the real files.
"""
import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segm import folders, plots
from segm.errors import DataError
from segm.readers import (DEFAULT_DATA_DIR, Split, denormalize, get_data_hint, has_real_files,
                          load_real_cached, normalize, stamp)

# data
SOURCES = ("auto", "real", "synthetic")
SPLITS = ("train", "test")
# Randomness, in one place. A Datagen's seed s draws training batch k from the stream
# (s, 0, k), so batch k is the same however a run was interrupted or split across devices;
# the fixed test set from (s, TEST_STREAM) and the VALID_IMAGES held-out images watched
# during training from (s, VALID_STREAM), both in the test split; pictures' next batch
# from (s, split).
# main.py gives SEED to training (and to the weights), TEST_SEED to both test streams.
# The synthetic bank is fixed by SYNTHETIC_SEED, like a data set.
TEST_STREAM, VALID_STREAM, VALID_IMAGES = 2, 3, 512
CLASS_COUNTS = (2, 11)  # background/digit, or background and each of the ten digits
THRESHOLD = 0.3  # seed protocol: a pixel is digit where the digit's intensity (0..1) exceeds this
INK = 200.0  # seed protocol: mask pixels get a flat +200 (clipped to 255); the rest stay as is

# synthetic source: a fixed bank, like a data set; the Datagen seed only drives sampling
SYNTHETIC_SEED = 20240611
SYNTHETIC_DIGITS = {"train": 3000, "test": 750}
SYNTHETIC_BACKGROUNDS = {"train": 2000, "test": 500}
FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSansMono", "DejaVuSerif",
         "DejaVuSerif-Italic", "STIXGeneral", "STIXGeneralItalic", "STIXGeneralBol", "cmr10",
         "cmss10", "cmtt10", "cmb10", "cmti10")  # the matplotlib fonts that draw all ten digits


class Layout(NamedTuple):
    split: str
    background: np.ndarray  # (B,) index into the split's backgrounds
    digit: np.ndarray  # (B, K) index into the split's digits; later ones lie on top
    size: np.ndarray  # (B, K) side of each pasted digit in pixels
    y: np.ndarray  # (B, K) top-left corner
    x: np.ndarray  # (B, K)
    angle: np.ndarray = None  # (B, K) degrees each digit is turned, counterclockwise; or None


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


def turn(patches, sizes, degrees):
    """Each (S, S) patch turned counterclockwise by its angle about the centre of its digit.

    patches (B, K, S, S) hold digits of side sizes (B, K) in their top-left corner; bilinear,
    and what turns out of a digit's own square is lost (MNIST leaves a margin round each
    digit), so a turned digit still fits where its size was placed.
    """
    from scipy.ndimage import map_coordinates
    n, side = patches.shape[0] * patches.shape[1], patches.shape[-1]
    cos, sin = (f(np.deg2rad(degrees)).reshape(n, 1, 1) for f in (np.cos, np.sin))
    centre = (sizes.reshape(n, 1, 1) - 1) / 2
    grid_y, grid_x = np.mgrid[0:side, 0:side].astype(np.float64)    # (S, S)
    y, x = grid_y - centre, grid_x - centre                         # (n, S, S), rows point down
    # The source of each output pixel: its position turned back by the angle.
    source_y = centre + cos * y + sin * x
    source_x = centre + cos * x - sin * y
    index = np.broadcast_to(np.arange(n).reshape(n, 1, 1), source_y.shape)
    flat = patches.reshape(n, side, side)
    # Rounded: cos(180 deg) is -1 + 1e-16, which would put an edge pixel's source outside.
    source_y, source_x = np.round(source_y, 6), np.round(source_x, 6)
    turned = map_coordinates(flat, [index, source_y, source_x], order=1, cval=0.0)
    inside = np.maximum(grid_y, grid_x) < sizes.reshape(n, 1, 1)   # (n, S, S)
    return (turned * inside).reshape(patches.shape).astype(np.float32)


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
    """Digits pasted on backgrounds, with their masks: sample() to train, test_set() to score.

    data_dir None means DEFAULT_DATA_DIR, or the synthetic stand-in (source "auto") while it
    holds no real files; a folder named explicitly must hold them, unless source is "synthetic".
    """

    def __init__(self, data_dir=None, canvas=32, digit_size=14, digits_per_image=1, num_classes=2,
                 seed=0, source="auto", digit_scale=None, digit_angle=None):
        self.canvas = _whole("canvas", canvas, 1)
        self.digit_size = _whole("digit_size", digit_size, 1)
        self.digits_per_image = _whole("digits_per_image", digits_per_image, 1)
        self.seed = _whole("seed", seed, 0)
        if self.digit_size > self.canvas:
            raise DataError(f"a {digit_size}-pixel digit does not fit a {canvas}-pixel canvas; "
                            f"choose digit_size <= canvas.")
        if num_classes not in CLASS_COUNTS:
            raise DataError(f"num_classes must be 2 (background, digit) or 11 (background and "
                            f"the ten digits), not {num_classes!r}.")
        if source not in SOURCES:
            raise DataError(f"source must be one of {', '.join(SOURCES)}, not {source!r}.")
        self.num_classes, self.sizes = num_classes, self._sizes(digit_scale)
        self.class_names = plots.class_names(num_classes)
        self.angles = self._angles(digit_angle)
        self.data_dir = DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)
        self.source, self._asked = self._pick(source, data_dir is not None), source
        self.data = (load_real_cached(self.data_dir.resolve(), stamp(self.data_dir))
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

    def _pick(self, source, explicit):
        """"real" or "synthetic"; DataError if the real files are wanted and data_dir has none."""
        if source == "synthetic":
            return source
        if source == "auto" and not explicit and not has_real_files(self.data_dir):
            return "synthetic"  # the stand-in on a fresh clone; describe() says so
        if not has_real_files(self.data_dir):
            state = ("holds no MNIST or CIFAR-10 files" if self.data_dir.is_dir()
                     else "does not exist")
            own = self.data_dir / "images", self.data_dir / "masks"
            raise DataError(f"the data folder {self.data_dir} {state}; "
                            f"{get_data_hint(self.data_dir)}; or, to train on your own "
                            f"pictures, put them in {own[0]} and their masks in {own[1]}.")
        return "real"

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
        """One line naming the data behind the images (its folder as seen from here)."""
        train, test = self.data["train"], self.data["test"]
        folder = self.data_dir
        if Path(folder).resolve().is_relative_to(Path.cwd()):
            folder = Path(folder).resolve().relative_to(Path.cwd())
        if train is None:
            return (f"real MNIST t10k ({len(test.digits):,} digits) on CIFAR-10 test_batch "
                    f"({len(test.backgrounds):,} backgrounds) from {folder}, which only "
                    f"holds the test files: enough to evaluate a model, not to train one")
        if self.source == "real":
            return (f"real MNIST ({len(train.digits):,} train / {len(test.digits):,} test "
                    f"digits) on CIFAR-10 ({len(train.backgrounds):,} / "
                    f"{len(test.backgrounds):,} backgrounds) from {folder}")
        why = "as asked" if self._asked == "synthetic" else (
            f"no MNIST/CIFAR-10 files in the default folder {folder}; "
            f"`python download.py` gets them")
        return f"synthetic font digits on procedural backgrounds ({why})"

    def draw(self, batch_size, split="train", step=None):
        """The random layout of batch number step, or (step None) of the next batch."""
        if split not in SPLITS:
            raise DataError(f"split must be 'train' or 'test', not {split!r}.")
        if self.data[split] is None:
            raise DataError(f"{self.data_dir} holds only the test files, and training also "
                            f"needs train-images-idx3-ubyte, train-labels-idx1-ubyte and "
                            f"data_batch_1..5; {get_data_hint(self.data_dir)}.")
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
        layout = Layout(split, rng.integers(len(self.data[split].backgrounds), size=n),
                        rng.integers(len(self.data[split].digits), size=shape), size,
                        rng.integers(0, room), rng.integers(0, room))
        # Drawn last and only when asked for: unrotated layouts stay what they always were.
        return layout._replace(angle=rng.uniform(*self.angles, shape)) if self.angles else layout

    def _angles(self, digit_angle):
        """(low, high) degrees, or None for upright digits."""
        if digit_angle is None:
            return None
        try:
            low, high = (float(a) for a in digit_angle)
        except (TypeError, ValueError):
            raise DataError(f"digit_angle must be a pair (low, high) of degrees, "
                            f"not {digit_angle!r}.") from None
        if not (np.isfinite([low, high]).all() and low <= high):
            raise DataError(f"digit_angle {digit_angle!r} must be finite with low <= high.")
        return low, high

    def _patches(self, layout):
        """(B, K, S, S) digit intensities in [0, 1], each zero-padded to the largest side S."""
        if self._ink is not None:
            patches = self._ink[layout.split][layout.digit]
        else:
            rows = self._rows[layout.size - self.sizes[0]]  # (B, K, S, 28)
            digits = self.data[layout.split].digits[layout.digit].astype(np.float32)
            patches = rows @ digits @ np.swapaxes(rows, -1, -2) / np.float32(255)
        return patches if layout.angle is None else turn(patches, layout.size, layout.angle)

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
                                        in layout._asdict().items()
                                        if name != "split" and value is not None})
        return self.render(layout)

    def class_pixels(self, n=512):
        """(K,) pixels of each class in training batch 0's n scenes: the classes' shares."""
        return np.bincount(self.sample(n, step=0)[1].ravel(), minlength=self.num_classes)

    def test_set(self, n, stream=TEST_STREAM):
        """The fixed test set of n images: same data and seed, same images, whatever ran before.

        stream=VALID_STREAM draws other layouts from the same test split: the held-out
        images that training is watched on, never the ones it is scored on.
        """
        rng = np.random.default_rng([self.seed, stream])
        return self.render(self._layout(rng, _whole("n", n, 1), "test"))


# ---------------------------------------------------------------- from main.py's config

def make_datagen(cfg, seed=None, saved_split=None):
    """The image/mask generator main.py's config describes; seed defaults to its SEED.

    A --data_dir holding images/ and masks/ gives a folders.FolderData: your own pictures,
    split by TEST_SEED (or saved_split, the run's own) and read batch by batch.
    """
    if cfg.data_dir and folders.is_folder(cfg.data_dir):
        known = "num_classes" in cfg.given or cfg.resume or cfg.evaluate  # else: the masks say
        return folders.FolderData(cfg.data_dir, cfg.canvas, cfg.num_classes if known else None,
                                  cfg.seed if seed is None else seed, cfg.test_seed,
                                  cfg.augment, saved_split, mask_map=cfg.mask_map)
    scale, angle = (cfg.digit_scale_min, cfg.digit_scale_max), (cfg.digit_angle_min,
                                                                 cfg.digit_angle_max)
    return Datagen(cfg.data_dir or None, canvas=cfg.canvas, digit_size=cfg.digit_size,
                   digits_per_image=cfg.digits_per_image, num_classes=cfg.num_classes,
                   seed=cfg.seed if seed is None else seed, source=cfg.source,
                   digit_scale=None if scale == (1.0, 1.0) else scale,
                   digit_angle=None if angle == (0.0, 0.0) else angle)



def held_out_sets(cfg):
    """(the fixed test set, the validation images): both drawn by TEST_SEED from the test
    split, in their own streams, so training is watched on other scenes than it is scored on."""
    tests = make_datagen(cfg, seed=cfg.test_seed)
    return (tests.test_set(cfg.eval_images),
            tests.test_set(min(VALID_IMAGES, cfg.eval_images), VALID_STREAM))


# ---------------------------------------------------------------- picture

def save_grid(gen, path, rows=4, cols=4):
    """A rows x cols grid of (input, mask) pairs from gen; an unwritable path raises FileError."""
    images, masks = gen.sample(rows * cols)
    plots.input_grid(denormalize(images), masks, gen.num_classes, gen.describe(), path, cols)
