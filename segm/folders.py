"""Your own pictures: a folder of images and masks, checked, split, streamed and augmented.

    PATH/images/cell01.jpg   PATH/masks/cell01.png    a seeded share is held out for testing
    PATH/train/images/...    PATH/train/masks/...     or your own split, with PATH/test/...

A mask is a PNG of class numbers (mode L or P): 0 background, 1..K-1 the classes,
255 "not labelled", which no loss or metric counts (readers.IGNORE). FolderData has
the face of load_data.Datagen: sample() draws training batch k from the files,
reading only that batch's pictures, so a folder larger than memory trains as well.
"""
import math
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segm.errors import DataError
from segm.readers import IGNORE, normalize, picture_size, read_image, read_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_SHARE, VALID_SHARE = 0.2, 0.1  # of the pairs, when the folder has no train/ and test/
MAX_PIXELS = 100_000_000  # a picture's header claiming more is refused before decoding
# Augmentation, on by default (AUGMENT in main.py): a random crop after a random scale and
# a left-right flip move image and mask together; colour changes touch the image only.
SCALE = (0.75, 1.33)       # zoom factor, drawn evenly on a log scale
BRIGHTNESS = 25.0          # +- this much on the 0..255 scale
CONTRAST = (0.8, 1.25)     # around the image's mean
SATURATION = (0.8, 1.25)   # away from its grey
# Which random numbers: training batch k's files come from epoch k * B // n's shuffle,
# drawn from (seed, ORDER_STREAM, epoch); its crops and colours from (seed, AUGMENT_STREAM, k).
# The split comes from the test seed, so every model and seed is scored on the same files.
ORDER_STREAM, AUGMENT_STREAM, SPLIT_STREAM = 4, 5, 6


class Pair(NamedTuple):
    name: str        # the file stem, shared by image and mask
    image: Path
    mask: Path
    size: tuple      # (height, width) as the eye sees it


def is_folder(path):
    """True if path holds images/ and masks/, or train/ and test/ with those inside."""
    path = Path(path)
    return (path / "images").is_dir() or (path / "train" / "images").is_dir()


def _by_stem(folder, suffixes, what):
    """{stem: path} of the files in folder whose suffix is allowed; one sentence if not."""
    if not folder.is_dir():
        raise DataError(f"{folder} is missing; a folder of your own holds images/ and masks/ "
                        f"with one mask for each image, by name")
    found = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in suffixes:
            raise DataError(f"{path} is not a {' or '.join(s[1:].upper() for s in suffixes)} "
                            f"file; {what} must be, so move it out of {folder}")
        if path.stem in found:
            raise DataError(f"{found[path.stem]} and {path.name} share a name; keep one "
                            f"{what[:-1]} per name")
        found[path.stem] = path
    return found


def pair_up(root):
    """[Pair] of root's images/ and masks/, matched by name, each pair's sizes checked."""
    images = _by_stem(root / "images", IMAGE_SUFFIXES, "images")
    masks = _by_stem(root / "masks", (".png",), "masks")
    for have, lack, kind in ((images, masks, "mask"), (masks, images, "image")):
        extra = sorted(set(have) - set(lack))
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise DataError(f"{have[extra[0]]} has no {kind} of the same name in "
                            f"{root / (kind + 's')}{more}; every image needs its mask")
    if not images:
        raise DataError(f"{root / 'images'} holds no pictures; put PNG or JPEG images there "
                        f"and their masks in {root / 'masks'}")
    pairs = []
    for name in sorted(images):
        size = picture_size(images[name], MAX_PIXELS)
        mask_size = picture_size(masks[name], MAX_PIXELS)
        if size != mask_size:
            raise DataError(f"{images[name]} is {size[1]}x{size[0]} pixels but its mask "
                            f"{masks[name].name} is {mask_size[1]}x{mask_size[0]}; a mask "
                            f"must cover its image pixel for pixel")
        pairs.append(Pair(name, images[name], masks[name], size))
    return pairs


def class_count(pairs, num_classes=None):
    """The number of classes: the largest mask value (255 aside) + 1, or num_classes after
    checking every mask against it. Reads every mask once, with a progress bar."""
    bar = _progress(len(pairs), "checking masks")
    largest = 0
    for i, pair in enumerate(pairs):
        values = np.unique(read_mask(pair.mask, MAX_PIXELS))
        values = values[values != IGNORE]
        top = int(values.max()) if len(values) else 0
        if num_classes and top >= num_classes:
            raise DataError(f"{pair.mask} holds class {top}, but there are {num_classes} "
                            f"classes (0..{num_classes - 1}, and {IGNORE} for unlabelled "
                            f"pixels); fix the mask or pass --num_classes {top + 1}")
        largest = max(largest, top)
        bar(i + 1)
    if not num_classes and largest == 0:
        raise DataError(f"every mask in {pairs[0].mask.parent} is background (0) only; label "
                        f"the pixels of each class 1, 2, ... (255 leaves a pixel unlabelled)")
    return num_classes or largest + 1


def _progress(total, what):
    """A callable(done) drawing a Keras progress bar on a terminal for long work, else nothing."""
    if total < 200 or not sys.stdout.isatty():
        return lambda done: None
    from segm.tf_quiet import keras
    print(what)
    return keras.utils.Progbar(total).update


def split(pairs, seed, test_share=TEST_SHARE, valid_share=VALID_SHARE):
    """{"train", "valid", "test"}: [Pair], a fixed share of each held out, drawn by seed."""
    n_test = max(1, round(len(pairs) * test_share)) if test_share else 0
    n_valid = max(1, round(len(pairs) * valid_share))
    if len(pairs) < n_test + n_valid + 1:
        raise DataError(f"{pairs[0].image.parent} holds {len(pairs)} pair(s), too few to hold "
                        f"some out for validation and testing; add pictures")
    order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(len(pairs))
    chosen = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid],
              "train": order[n_test + n_valid:]}
    return {part: [pairs[i] for i in sorted(rows)] for part, rows in chosen.items()}


class FolderData:
    """Image/mask pairs from a folder of your own: sample() to train, score with test pairs.

    The same methods as load_data.Datagen (canvas, num_classes, describe, sample), so
    main.py trains on either the same way.
    """

    source = "folder"

    def __init__(self, data_dir, canvas=32, num_classes=None, seed=0, test_seed=2024,
                 augment=True, saved_split=None, score_all=False):
        self.data_dir, self.canvas, self.seed = Path(data_dir), canvas, seed
        self.augment, self.test_seed = augment, test_seed
        self.explicit = score_all
        if score_all:  # a folder to score a model on, not to train: every pair is a test
            own = (self.data_dir / "train" / "images").is_dir()
            every = (pair_up(self.data_dir / "train") + pair_up(self.data_dir / "test") if own
                     else pair_up(self.data_dir))
            parts = {"train": [], "valid": [], "test": every}
        elif (self.data_dir / "train" / "images").is_dir():  # the user's own split
            train, test = pair_up(self.data_dir / "train"), pair_up(self.data_dir / "test")
            self.explicit = True
            parts = {**split(train, test_seed, test_share=0), "test": test}
        else:
            self.explicit = False
            parts = split(pair_up(self.data_dir), test_seed)
        if saved_split:  # the run's own split, as config.json recorded it
            parts = self._adopt(parts, saved_split)
        self.parts = parts
        self.given_classes = num_classes
        self.num_classes = class_count([p for part in parts.values() for p in part], num_classes)
        self._count = 0

    def _adopt(self, parts, saved):
        every = {p.name: p for part in parts.values() for p in part}
        try:
            return {part: [every[name] for name in saved[part]] for part in parts}
        except KeyError as e:
            raise DataError(f"{e.args[0]!r} of the run's split is no longer in {self.data_dir}; "
                            f"put it back, or train a new run on the folder as it is") from None

    def split_names(self):
        """{"train", "valid", "test"}: the file names of each part, for config.json."""
        return {part: [p.name for p in pairs] for part, pairs in self.parts.items()}

    def describe(self):
        """One line naming the data behind the images."""
        n = {part: len(pairs) for part, pairs in self.parts.items()}
        how = ("all of them scored" if not n["train"] else
               "train/ and test/ as given, validation drawn from train/" if self.explicit else
               f"held out by test seed {self.test_seed}")
        classes = "as given" if self.given_classes else "from the masks"
        return (f"your own images and masks from {self.data_dir}: {n['train']} train / "
                f"{n['valid']} validation / {n['test']} test pairs ({how}), "
                f"{self.num_classes} classes ({classes})")

    # ---- training batches

    def sample(self, batch_size, split="train", step=None, rows=None):
        """(images (B, C, C, 3) float32 in [-1, 1], masks (B, C, C) int32) of training batch
        step (or the next): B pairs read from disk, cropped to the canvas and augmented.

        rows (a slice) makes only those images of the batch: one replica's share.
        """
        if step is None:
            step, self._count = self._count, self._count + 1
        pairs = self.parts[split]
        n, first = len(pairs), step * batch_size
        # Epochs of a seeded shuffle: every pair once per epoch, batch k the same on --resume.
        picks = []
        for epoch in range(first // n, (first + batch_size - 1) // n + 1):
            order = np.random.default_rng([self.seed, ORDER_STREAM, epoch]).permutation(n)
            lo, hi = max(first - epoch * n, 0), min(first + batch_size - epoch * n, n)
            picks.extend(order[lo:hi])
        rng = np.random.default_rng([self.seed, AUGMENT_STREAM, step])
        views = [self._view(rng, pairs[i].size) for i in picks]  # drawn for the whole batch
        chosen = range(batch_size)[rows] if rows is not None else range(batch_size)
        images = np.empty((len(chosen), self.canvas, self.canvas, 3), np.float32)
        masks = np.empty((len(chosen), self.canvas, self.canvas), np.int32)
        for row, b in enumerate(chosen):
            pair = pairs[picks[b]]
            images[row], masks[row] = crop(read_image(pair.image, MAX_PIXELS),
                                           read_mask(pair.mask, MAX_PIXELS), self.canvas,
                                           *views[b])
        return images, masks

    def _view(self, rng, size):
        """(top, left, scale, flip, colour) of one training crop of a picture of size."""
        scale = math.exp(rng.uniform(*np.log(SCALE))) if self.augment else 1.0
        side = self.canvas / scale  # the crop's side in the picture's own pixels
        top, left = (rng.uniform(min(0, extent - side), max(0, extent - side)) for extent in size)
        if not self.augment:  # whole pixels: the crop is the picture's own pixels
            top, left = math.floor(top), math.floor(left)
        flip = self.augment and rng.random() < 0.5
        colour = ((rng.uniform(-BRIGHTNESS, BRIGHTNESS), rng.uniform(*CONTRAST),
                   rng.uniform(*SATURATION)) if self.augment else None)
        return top, left, scale, flip, colour

    # ---- held-out data

    def valid_set(self, most):
        """(images, masks) of canvas-sized tiles covering the validation pictures, at most
        `most` of them: what training is watched on, and what picks best.keras."""
        images, masks = [], []
        for pair in self.parts["valid"]:
            picture, mask = read_image(pair.image, MAX_PIXELS), read_mask(pair.mask, MAX_PIXELS)
            for top in range(0, pair.size[0], self.canvas):
                for left in range(0, pair.size[1], self.canvas):
                    image, labels = crop(picture, mask, self.canvas, top, left)
                    images.append(image)
                    masks.append(labels)
                    if len(images) == most:
                        return np.stack(images), np.stack(masks)
        return np.stack(images), np.stack(masks)

    def pictures(self, part="test"):
        """(image (H, W, 3) uint8, mask (H, W) uint8) of each pair of a part, read one by one."""
        for pair in self.parts[part]:
            yield read_image(pair.image, MAX_PIXELS), read_mask(pair.mask, MAX_PIXELS)


def crop(picture, mask, canvas, top, left, scale=1.0, flip=False, colour=None):
    """The canvas x canvas view of a picture (H, W, 3) uint8 and its mask (H, W) with its
    corner at (top, left), zoomed by scale, flipped left-right if asked, colours changed by
    colour = (brightness, contrast, saturation) or None: (image float32 in [-1, 1], mask int32).

    Image and mask are sampled at the same points, bilinearly for the image and at the
    nearest pixel for the mask; points off the picture are black, their mask IGNORE.
    With scale 1 and whole-pixel corners the view is the picture's own pixels.
    """
    height, width = mask.shape
    grid = (np.arange(canvas) + 0.5) / scale - 0.5  # pixel centres, from the crop's corner
    ys, xs = top + grid, left + (grid[::-1] if flip else grid)
    rows, cols = np.floor(ys + 0.5).astype(int), np.floor(xs + 0.5).astype(int)
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    labels = mask[np.clip(rows, 0, height - 1)][:, np.clip(cols, 0, width - 1)].astype(np.int32)
    labels[~inside] = IGNORE
    if scale == 1 and top == int(top) and left == int(left):  # the picture's own pixels
        image = picture[np.clip(rows, 0, height - 1)][:, np.clip(cols, 0, width - 1)]
        image = image.astype(np.float32)
    else:
        image = _bilinear(picture, ys, xs)
    image[~inside] = 0.0
    if colour is not None:
        shift, contrast, saturation = colour
        grey = image.mean(-1, keepdims=True)
        image = grey + (image - grey) * saturation
        image = (image - image.mean()) * contrast + image.mean() + shift
        np.clip(image, 0, 255, out=image)
    return normalize(image), labels


def _bilinear(picture, ys, xs):
    """(len(ys), len(xs), 3) float32: picture at the points ys x xs, edges held."""
    def weights(points, extent):
        low = np.floor(points).astype(int)
        frac = (points - low).astype(np.float32)[:, None]
        return np.clip(low, 0, extent - 1), np.clip(low + 1, 0, extent - 1), frac
    top, bottom, fy = weights(ys, picture.shape[0])
    left, right, fx = weights(xs, picture.shape[1])
    rows = picture[top].astype(np.float32) * (1 - fy[..., None]) + picture[bottom] * fy[..., None]
    return rows[:, left] * (1 - fx) + rows[:, right] * fx
