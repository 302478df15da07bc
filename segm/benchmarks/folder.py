"""`benchmark.py folder`: a folder of generator scenes, trained on and read as any folder is.

It writes --pairs scenes as PNG files (by default 3 classes: background, digits 0-4, digits
5-9; --groups chooses, --border leaves an unlabelled frame),
trains main.py's model (--model, or its default) on them, scores its held-out split
through the folder path and through the generator's arrays, times the folder reader
against a training step, and writes its record (records/folder_*.json) in --out_dir; the run is in
--out_dir/folder/run.
"""
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from segm import files, metrics, readers
from segm.benchmarks.common import figure_name, min_time, record


def scene_classes(groups):
    """(11,) class of each 11-class label (background, digits 0..9) under groups "01234,56789";
    a digit in no group is background."""
    table = np.zeros(11, np.uint8)
    for k, group in enumerate(groups.split(","), start=1):
        for digit in group.strip():
            table[int(digit) + 1] = k
    return table


def write_scenes(args, folder, datagen):
    """args.pairs generator scenes as images/ and masks/ PNGs in folder (background and a
    class per digit group of args.groups, args.border pixels round the edge unlabelled);
    returns their (images float in [-1, 1], masks) as generated.
    datagen: load_data.Datagen, handed down by benchmark.py."""
    from PIL import Image
    gen = datagen(args.data_dir or None, canvas=args.scene, digit_size=args.digit_size,
                  digits_per_image=args.digits_per_image, num_classes=11, seed=args.seed)
    images, masks = gen.sample(args.pairs)
    masks = scene_classes(args.groups)[masks]
    if args.border:
        masks[:, :args.border], masks[:, -args.border:] = 255, 255
        masks[:, :, :args.border], masks[:, :, -args.border:] = 255, 255
    pixels = np.round(readers.denormalize(images) * 255).astype(np.uint8)
    for sub, arrays in (("images", pixels), ("masks", masks)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i, array in enumerate(arrays):
            with files.atomic_write(folder / sub / f"scene{i:05d}.png") as tmp:
                Image.fromarray(array).save(tmp, format="PNG")
    print(f"wrote {args.pairs} scenes ({args.scene}x{args.scene}, {gen.describe()}) to {folder}")
    return images, masks


def run(args, trio):
    """Train main.py's model on a folder of scenes; score its held-out split through the
    folder path and through the generator's arrays; time the folder reader."""
    from segm import folders, predict
    out = Path(args.out_dir) / "folder"
    scenes, run_dir = out / "scenes", out / "run"
    shutil.rmtree(scenes, ignore_errors=True)
    images, masks = write_scenes(args, scenes, trio.load_data.Datagen)
    command = [sys.executable, str(trio.main_py), "--data_dir", str(scenes), "--canvas",
               str(args.canvas), "--steps", str(args.steps), "--eval_every",
               str(args.steps // 5), "--batch_size", str(args.batch_size), "--out_dir",
               str(run_dir), "--overwrite", *([] if args.augment else ["--no-augment"]),
               *(["--model", args.model] if args.model else []), *shlex.split(args.main_args)]
    print("$ " + " ".join(command[1:]))
    began = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - began
    if done.returncode:
        sys.exit(f"error: the run failed:\n{done.stdout[-2000:]}")
    scores = json.loads((run_dir / "metrics.json").read_text())
    saved_split = json.loads((run_dir / "config.json").read_text())["split"]
    test = [int(name.removeprefix("scene")) for name in saved_split["test"]]
    trained = trio.model.load_model(run_dir / "model.keras")
    # The same model and scenes twice: PNG files read and tiled, and the generator's arrays.
    classes = len(args.groups.split(",")) + 1
    data = folders.FolderData(scenes, args.canvas, classes, test_seed=2024, augment=False,
                              saved_split=saved_split)
    by_folder = predict.score_pictures(trained, data.pictures("test"), classes, 64)
    if args.scene == args.canvas:  # the model's own input size: straight through it
        by_arrays = metrics.score(trained, images[test], masks[test], classes, 64)
    else:  # tiles of the arrays, as --predict would cut them
        pixels = np.round(readers.denormalize(images[test]) * 255).astype(np.uint8)
        by_arrays = predict.score_pictures(trained, zip(pixels, masks[test]), classes, 64)
    # The reader on one thread, against the model's training step.
    reader = folders.FolderData(scenes, args.canvas, classes, seed=1, augment=args.augment)
    batch_ms = statistics.median(
        min_time(lambda k=k: reader.sample(args.batch_size, step=k), 1)
        for k in range(args.repeats)) * 1000
    step_ms = args.batch_size / scores["train_images_per_second"] * 1000
    rows = [["scenes in the folder", f"{args.pairs} ({len(test)} held out for testing)"],
            ["whole run, wall clock (`main.py`, start to finish)", f"{wall:.0f} s"],
            ["training alone", f"{scores['train_seconds']:.0f} s"],
            ["mean IoU, folder path (PNG files, tiled)", f"{by_folder['miou']:.4f}"],
            ["mean IoU, generator path (its arrays)", f"{by_arrays['miou']:.4f}"],
            ["difference", f"{abs(by_folder['miou'] - by_arrays['miou']):.4f}"],
            ["per-class IoU, folder path",
             ", ".join(f"{iou:.3f}" for iou in by_folder["per_class_iou"])],
            [f"reading a batch of {args.batch_size} (one thread, median of {args.repeats})",
             f"{batch_ms:.1f} ms"],
            [f"training step of {args.batch_size}", f"{step_ms:.0f} ms"],
            ["reading / step", f"{batch_ms / step_ms:.1%}"]]
    name = figure_name("folder", args)
    record(args, name, ["figure", "value"], rows, section="Your own folders")
    print(f"the run is in {run_dir}")
