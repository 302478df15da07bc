"""What several subcommands share: the scripts handed down, timing, and main.py runs."""
import csv
import json
import re
import statistics
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from segm import files, records

BENCH = Path("im") / "benchmarks"  # every subcommand's output; git ignores it (see --publish)
TARGET_IOU = 0.9                  # "time to reach foreground IoU 0.90" in the comparison
# The seed repository's protocol, pinned whatever main.py's default recipe becomes, so
# every model's published row stays comparable (steps and interval are flags of their own).
PROTOCOL = {"batch_size": 64, "learning_rate": 3e-3, "lr_floor": 0.01,
            "ema": 0.0, "precision": "float32", "clip_norm": 1.0, "weight_decay": 0.0,
            "dice_weight": 1.0}


class Trio(NamedTuple):
    """The scripts above segm/, which benchmark.py imports and hands down."""
    main: ModuleType
    model: ModuleType
    load_data: ModuleType
    main_py: Path  # main.py's own file, for runs in a process of their own


def figure_name(stem, args):
    """One figure per command: stem and the command's words after the subcommand, paths left
    out (a baseline checkout's place names no figure), e.g. time_seeds_0_1_baseline."""
    words = [word for word in command_line(args).split()[3:] if "/" not in word]
    return stem + re.sub(r"[^0-9A-Za-z]+", "_", " ".join(words)).rstrip("_")


def command_line(args):
    """The command that made a table, as a user would type it: where the data and the output
    lie (--data_dir, --out_dir) and --publish change no figure, so they are left out."""
    words, skip = [], False
    for word in args.argv:
        if skip or word == "--publish":
            skip = False
            continue
        if word in ("--data_dir", "--out_dir"):
            skip = True
        elif not word.startswith(("--data_dir=", "--out_dir=")):
            words.append(word)
    return "python benchmark.py " + shlex.join(words)


def record(args, name, columns, rows, caption="", headline=None, section="", pictures=(),
           seconds=None):
    """Write the figure's record into --out_dir/records; with --publish, also into im/figures
    (pictures too) and render README.md and RESULTS.md again (see segm/records.py). seconds:
    what the whole command takes, when runs it reused make it more than this process took."""
    if seconds is None:
        seconds = time.perf_counter() - args.began
    made = records.make(name, command_line(args), columns, rows, caption, headline, section,
                        seconds)
    records.write(made, args.out_dir)
    if getattr(args, "publish", False):
        records.publish(args.out_dir, [name], pictures)


def min_time(work, repeats):
    """The fastest of repeats timed calls of work, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return best


def print_medians(args, times, what):
    """A markdown table of median seconds per batch of 64, with the command that made it."""
    print(f"`{command_line(args)}` (batches of 64, medians of "
          f"{4 * args.rounds} {what} each)\n")
    print("| what | ms per batch | ms per image | images/s |\n|---|---:|---:|---:|")
    for name, taken in times.items():
        median = statistics.median(taken)
        print(f"| {name} | {1000 * median:.0f} | {1000 * median / 64:.2f} | {64 / median:.0f} |")


def train_once(name, seed, folder, args, main_py, settings=None):
    """One main.py run in its own process, so its peak memory is its own; reused if done.

    main_py: the path of main.py. settings: further main.py settings, {name: value}, that
    the run is made with.
    """
    settings = {"model": name, **PROTOCOL, **(settings or {})}
    command = [sys.executable, str(main_py), "--seed", str(seed),
               "--steps", str(args.steps), "--eval_every", str(args.eval_every),
               "--out_dir", str(folder), *(["--data_dir", args.data_dir] if args.data_dir else []),
               *(f"--{key}={value}" for key, value in settings.items())]
    folder.mkdir(parents=True, exist_ok=True)
    # An interrupted comparison picks up where it stopped: finished runs are kept
    # (delete the run folders to start afresh); a run made with other settings is replaced.
    if not same_run(folder, args, settings):
        began = time.perf_counter()
        with open(folder / "output.txt", "w") as log:  # not a tty: plain progress lines
            done = subprocess.run(command + ["--overwrite"], stdout=log,
                                  stderr=subprocess.STDOUT)
        if done.returncode:
            sys.exit(f"error: {name} seed {seed} failed; see {folder / 'output.txt'}")
        files.write_text(folder / "command_seconds.txt", f"{time.perf_counter() - began:.1f}\n")
    metrics = json.loads((folder / "metrics.json").read_text())
    timed = folder / "command_seconds.txt"  # the whole command, start-up to the last picture
    metrics["command_seconds"] = float(timed.read_text()) if timed.is_file() else None
    with open(folder / "log.csv") as f:
        curve = [(int(r["epoch"]) + 1) * args.eval_every for r in csv.DictReader(f)
                 if float(r.get("val_fg_iou", "nan")) >= TARGET_IOU]  # 11 classes: not logged
    metrics["seconds_to_target"] = (metrics["train_seconds"] * curve[0] / args.steps
                                    if curve else None)
    return metrics


def same_run(folder, args, settings=None):
    """True if folder holds a finished run made with these steps, interval, data and settings."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return ((folder / "metrics.json").is_file() and config["steps"] == args.steps
            and config["eval_every"] == args.eval_every
            and (not args.data_dir or config["data_dir"] == str(Path(args.data_dir).resolve()))
            # A run from before a setting existed was made with the protocol's value of it.
            and all(config.get(key, PROTOCOL.get(key)) == value
                    for key, value in (settings or {}).items()))
