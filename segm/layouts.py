"""Where a data folder keeps its images and masks: the layouts people have, found by name.

    own          PATH/images/a.jpg, PATH/masks/a.png; a seeded share is held out for testing
    own split    PATH/train/images, PATH/train/masks, PATH/test/... as given
    ultralytics  PATH/images/train, PATH/masks/train, PATH/images/val, PATH/masks/val;
                 val is the test split
    voc          PATH/JPEGImages, PATH/SegmentationClass, PATH/ImageSets/Segmentation/
                 train.txt (trains) and val.txt (the test split)

find() lists every problem of the layout at once (a missing folder, a stray file, an image
without its mask), each a sentence naming its file, so a check can show them all.
"""
from pathlib import Path
from typing import NamedTuple

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOC_LISTS = Path("ImageSets") / "Segmentation"


class Pair(NamedTuple):
    name: str        # the file stem, shared by image and mask (a part's folder first if
                     # two parts may share stems)
    image: Path
    mask: Path
    size: tuple = None  # (height, width) as the eye sees it, once read


class Found(NamedTuple):
    layout: str      # one of the names above
    parts: dict      # {"train": [Pair], "test": [Pair] or None: held out by seed}
    problems: list   # sentences, each naming its file
    split: str       # how the test split is chosen, for the report and config.json


def kind(path):
    """The layout of path's folders by name, or None if it holds none of them."""
    path = Path(path)
    if (path / "images" / "train").is_dir() and (path / "masks" / "train").is_dir():
        return "ultralytics"
    if (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir():
        return "voc"
    if (path / "train" / "images").is_dir():
        return "own split"
    return "own" if (path / "images").is_dir() else None


def is_folder(path):
    """True if path holds images and masks in one of the layouts above."""
    return kind(path) is not None


def _by_stem(folder, suffixes, what, problems):
    """{stem: path} of the files in folder whose suffix is allowed; the others are problems."""
    found = {}
    if not folder.is_dir():
        problems.append(f"{folder} is missing; a folder of your own holds images/ and masks/ "
                        f"with one mask for each image, by name")
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in suffixes:
            problems.append(f"{path} is not a {' or '.join(s[1:].upper() for s in suffixes)} "
                            f"file; {what} must be, so move it out of {folder}")
        elif path.stem in found:
            problems.append(f"{found[path.stem]} and {path.name} share a name; keep one "
                            f"{what[:-1]} per name")
        else:
            found[path.stem] = path
    return found


def pair_up(images_dir, masks_dir, problems, prefix=""):
    """[Pair] of the images and masks matched by name; each one left alone is a problem."""
    images = _by_stem(images_dir, IMAGE_SUFFIXES, "images", problems)
    masks = _by_stem(masks_dir, (".png",), "masks", problems)
    if images_dir.is_dir() and masks_dir.is_dir():
        for have, lack, kind_, folder in ((images, masks, "mask", masks_dir),
                                          (masks, images, "image", images_dir)):
            for name in sorted(set(have) - set(lack)):
                problems.append(f"{have[name]} has no {kind_} of the same name in {folder}; "
                                f"every image needs its mask")
        if not images:
            problems.append(f"{images_dir} holds no pictures; put PNG or JPEG images there "
                            f"and their masks in {masks_dir}")
    return [Pair(prefix + name, images[name], masks[name]) for name in sorted(images)
            if name in masks]


def _voc_part(root, list_name, problems):
    """[Pair] of the names in a VOC list file; a name without its image or mask is a problem."""
    listed = root / VOC_LISTS / list_name
    if not listed.is_file():
        problems.append(f"{listed} is missing; a Pascal VOC folder lists its training and test "
                        f"pictures in train.txt and val.txt there")
        return []
    pairs = []
    for name in listed.read_text().split():
        image = next((root / "JPEGImages" / f"{name}{s}" for s in IMAGE_SUFFIXES
                      if (root / "JPEGImages" / f"{name}{s}").is_file()), None)
        mask = root / "SegmentationClass" / f"{name}.png"
        for path, what in ((image, "image"), (mask, "mask")):
            if path is None or not path.is_file():
                problems.append(f"{listed} names {name}, whose {what} is not in "
                                f"{root / ('JPEGImages' if what == 'image' else 'SegmentationClass')}")
        if image is not None and mask.is_file():
            pairs.append(Pair(name, image, mask))
    return pairs


def find(root):
    """Found: the layout of root, its pairs by part and every problem with them."""
    root, problems = Path(root), []
    layout = kind(root)
    if layout == "ultralytics":
        parts = {"train": pair_up(root / "images" / "train", root / "masks" / "train",
                                  problems, "train/"),
                 "test": pair_up(root / "images" / "val", root / "masks" / "val", problems,
                                 "val/")}
        how = "images/val and masks/val"
    elif layout == "voc":
        parts = {"train": _voc_part(root, "train.txt", problems),
                 "test": _voc_part(root, "val.txt", problems)}
        how = f"{VOC_LISTS / 'val.txt'}"
    elif layout == "own split":
        parts = {part: pair_up(root / part / "images", root / part / "masks", problems)
                 for part in ("train", "test")}
        how = "train/ and test/ as given"
    else:
        parts = {"train": pair_up(root / "images", root / "masks", problems), "test": None}
        how = "held out by the test seed"
    return Found(layout or "own", parts, problems, how)
