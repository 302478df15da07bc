"""Segment pictures of any size with a saved model: read safely, tile by tile, masks out.

Models are built for the canvas they were trained on (the graph layers bake its
grid in), so a picture is cut into overlapping tiles of that canvas at its own
scale and the tiles' logits are blended: memory stays bounded at any image size.
"""
import sys
import time
from pathlib import Path

import numpy as np

from segm import files, memory, metrics, plots, readers, runs
from segm.configurator import BASE_BYTES
from segm.errors import DataError, UsageError
from segm.readers import IGNORE
from segm.tf_quiet import keras


def read_image(path, max_pixels):
    """(H, W, 3) uint8 RGB of the picture at path (see readers.read_image), or one sentence."""
    if not path.exists():
        raise UsageError(f"{path} does not exist; pass the path of a PNG or JPEG")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; pass the path of a PNG or JPEG")
    return readers.read_image(path, max_pixels)


def segment_many(model, pictures, batch_size, progress=None):
    """The (H, W) class map of each picture ((H, W, 3) uint8, any size), in order.

    Each picture is cut into overlapping tiles of the model's canvas, tiles of
    consecutive pictures share batches, and each tile's logits are weighted by a
    window that falls towards its edges, where the model sees least context, then
    averaged: memory grows with the largest picture, not more. A picture of the
    canvas's own size is one tile, so its map is the model's output as it is.
    progress(n) is called with the number of tiles done.
    """
    side, num_classes = model.input_shape[1], model.output_shape[-1]
    ramp = np.minimum(np.arange(side) + 1, side - np.arange(side)) / (side / 2)
    window = np.outer(ramp, ramp).astype(np.float32)[..., None]        # (S, S, 1)
    waiting, tiles, places, done = [], [], [], 0  # pictures not yet whole; the next batch

    def run_batch():
        logits = next(metrics.logits_by_batch(model, np.stack(tiles), batch_size))  # (B, S, S, K)
        for (blend, y, x), tile in zip(places, logits):
            blend["total"][y:y + side, x:x + side] += tile * window
            blend["weight"][y:y + side, x:x + side] += window
            blend["left"] -= 1
        tiles.clear()
        places.clear()

    def finished():
        while waiting and not waiting[0]["left"]:
            blend = waiting.pop(0)
            height, width = blend["size"]
            yield (blend["total"] / blend["weight"])[:height, :width].argmax(-1)

    for pixels in pictures:
        image, corners = _tiles(pixels, side)
        blend = {"size": pixels.shape[:2], "left": len(corners),
                 "total": np.zeros((*image.shape[:2], num_classes), np.float32),
                 "weight": np.zeros((*image.shape[:2], 1), np.float32)}
        waiting.append(blend)
        for y, x in corners:
            tiles.append(image[y:y + side, x:x + side])
            places.append((blend, y, x))
            if len(tiles) == batch_size:
                run_batch()
                done += batch_size
                if progress:
                    progress(done)
                yield from finished()
    if tiles:
        done += len(tiles)
        run_batch()
        if progress:
            progress(done)
    yield from finished()


def _corners(height, width, side):
    """(pad_h, pad_w, [(top, left)] of each tile) for a picture of that size."""
    stride = max(1, side // 2)
    pad_h = max(side, -(-(height - side) // stride) * stride + side) - height
    pad_w = max(side, -(-(width - side) // stride) * stride + side) - width
    return pad_h, pad_w, [(y, x) for y in range(0, height + pad_h - side + 1, stride)
                          for x in range(0, width + pad_w - side + 1, stride)]


def _tiles(pixels, side):
    """(the picture normalized and padded to whole tiles, [(top, left)] of each tile)."""
    height, width = pixels.shape[:2]
    pad_h, pad_w, corners = _corners(height, width, side)
    mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "edge"
    return np.pad(readers.normalize(pixels), ((0, pad_h), (0, pad_w), (0, 0)),
                  mode=mode), corners


def segment_tiled(model, pixels, batch_size):
    """((H, W) class map of one picture of any size, its number of tiles), with a progress bar."""
    count = len(_corners(*pixels.shape[:2], model.input_shape[1])[2])
    bar = keras.utils.Progbar(count, verbose=1 if sys.stdout.isatty() else 0)
    return next(segment_many(model, [pixels], batch_size, bar.update)), count


def score_pictures(model, pictures, num_classes, batch_size=64):
    """Dataset-level metrics over whole pictures of any size: (image, mask) pairs, read
    one at a time and segmented tile by tile (segment_many)."""
    miou, masks, count = keras.metrics.MeanIoU(num_classes, ignore_class=IGNORE), [], 0

    def images():
        for image, mask in pictures:
            masks.append(mask)
            yield image
    for pred in segment_many(model, images(), batch_size):
        miou.update_state(masks.pop(0).ravel(), pred.ravel())
        count += 1
    return metrics.metrics_from_confusion(miou.total_cm.numpy(), count)


def max_image_pixels():
    """The largest image --predict takes: about 150 bytes a pixel for tiles, logits and picture."""
    machine = memory.total() or 8e9  # unknown: a laptop's 8 GB
    return int(max(machine / 2 - BASE_BYTES, 0) // 150)


def segment_picture(model, pixels, name, out_dir, batch_size, names=None):
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
                         f"{name}: {model.name}, {(pred > 0).mean():.1%} of pixels "
                         f"{'digit' if names is None else 'not background'}", out, names)
    print(f"wrote {out}")
    return pred


SAMPLE_POOL = 256  # the test images the samples are chosen from: enough to hold hard cases


def _hardest_and_typical(masks, preds, rows):
    """Indices of the rows // 2 images with the most wrong labelled pixels, then of images
    around the median, and each one's label: a learner sees what fails beside what is usual."""
    wrong = [int(((p != m) & (m != IGNORE)).sum()) for m, p in zip(masks, preds)]
    order = sorted(range(len(wrong)), key=lambda i: (-wrong[i], i))
    hard = order[:rows // 2]
    rest = order[rows // 2:]
    middle = len(rest) // 2 - (rows - len(hard)) // 2
    typical = rest[max(middle, 0):][:rows - len(hard)]
    labels = ([f"input: {k + 1}. most errors of {len(wrong)}" for k in range(len(hard))]
              + ["input: typical"] * len(typical))
    return hard + typical, labels


def draw_samples(model, datagen, tests, scores, rows, batch_size, path):
    """samples_{model}.png: of the first SAMPLE_POOL test images, the ones with the most wrong
    pixels and typical ones, with truth, prediction and errors; tests is the (images, masks)
    of the generator's test set, None for a folder's pictures."""
    num_classes = datagen.num_classes
    if datagen.source == "folder":  # whole pictures, each of its own size
        # Pictures of any size are segmented whole: a smaller pool keeps this quick.
        pairs = [pair for pair, _ in zip(datagen.pictures("test"), range(4 * rows))]
        shown = [image / 255.0 for image, _ in pairs]
        masks = [mask for _, mask in pairs]
        preds = list(segment_many(model, (image for image, _ in pairs), batch_size))
        names = datagen.class_names
    else:
        images, masks = tests[0][:SAMPLE_POOL], tests[1][:SAMPLE_POOL]
        shown = readers.denormalize(images)
        preds = metrics.predict_logits(model, images, batch_size).argmax(-1)
        names = None
    chosen, labels = _hardest_and_typical(masks, preds, rows)
    plots.samples([shown[i] for i in chosen], [masks[i] for i in chosen],
                  [preds[i] for i in chosen], num_classes,
                  f"{model.name} on the test set: foreground IoU {scores['fg_iou']:.3f}, "
                  f"mean IoU {scores['miou']:.3f}", path, names, labels)


# ---- a folder of pictures in, mask files out

def palette(num_classes):
    """The plots' class colours as a PNG palette (768 values), unlabelled (IGNORE) grey."""
    table = plots.colour_mask(np.arange(256), num_classes)               # (256, 3) in [0, 1]
    return np.round(table * 255).astype(np.uint8).ravel().tolist()


def overlay(pixels, pred, num_classes):
    """(H, W, 3) uint8: the picture, with every pixel not background half its class colour
    (for two classes red, since the mask's white would vanish on a bright stroke)."""
    table = plots.class_colours(num_classes) if num_classes > 2 else np.array([(0, 0, 0),
                                                                              (1.0, 0.1, 0.1)])
    colours = np.round(table * 255)[pred]                                 # (H, W, 3)
    shown = pixels.astype(np.float32)
    shown[pred > 0] = 0.5 * shown[pred > 0] + 0.5 * colours[pred > 0]
    return shown.astype(np.uint8)


def write_masks(pixels, pred, num_classes, stem, folder):
    """stem.png, the class-index mask (mode P, the plots' palette, the picture's own size),
    and stem_overlay.png, each written atomically."""
    from PIL import Image
    mask = Image.fromarray(pred.astype(np.uint8), mode="P")
    mask.putpalette(palette(num_classes))
    for name, picture in ((f"{stem}.png", mask),
                          (f"{stem}_overlay.png", Image.fromarray(overlay(pixels, pred,
                                                                          num_classes)))):
        with files.atomic_write(Path(folder) / name) as tmp:
            picture.save(tmp)


def segment_folder(model, paths, folder, batch_size):
    """Segment every picture among paths into folder, one picture in memory at a time, with a
    progress bar; returns (pictures done, names of the files that are not pictures)."""
    num_classes, most = model.output_shape[-1], max_image_pixels()
    stems = [p.stem for p in paths]
    unique = [p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.')}"
              for p in paths]  # photo.jpg and photo.png both keep their masks
    waiting, skipped, done = [], [], 0
    bar = keras.utils.Progbar(len(paths), verbose=1 if sys.stdout.isatty() else 0)

    def pictures():
        for path, stem in zip(paths, unique):
            try:
                pixels = readers.read_image(path, most)
            except DataError:
                skipped.append(path.name)
                bar.add(1)
                continue
            waiting.append((pixels, stem))
            yield pixels
    for pred in segment_many(model, pictures(), batch_size):
        pixels, stem = waiting.pop(0)
        write_masks(pixels, pred, num_classes, stem, folder)
        done += 1
        bar.add(1)
    return done, skipped


def predict_path(path, load, described, out_dir, batch_size, folder_run=False, names=None):
    """--predict: one picture (its figure too, image | mask | overlay) or a folder of them, by
    the model load() returns, into a new predictions folder of out_dir; returns that folder.
    described: the model as the output names it; folder_run: trained on a folder of its own,
    whose classes are names (None: class 1, class 2, ...)."""
    if not path.exists():
        raise UsageError(f"{path} does not exist; pass a PNG or JPEG, or a folder of them")
    paths = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if not paths:
        raise UsageError(f"{path} holds no files; pass a PNG or JPEG, or a folder of them")
    model = load()
    print(f"segmenting {len(paths)} file{'s' * (len(paths) > 1)} with {described}")
    if not path.is_dir():
        names = (names or plots.class_names(model.output_shape[-1], digits=False)
                 if folder_run else None)
        pixels = read_image(path, max_pixels=max_image_pixels())
        segment_picture(model, pixels, path.name, out_dir, batch_size, names)
    folder, began = runs.claim(out_dir, "predictions"), time.perf_counter()
    done, skipped = segment_folder(model, paths, folder, batch_size)
    seconds = time.perf_counter() - began
    print(f"segmented {done} picture{'s' * (done != 1)} in {seconds:.1f} s "
          f"({seconds / max(done, 1):.2f} s each): masks and overlays in {folder}/")
    if skipped:
        print(f"note: skipped {len(skipped)} file{'s' * (len(skipped) > 1)} that "
              f"{'are' if len(skipped) > 1 else 'is'} not a readable picture: "
              f"{', '.join(skipped)}")
    return folder
