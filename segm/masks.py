"""What a mask's pixels mean: class names, colour tables and remapped values.

    classes.csv        name[,r,g,b] per class, in class order (CamVid's class_dict.csv
                       columns); with colours, masks may be RGB PNGs, each colour its class
    *.yaml             an Ultralytics dataset file: its `names` name the classes
    --mask_map 255:1   from:to pairs applied to every mask read (0/255 masks; trimaps
                       1:1,2:0,3:255)

A mask read through a MaskFormat is (H, W) uint8 class numbers, 255 unlabelled
(readers.IGNORE), whatever it was saved as.
"""
import csv
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segm.errors import DataError, UsageError
from segm.readers import IGNORE, read_image, read_mask

CLASSES_FILE = "classes.csv"


def parse_map(text):
    """{from: to} of --mask_map's "from:to,from:to" text ("" for none); UsageError if not."""
    mapping = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"(\d+):(\d+)", pair)
        if not match or max(int(match[1]), int(match[2])) > 255:
            raise UsageError(f"--mask_map takes from:to pairs of mask values 0..255 such as "
                             f"255:1 or 1:1,2:0,3:255, not {text!r}")
        mapping[int(match[1])] = int(match[2])
    return mapping


def _read_csv(path):
    """(names, colours or None) of a classes.csv; DataError naming the row that is wrong."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} could not be read ({e}); write it as text: a header, then "
                        f"name[,r,g,b] per class") from None
    fields = {k.strip().lower(): k for k in (rows[0].keys() if rows else []) if k}
    if "name" not in fields or not 2 <= len(rows) <= IGNORE:
        raise DataError(f"{path} needs a header with a `name` column (and r,g,b for colour "
                        f"masks) and a row for each of 2 to 255 classes, in class order")
    names = [row[fields["name"]].strip() for row in rows]
    if not {"r", "g", "b"} <= fields.keys():
        return names, None
    colours = []
    for line, row in enumerate(rows, start=2):
        try:
            colour = tuple(int(row[fields[c]]) for c in "rgb")
        except (TypeError, ValueError):
            colour = None
        if colour is None or not all(0 <= v <= 255 for v in colour) or colour in colours:
            raise DataError(f"line {line} of {path} needs r,g,b as three whole numbers 0..255, "
                            f"a colour no other class has")
        colours.append(colour)
    return names, colours


def _yaml_names(path):
    """The `names` of an Ultralytics dataset YAML (a list, or index: name lines), or None.
    Read by hand: the two forms Ultralytics writes need no YAML library."""
    names, inside = {}, False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if re.match(r"names:\s*\[", line):  # names: [a, b, c]
            return [n.strip(" '\"") for n in line.split("[", 1)[1].rsplit("]", 1)[0].split(",")]
        if re.match(r"names:\s*$", line):
            inside = True
        elif inside and (item := re.match(r"\s+(?:(\d+)\s*:|-)\s*(.+)", line)):
            names[int(item[1]) if item[1] else len(names)] = item[2].strip(" '\"")
        elif inside and line.strip():
            break
    return [names[k] for k in sorted(names)] if names else None


class MaskFormat(NamedTuple):
    """How a folder's masks read: class names (or None), colours (or None), value map."""
    names: list | None
    colours: list | None
    mapping: dict
    source: str  # where the names come from, for the report

    def read(self, path, max_pixels):
        """(H, W) uint8 class numbers of the mask at path, colours and map applied."""
        if self.colours is None:
            mask = read_mask(path, max_pixels)
        else:
            mask = self._by_colour(path, read_image(path, max_pixels))
        if self.mapping:
            table = np.arange(256, dtype=np.uint8)
            table[list(self.mapping)] = list(self.mapping.values())
            mask = table[mask]
        return mask

    def _by_colour(self, path, rgb):
        """Each pixel's class by its colour; DataError naming a colour the table lacks."""
        codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) \
            | rgb[..., 2]                                                  # (H, W)
        table = np.array([(r << 16) | (g << 8) | b for r, g, b in self.colours])
        order = np.argsort(table)
        place = np.clip(np.searchsorted(table[order], codes), 0, len(table) - 1)
        known = table[order][place] == codes
        if not known.all():
            unknown, counts = np.unique(codes[~known], return_counts=True)
            code, count = int(unknown[counts.argmax()]), int(counts.max())
            colour = (code >> 16, (code >> 8) & 255, code & 255)
            others = f" (and {len(unknown) - 1} more unknown colours)" if len(unknown) > 1 else ""
            raise DataError(f"{path} has {count:,} pixels of colour {colour}{others}, which "
                            f"{self.source} does not list; add it there or repaint them")
        return order[place].astype(np.uint8)


def load(folder, mask_map=""):
    """The MaskFormat of a data folder: its classes.csv (else a dataset YAML's names), and
    the --mask_map given."""
    folder, names, colours, source = Path(folder), None, None, "no class file"
    if (folder / CLASSES_FILE).is_file():
        names, colours = _read_csv(folder / CLASSES_FILE)
        source = str(folder / CLASSES_FILE)
    else:
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            names = _yaml_names(path)
            if names:
                source = str(path)
                break
    return MaskFormat(names, colours, parse_map(mask_map), source)
