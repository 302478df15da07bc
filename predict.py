"""Segment a picture of any size with a saved model: read it safely, then tile by tile.

Models are built for the canvas they were trained on (the graph layers bake its
grid in), so a picture is cut into overlapping tiles of that canvas at its own
scale and the tiles' logits are blended: memory stays bounded at any image size.
"""
import os
import sys
import warnings
from pathlib import Path

import numpy as np

import files
import load_data
import plots
from configurator import BASE_BYTES, UsageError
from model import keras


def read_image(path, max_pixels):
    """(H, W, 3) uint8 RGB of a PNG/JPEG as the eye sees it, or one sentence why not."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    bad = load_data.DataError
    if not path.exists():
        raise UsageError(f"{path} does not exist; pass the path of a PNG or JPEG")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; pass the path of a PNG or JPEG")
    # PIL refuses twice this before decoding anything; its limit is put back after.
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        # The filter is on before open(), which is where PIL warns of a large header.
        with warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning), \
                Image.open(path) as picture:
            if picture.width * picture.height > max_pixels:  # known from the header alone
                raise bad(f"{path} is {picture.width}x{picture.height} pixels, more than the "
                          f"{max_pixels:,} that fit in memory here; shrink it first")
            picture = ImageOps.exif_transpose(picture)
            if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey
                grey = np.asarray(picture, np.float64)
                top = 65535.0 if picture.mode != "F" else max(float(grey.max()), 1e-12)
                grey = np.clip(grey / top * 255, 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=-1)
            return np.asarray(picture.convert("RGB"))
    except PermissionError:
        raise bad(f"{path} cannot be read (permission denied); fix its permissions") from None
    except Image.DecompressionBombError:
        raise bad(f"{path} claims more than {2 * max_pixels:,} pixels, too many to decode "
                  f"safely here; shrink it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # SyntaxError: PIL's
        raise bad(f"{path} is not a readable image; pass a PNG or JPEG") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def segment_tiled(model, pixels, batch_size):
    """(H, W) class map of an image of any size, by overlapping tiles of the model's canvas.

    Each tile's logits are weighted by a window that falls towards its edges, where
    the model sees least context, and averaged: memory grows with the image, not more.
    """
    side = model.input_shape[1]
    stride = max(1, side // 2)
    height, width = pixels.shape[:2]
    pad_h = max(side, -(-(height - side) // stride) * stride + side) - height
    pad_w = max(side, -(-(width - side) // stride) * stride + side) - width
    mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "edge"
    image = np.pad(load_data.normalize(pixels), ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    ramp = np.minimum(np.arange(side) + 1, side - np.arange(side)) / (side / 2)
    window = np.outer(ramp, ramp).astype(np.float32)[..., None]      # (S, S, 1)
    total = np.zeros((*image.shape[:2], model.output_shape[-1]), np.float32)
    weight = np.zeros((*image.shape[:2], 1), np.float32)
    corners = [(y, x) for y in range(0, image.shape[0] - side + 1, stride)
               for x in range(0, image.shape[1] - side + 1, stride)]
    bar = keras.utils.Progbar(len(corners), verbose=1 if sys.stdout.isatty() else 0)
    for i in range(0, len(corners), batch_size):
        batch = corners[i:i + batch_size]
        tiles = np.stack([image[y:y + side, x:x + side] for y, x in batch])
        logits = model(tiles, training=False).numpy()                # (B, S, S, K)
        for (y, x), tile in zip(batch, logits):
            total[y:y + side, x:x + side] += tile * window
            weight[y:y + side, x:x + side] += window
        bar.update(min(i + batch_size, len(corners)))
    return (total / weight)[:height, :width].argmax(-1), len(corners)


def max_image_pixels():
    """The largest image --predict takes: about 150 bytes a pixel for tiles, logits and picture."""
    available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(max(available / 2 - BASE_BYTES, 0) // 150)


def segment_picture(model, pixels, name, out_dir, batch_size):
    """Segment an (H, W, 3) uint8 picture and draw image | mask | overlay into out_dir."""
    num_classes, side = model.output_shape[-1], model.input_shape[1]
    pred, tiles = segment_tiled(model, pixels, batch_size)
    height, width = pred.shape
    print(f"segmented {name} ({width}x{height}) in {tiles} overlapping {side}x{side} tiles, "
          f"the canvas {model.name} was trained on, at the image's own scale")
    out = Path(out_dir) / f"prediction_{Path(name).stem}.png"
    step = max(1, max(height, width) // 1200)  # the picture shows no more than this anyway
    with files.FolderLock(out_dir):
        plots.prediction(pixels[::step, ::step] / 255.0, pred[::step, ::step], num_classes,
                         f"{name}: {model.name}, {(pred > 0).mean():.1%} of pixels digit", out)
    print(f"wrote {out}")
    return pred
