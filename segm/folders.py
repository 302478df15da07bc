"""Your own pictures: a folder of images and masks, checked, split, streamed and augmented.

    PATH/images/cell01.jpg   PATH/masks/cell01.png    a seeded share is held out for testing
    PATH/train/images/...    PATH/train/masks/...     or your own split, with PATH/test/...
    (and Ultralytics' and Pascal VOC's layouts: see segm/layouts.py)

A mask is a PNG of class numbers (mode L or P): 0 background, 1..K-1 the classes,
255 "not labelled", which no loss or metric counts (readers.IGNORE); classes.csv and
--mask_map say how other masks read (segm/masks.py). FolderData has
the face of load_data.Datagen: sample() draws training batch k from the files,
reading only that batch's pictures, so a folder larger than memory trains as well.
"""
import math
from pathlib import Path

import numpy as np

from segm import check_data, masks
from segm.check_data import MAX_PIXELS
from segm.errors import DataError
from segm.layouts import find, is_folder
from segm.readers import IGNORE, normalize, read_image

TEST_SHARE, VALID_SHARE = 0.2, 0.1  # of the pairs, when the folder has no test split
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
                 augment=True, saved_split=None, score_all=False, mask_map=""):
        self.data_dir, self.canvas, self.seed = Path(data_dir), canvas, seed
        self.augment, self.test_seed = augment, test_seed
        self.format = masks.load(self.data_dir, mask_map)
        self.found = find(self.data_dir)
        checked = check_data.survey(self.found, self.format, num_classes)
        check_data.refuse(checked, self.data_dir)
        given = checked.pairs
        self.explicit = score_all or given["test"] is not None
        if score_all:  # a folder to score a model on, not to train: every pair is a test
            parts = {"train": [], "valid": [], "test": given["train"] + (given["test"] or [])}
        elif given["test"] is not None:  # the folder's own test split
            parts = {**split(given["train"], test_seed, test_share=0), "test": given["test"]}
        else:
            parts = split(given["train"], test_seed)
        if saved_split:  # the run's own split, as config.json recorded it
            parts = self._adopt(parts, saved_split)
        self.parts = parts
        self.given_classes = num_classes
        self.num_classes = checked.num_classes
        self.class_names = check_data.class_names(self.format, self.num_classes)
        self.pixels = checked.pixels
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

    def record(self):
        """What config.json keeps of the folder: its layout, test split, split and classes."""
        return {"layout": self.found.layout, "test_split": self.found.split,
                "split": self.split_names(), "class_names": self.class_names}

    def class_pixels(self):
        """(K,) labelled pixels of each class in the training pairs' masks."""
        counts = sum((self.pixels[p.name] for p in self.parts["train"]), np.zeros(256, np.int64))
        return counts[:self.num_classes]

    def describe(self):
        """One line naming the data behind the images."""
        n = {part: len(pairs) for part, pairs in self.parts.items()}
        how = ("all of them scored" if not n["train"] else
               f"{self.found.layout} layout, test split {self.found.split}, validation drawn "
               f"from the training pairs" if self.explicit else
               f"held out by test seed {self.test_seed}")
        classes = ("as given" if self.given_classes else "from " + self.format.source
                   if self.format.names else "from the masks")
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
                                           self.format.read(pair.mask, MAX_PIXELS), self.canvas,
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
            picture, mask = read_image(pair.image, MAX_PIXELS), self.format.read(pair.mask, MAX_PIXELS)
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
            yield read_image(pair.image, MAX_PIXELS), self.format.read(pair.mask, MAX_PIXELS)


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
