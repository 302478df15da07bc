"""Benchmarks: every model side by side, the layers' and the generator's speed, teaching plots.

    python benchmark.py layers [--repeats 10] [--sizes 32,64,128,256] [--batches 1,64]
    python benchmark.py params
    python benchmark.py data [--data_dir DIR]   the image/mask generator's speed in images/s
    python benchmark.py compare [--models fcn,unet,gcn,cheb,dgcn,hybrid] [--seeds 0,1,2]
    python benchmark.py rotation [--models ...] [--seeds 0,1,2] [--classes 2,11]
                                 [--train_angles 0,180] [--angles 0,30,60,90,135,180]
    python benchmark.py plots [--data_dir DIR]   teaching pictures, regions_example.png too
    python benchmark.py folder [--data_dir DIR]   a folder of scenes: the folder-data targets
    python benchmark.py steps [--models gcn,regions] [--keras_batch_norm]   training steps
    python benchmark.py forward [--models unet,gunet]   forward passes, eager and compiled
    python benchmark.py breakdown [--models unet,...]   one default run phase by phase; GFLOP/s
    python benchmark.py time [--seeds 0,1] [--baseline OLD_CHECKOUT] [-- main.py flags]
                                 time to quality: whole main.py runs, wall, CPU, test score
    python benchmark.py names [--steps 1000,3000] [--input photo]   digits named from their
                                 masks alone (or photo crops): the eleven-class score's bound
    python benchmark.py render   README.md's and RESULTS.md's tables again, from their records

Each subcommand is one file of segm/benchmarks/ (plots: teaching.py) whose docstring says
what it measures and writes; this file reads the flags and hands the subcommand its args
and the scripts it needs (TRIO). Outputs go to im/benchmarks/ (ignored by git); compare,
folder, time and names also write their tables as records there, and with --publish, as the
published figure in im/figures/ (segm/records.py).
"""
import argparse
import sys
import time
from pathlib import Path

import load_data
import main as main_script  # as main_script: main() below is this script's own entry point
import model
from segm.benchmarks import (breakdown, compare, data, folder, forward, layers, names, params,
                             rotation, steps, teaching, time_to_quality)
from segm.benchmarks.common import BENCH, TARGET_IOU, Trio
from segm import records
from segm.errors import DataError, FileError, UsageError

HERE = Path(__file__).resolve().parent
TRIO = Trio(main_script, model, load_data, HERE / "main.py")  # what every subcommand is handed


def positive_int(text):
    value = int(text)  # argparse words a ValueError itself
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def int_list(text):
    return [int(v) for v in text.split(",")]


def class_list(text):
    counts = int_list(text)
    if any(c not in load_data.CLASS_COUNTS for c in counts):
        raise argparse.ArgumentTypeError(f"class counts must be among "
                                         f"{', '.join(map(str, load_data.CLASS_COUNTS))}")
    return counts


def limit_list(text):
    limits = int_list(text)
    if any(not 0 <= t <= 180 for t in limits):
        raise argparse.ArgumentTypeError("training angles T must lie in [0, 180]")
    return limits


def model_list(text):
    names = text.split(",")
    unknown = [n for n in names if n not in model.MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model {unknown[0]!r}; choose from "
                                         f"{', '.join(model.MODELS)}")
    return names


def add_output(sub):
    sub.add_argument("--out_dir", type=Path, default=BENCH,
                     help=f"where its runs, tables and pictures go (default {BENCH}, ignored by git)")
    sub.add_argument("--publish", action="store_true",
                     help="also replace the published figure in im/figures and render README.md "
                     "and RESULTS.md again; refused unless the command is the published one")


def render(args, trio):
    changed = records.render_all()
    print(f"rendered {' and '.join(changed)} from {records.PUBLISHED}" if changed else
          "README.md and RESULTS.md already show every record as it is")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("layers", help="GraphConv paths against depthwise+1x1 conv")
    sub.add_argument("--repeats", type=positive_int, default=10,
                     help="timed runs at (64, 32, 32)")
    sub.add_argument("--sizes", type=int_list, default=[32, 64, 128, 256])
    sub.add_argument("--batches", type=int_list, default=[1, 64])
    add_output(sub)
    sub.set_defaults(run=layers.run)
    sub = commands.add_parser("params", help="parameter count of every model")
    sub.set_defaults(run=params.run)
    sub = commands.add_parser("data", help="the image/mask generator's speed")
    sub.add_argument("--data_dir", default="", help="as main.py's --data_dir")
    sub.add_argument("--batches", type=positive_int, default=500)
    sub.add_argument("--repeats", type=positive_int, default=7)
    sub.set_defaults(run=data.run)
    sub = commands.add_parser("compare", help="train every model on the same budget, seeds")
    sub.add_argument("--models", type=model_list, default=list(model.MODELS))
    sub.add_argument("--seeds", type=int_list, default=[0, 1, 2])
    sub.add_argument("--steps", type=positive_int, default=500)
    sub.add_argument("--eval_every", type=positive_int, default=50,
                     help=f"curve points, for time to foreground IoU {TARGET_IOU}")
    sub.add_argument("--data_dir", default="",
                     help="MNIST/CIFAR-10 folder (default: main.py's own default)")
    add_output(sub)
    sub.set_defaults(run=compare.run)
    sub = commands.add_parser("rotation", help="models trained upright or turned, scored "
                              "on turned digits")
    sub.add_argument("--models", type=model_list, default=list(model.MODELS))
    sub.add_argument("--seeds", type=int_list, default=[0, 1, 2])
    sub.add_argument("--classes", type=class_list, default=list(load_data.CLASS_COUNTS))
    sub.add_argument("--train_angles", type=limit_list, default=[0, 180],
                     help="T per training setting: digits turned in [-T, T]; 0 is upright")
    sub.add_argument("--angles", type=int_list, default=[0, 30, 60, 90, 135, 180],
                     help="test angles in degrees")
    sub.add_argument("--steps", type=positive_int, default=500)
    sub.add_argument("--eval_every", type=positive_int, default=50)
    sub.add_argument("--eval_images", type=positive_int, default=2000,
                     help="test scenes per angle")
    sub.add_argument("--only_finished", action="store_true",
                     help="train nothing: tabulate the runs already finished")
    sub.add_argument("--data_dir", default="",
                     help="MNIST/CIFAR-10 folder (default: main.py's own default)")
    add_output(sub)
    sub.set_defaults(run=rotation.run)
    sub = commands.add_parser("plots", help="the teaching pictures")
    sub.add_argument("--checkpoint", default=str(BENCH / "compare" / "cheb_seed0" / "model.keras"),
                     help="a trained cheb model whose filters to draw (examples if absent)")
    sub.add_argument("--data_dir", default="",
                     help="MNIST/CIFAR-10 folder for the regions picture (default: main.py's)")
    add_output(sub)
    sub.set_defaults(run=teaching.run)
    sub = commands.add_parser("folder", help="a folder of scenes: time to train, both paths' "
                              "scores, the reader's speed")
    sub.add_argument("--data_dir", default="", help="MNIST/CIFAR-10 folder the scenes come from")
    sub.add_argument("--pairs", type=positive_int, default=3000)
    sub.add_argument("--scene", type=positive_int, default=48, help="side of the pictures written")
    sub.add_argument("--canvas", type=positive_int, default=32, help="main.py's training crops")
    sub.add_argument("--digit_size", type=positive_int, default=20)
    sub.add_argument("--digits_per_image", type=positive_int, default=2)
    sub.add_argument("--steps", type=positive_int, default=500)
    sub.add_argument("--batch_size", type=positive_int, default=64)
    sub.add_argument("--model", default="", help="main.py's model (default: its own default)")
    sub.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                     help="main.py's augmentation of folders (off: a mirrored 2 reads as a 5)")
    sub.add_argument("--seed", type=int, default=0, help="draws the scenes")
    sub.add_argument("--groups", default="01234,56789",
                     help="the digits of each class after background, comma-separated: "
                          "012,345,6789 makes 4 classes")
    sub.add_argument("--border", type=int, default=0,
                     help="pixels round each mask's edge left unlabelled (255)")
    sub.add_argument("--main_args", default="",
                     help="more flags for main.py, in quotes: '--class_weights auto'")
    sub.add_argument("--repeats", type=positive_int, default=20)
    add_output(sub)
    sub.set_defaults(run=folder.run)
    for name, what, models, run in (
            ("steps", "training steps of models, interleaved", ["gcn", "regions"], steps.run),
            ("forward", "forward passes of models, eager and compiled, interleaved",
             ["unet", "gunet"], forward.run)):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("--models", type=model_list, default=models)
        sub.add_argument("--rounds", type=positive_int, default=8,
                         help="each times 4 batches per model")
        sub.add_argument("--data_dir", default="", help="MNIST/CIFAR-10 folder")
        if name == "steps":
            sub.add_argument("--keras_batch_norm", action="store_true",
                             help="also time each fused-batch-norm model on Keras's own layer")
        sub.set_defaults(run=run)
    sub = commands.add_parser("breakdown", help="where one default run's time goes; each "
                              "model's GFLOP/s against the machine's peak")
    sub.add_argument("--models", type=model_list,
                     default=["fcn", "unet", "unet_fused", "dgcn", "gunet"])
    sub.add_argument("--repeats", type=positive_int, default=3, help="default runs timed")
    sub.add_argument("--steps_timed", type=positive_int, default=20,
                     help="training steps timed per model for GFLOP/s")
    sub.add_argument("--data_dir", default="", help="MNIST/CIFAR-10 folder")
    sub.add_argument("main_flags", nargs=argparse.REMAINDER,
                     help="after --: main.py flags for the run timed (default: its defaults)")
    sub.set_defaults(run=breakdown.run)
    sub = commands.add_parser("time", help="time to quality: whole main.py runs, seeds in "
                              "turn, wall and CPU time, test score; a baseline checkout beside")
    sub.add_argument("--seeds", type=int_list, default=[0, 1, 2])
    sub.add_argument("--baseline", default="", help="another checkout whose main.py runs "
                     "the same flags in turn (e.g. a git worktree of an older commit)")
    sub.add_argument("--data_dir", default="", help="MNIST/CIFAR-10 folder")
    add_output(sub)
    sub.add_argument("main_flags", nargs=argparse.REMAINDER,
                     help="after --: main.py flags of both runs (default: its defaults)")
    sub.set_defaults(run=time_to_quality.run)
    sub = commands.add_parser("names", help="eleven classes' bound: digits named from their "
                              "true masks alone, and the mean IoU those names allow")
    sub.add_argument("--steps", type=int_list, default=[1000, 3000],
                     help="training budgets, in steps of 64; one row each")
    sub.add_argument("--input", choices=names.INPUTS, default="mask", help="what the namer "
                     "sees: the true mask alone, or the photo cropped around the digit")
    sub.add_argument("--seed", type=int, default=0, help="weights and training scenes")
    sub.add_argument("--eval_images", type=positive_int, default=2000,
                     help="test scenes, main.py's fixed test set")
    sub.add_argument("--data_dir", default="", help="MNIST/CIFAR-10 folder")
    add_output(sub)
    sub.set_defaults(run=names.run)
    sub = commands.add_parser("render", help="README.md and RESULTS.md's tables again, from "
                              "the published records")
    sub.set_defaults(run=render)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.began = time.perf_counter()  # what a record says the command takes
    try:
        args.run(args, TRIO)
    except (UsageError, DataError, FileError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, UsageError) else 1)  # as main.py does


if __name__ == "__main__":
    main()
