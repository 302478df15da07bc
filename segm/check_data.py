"""Check a data folder before training: every pair read once, every problem listed at once.

    python main.py --data_dir DIR --check_data

prints the layout, the pairs, the image sizes, the mask values with each class's share of
the labelled pixels, and each problem with its file; draws a few images with their masks
laid over them. Training runs survey() too, and refuses with its first problem.
"""
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segm import layouts, masks, plots
from segm.errors import DataError
from segm.readers import IGNORE, picture_size, read_image

MAX_PIXELS = 100_000_000  # a picture's header claiming more is refused before decoding
SHOWN = 6                 # pictures in the check's drawing


class Survey(NamedTuple):
    pairs: dict        # {"train": [Pair], "test": [Pair] or None}, each Pair with its size
    pixels: dict       # {pair name: (256,) pixel count of each mask value}
    num_classes: int   # 0 if the masks cannot say
    problems: list     # sentences, each naming its file


def progress(total, what):
    """A callable(done) drawing a Keras progress bar on a terminal for long work, else nothing."""
    if total < 200 or not sys.stdout.isatty():
        return lambda done: None
    from segm.tf_quiet import keras
    print(what)
    return keras.utils.Progbar(total).update


def survey(found, fmt, num_classes=None, whole_images=False):
    """Survey of found's pairs through MaskFormat fmt: each mask read (each image too if
    whole_images, else its header), sizes compared, values checked against the classes."""
    problems, pixels, pairs = list(found.problems), {}, {}
    every = [p for part in found.parts.values() for p in part or []]
    bar = progress(len(every), "checking images and masks")
    done = 0
    for part, members in found.parts.items():
        if members is None:
            pairs[part] = None
            continue
        pairs[part] = []
        for pair in members:
            done += 1
            bar(done)
            try:
                size = (read_image(pair.image, MAX_PIXELS).shape[:2] if whole_images
                        else picture_size(pair.image, MAX_PIXELS))
                mask = fmt.read(pair.mask, MAX_PIXELS)
            except DataError as error:
                problems.append(str(error))
                continue
            if mask.shape != tuple(size):
                problems.append(f"{pair.image} is {size[1]}x{size[0]} pixels but its mask "
                                f"{pair.mask.name} is {mask.shape[1]}x{mask.shape[0]}; a mask "
                                f"must cover its image pixel for pixel")
                continue
            pixels[pair.name] = np.bincount(mask.ravel(), minlength=256)
            pairs[part].append(pair._replace(size=tuple(size)))
    classes = _classes(pairs, pixels, fmt, num_classes, problems)
    return Survey(pairs, pixels, classes, problems)


def _classes(pairs, pixels, fmt, num_classes, problems):
    """The number of classes (given, named, else the largest value + 1); a mask holding a
    value beyond them, or a folder whose masks label nothing, adds its problem."""
    total = sum(pixels.values(), np.zeros(256, np.int64))
    values = [int(v) for v in np.flatnonzero(total) if v != IGNORE]
    named = len(fmt.names) if fmt.names else None
    count = num_classes or named
    if num_classes and named and named != num_classes:
        problems.append(f"{fmt.source} names {named} classes but there are {num_classes}; "
                        f"leave --num_classes out, or name every class there")
    if count:
        where = (f"there are {count} classes" if num_classes else
                 f"{fmt.source} names {count} classes")
        fix = f"pass --num_classes {count + 1}" if not named else f"add a row to {fmt.source}"
        for part in pairs.values():
            for pair in part or []:
                top = [v for v in np.flatnonzero(pixels[pair.name]) if count <= v != IGNORE]
                if top:
                    problems.append(f"{pair.mask} holds class {top[-1]}, but {where} "
                                    f"(0..{count - 1}, and {IGNORE} for unlabelled pixels); "
                                    f"fix the mask or {fix}")
        return count
    if values == [0] and total[IGNORE] and not fmt.mapping:
        problems.append(f"the masks in {_first_mask(pairs)} hold only 0 and 255, and 255 means "
                        f"unlabelled here; if 255 marks your objects, pass --mask_map 255:1")
    elif pixels and max(values, default=0) == 0:
        problems.append(f"every mask in {_first_mask(pairs)} is background (0) only; label the "
                        f"pixels of each class 1, 2, ... (255 leaves a pixel unlabelled)")
    largest = max(values, default=0)
    return largest + 1 if largest else 0


def _first_mask(pairs):
    return next(p.mask.parent for part in pairs.values() for p in part or [])


def refuse(checked, data_dir):
    """DataError with the survey's first problem (and how many more), if it has any."""
    if checked.problems:
        more = len(checked.problems) - 1
        raise DataError(checked.problems[0] + (
            f" (and {more} more problem{'s' * (more > 1)}: `python main.py --data_dir "
            f"{data_dir} --check_data` lists them all)" if more else ""))


def report(found, checked, names):
    """The check's printed lines: layout, pairs, sizes, values with their shares, problems."""
    parts = {part: len(pairs) for part, pairs in checked.pairs.items() if pairs is not None}
    sizes = [p.size for part in checked.pairs.values() for p in part or []]
    lines = [f"layout: {found.layout} (test split: {found.split})",
             "pairs: " + ", ".join(f"{n} {part}" for part, n in parts.items())
             + (" (the test split is drawn from them)" if "test" not in parts else "")]
    if sizes:
        (h0, w0), (h1, w1) = np.min(sizes, 0), np.max(sizes, 0)
        lines.append(f"image sizes: {w0}x{h0} to {w1}x{h1} pixels (width x height)")
    total = sum(checked.pixels.values(), np.zeros(256, np.int64))
    labelled = total.sum() - total[IGNORE]
    lines.append(f"mask values ({labelled:,} labelled pixels, {total[IGNORE]:,} unlabelled):")
    for value in np.flatnonzero(total):
        if value != IGNORE:
            name = names[value] if value < len(names) else "beyond the classes"
            lines.append(f"  {value:3d} {name:<20} {total[value] / max(labelled, 1):7.2%}")
    for problem in checked.problems:
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


def draw(checked, fmt, names, path):
    """A few pictures with their masks laid over them, and a legend of the class names."""
    shown = [p for part in checked.pairs.values() for p in part or []][:SHOWN]
    if not shown:
        return False
    num_classes = max(len(names), 2)
    fig, axes = plots.subplots(1, len(shown), figsize=(2.4 * len(shown), 3.0), squeeze=False)
    for ax, pair in zip(axes[0], shown):
        image = read_image(pair.image, MAX_PIXELS) / 255.0
        mask = fmt.read(pair.mask, MAX_PIXELS)
        colours = plots.colour_mask(mask, num_classes)  # unlabelled and beyond: grey
        tinted = (mask != 0)[..., None]  # background stays as the photo is, to be seen
        ax.imshow(np.where(tinted, 0.35 * image + 0.65 * colours, image),
                  interpolation="nearest")
        ax.set_title(pair.name, fontsize=7)
        ax.axis("off")
    plots.class_legend(fig, num_classes, names)
    fig.suptitle("masks laid over their images (background as the photo is, unlabelled "
                 "pixels grey)", fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    plots.save(fig, path)
    return True


def run(data_dir, mask_map, num_classes, path):
    """--check_data: the report and the drawing at path; DataError (exit 1) if the folder
    cannot train."""
    if not layouts.is_folder(data_dir):
        raise DataError(f"{data_dir} holds none of the layouts a folder may have: images/ and "
                        f"masks/, train/ and test/, Ultralytics' images/train and masks/train, "
                        f"or Pascal VOC's JPEGImages/ and SegmentationClass/")
    fmt = masks.load(data_dir, mask_map)
    found = layouts.find(data_dir)
    checked = survey(found, fmt, num_classes, whole_images=True)
    names = class_names(fmt, checked.num_classes)
    print(report(found, checked, names))
    if draw(checked, fmt, names, Path(path)):
        print(f"drew {path}")
    if checked.problems:
        raise DataError(f"{data_dir} has {len(checked.problems)} problem"
                        f"{'s' * (len(checked.problems) > 1)} listed above; fix them, then "
                        f"check again")
    print(f"{data_dir} can train: {checked.num_classes} classes")


def class_names(fmt, num_classes):
    """The classes' names: the folder's own, else background, class 1, class 2, ..."""
    return list(fmt.names) if fmt.names else plots.class_names(max(num_classes, 2), False)
