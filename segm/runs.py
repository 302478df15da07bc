"""Run folders: where each run lives, which is the latest, and what a folder holds.

Unless --out_dir names a folder, every training run gets a new one, im/train,
im/train2, im/train3, ... (as Ultralytics numbers runs/train), so running again never
touches an earlier run; the latest (the highest number holding a run) is what
--resume, --evaluate, --predict and --export use, and its pictures are copied into
im/ itself, where the edit-run-look loop looks.

A run folder holds model.keras (weights, optimizer, step), best.keras (the model
of the interval that scored best on the validation images), config.json (every
setting, the data as resolved), log.csv (a row per interval), metrics.json
(written last: it marks the run finished), eval_*.json, the pictures and, if asked
for, tensorboard/.
"""
import contextlib
import csv
import hashlib
import json
import shlex
import shutil
import signal
from pathlib import Path

from segm import files
from segm.errors import DataError, FileError, UsageError

RUNS = Path("im")  # the runs' home, from the folder you run in, as for every relative path
RUN_FILES = ("model.keras", "best.keras", "config.json", "log.csv", "metrics.json")
BEST = "val_miou"  # what picks best.keras: the mean IoU on the validation images
SHOWN = "latest.json"  # in RUNS: which run's pictures are copied there, and their names


def numbered(n, home=RUNS, stem="train"):
    """Folder n of home: train, train2, train3, ... (or stem, stem2, ...)."""
    return Path(home) / (stem if n == 1 else f"{stem}{n}")


def number_of(folder):
    """n for a run folder named train (1), train2, train3, ...; None for any other name."""
    name = Path(folder).name
    digits = name.removeprefix("train")
    if name == "train":
        return 1
    plain = digits.isdigit() and digits[0] != "0" and int(digits) >= 2
    return int(digits) if name != digits and plain else None


def latest(home=RUNS):
    """The highest-numbered folder of home that holds a run, or UsageError if none does."""
    held = [(number_of(p), p) for p in Path(home).glob("train*")
            if number_of(p) and p.is_dir() and state(p)]
    if not held:
        raise UsageError(f"{home} holds no run yet; train one with `python main.py`, or pass "
                         f"--out_dir (or --checkpoint) to name one")
    return max(held)[1]


def claim(home=RUNS, stem="train"):
    """A new empty folder, the first free number: made at once, so two runs never share one."""
    n = 1
    while True:
        folder = numbered(n, home, stem)
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            n += 1
        except OSError as error:
            raise FileError(files.describe_os_error(error, folder)) from None


def abandon(cfg):
    """After a stop before the first checkpoint, inside the run's lock: remove what the run
    wrote (its config.json, and in a folder it claimed its TensorBoard logs and the folder
    itself), so that no run without a saved step is left for --resume to fail on. Anything
    else is kept. Returns what became of the folder, to end the sentence that says so."""
    folder = Path(cfg.out_dir)
    try:
        if getattr(cfg, "wrote_config", False):
            (folder / "config.json").unlink(missing_ok=True)
        if getattr(cfg, "claimed", None) == cfg.out_dir:
            shutil.rmtree(folder / "tensorboard", ignore_errors=True)
            if {p.name for p in folder.iterdir()} <= {".lock"}:
                (folder / ".lock").unlink(missing_ok=True)
                folder.rmdir()
                return f"{folder} is removed"
    except OSError:
        pass
    return f"{folder} is kept" + ("" if state(folder) else ", with no run in it")


def show_pictures(folder, home=RUNS):
    """Copy a finished run's pictures into home, replacing the ones of the run shown before.

    Only copies listed in home/latest.json are ever removed: the run keeps its own.
    """
    record, pictures = Path(home) / SHOWN, sorted(p.name for p in Path(folder).glob("*.png"))
    for name in pictures:
        with files.atomic_write(Path(home) / name) as tmp:
            shutil.copyfile(Path(folder) / name, tmp)
    try:
        before = json.loads(record.read_text())["pictures"] if record.is_file() else []
    except (OSError, ValueError, KeyError, TypeError):
        before = []  # a record made unreadable by hand: the old copies stay, nothing is lost
    for name in set(before) - set(pictures):
        if Path(name).name == name and name.endswith(".png"):
            (Path(home) / name).unlink(missing_ok=True)
    write_json({"run": str(folder), "pictures": pictures}, record)


def state(folder):
    """None if folder holds no run, else "finished" or "interrupted"."""
    present = [name for name in RUN_FILES if (Path(folder) / name).exists()]
    if not present:
        return None
    return "finished" if "metrics.json" in present else "interrupted"


def saved_config(checkpoint):
    """The config.json written beside a checkpoint, or None."""
    path = Path(checkpoint).parent / "config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        raise DataError(f"{path} is not readable JSON; restore it, or pass the "
                        f"--checkpoint of a run that has one") from None


def write_json(obj, path):
    files.write_text(path, json.dumps(obj, indent=2) + "\n")


def continue_command(cfg):
    """The exact command that continues this run (in its own folder, even if a later one exists)."""
    argv = [a for a in cfg.argv if a != "--overwrite"]
    named = "out_dir" in cfg.given or cfg.out_dir is None
    return shlex.join(["python", "main.py", *argv, *([] if named else ["--out_dir",
                                                                       str(cfg.out_dir)]),
                       *([] if cfg.resume else ["--resume"])])


def describe_checkpoint(path):
    """Which model a file holds, in words: the last checkpoint, or the best on validation."""
    path = Path(path)
    if path.name == "best.keras":
        return f"{path} (the interval that scored best on the validation images)"
    best = path.with_name("best.keras")
    also = f"; {best} holds the one best on validation" if best.is_file() else ""
    return f"{path} (the last checkpoint{also})"


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C and SIGTERM wait until the block has run, then interrupt as usual."""
    caught = []
    held = {s: signal.signal(s, lambda number, frame: caught.append(number))
            for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)
        if caught:
            raise KeyboardInterrupt


def trim_log(log_path, epochs):
    """Keep the log's first `epochs` rows: on --resume, rows past the checkpoint are redone."""
    if Path(log_path).is_file():
        lines = Path(log_path).read_text().splitlines()
        files.write_text(log_path, "\n".join(lines[:1 + epochs]) + "\n")


def best_logged(log_path):
    """The best validation score in a run's log so far, or None."""
    if not Path(log_path).is_file():
        return None
    with open(log_path) as f:
        scores = [float(row[BEST]) for row in csv.DictReader(f) if row.get(BEST)]
    return max(scores, default=None)


def clear(folder, checkpoint):
    """--overwrite: the old run's files go, its scores and pictures too (another model's)."""
    old = ("eval_*.json", "samples_*.png", "learning_curves_*.png", "prediction_*.png",
           "confusion_*.png")
    for path in [checkpoint, *map(Path(folder).joinpath, RUN_FILES),
                 *(p for pattern in old for p in Path(folder).glob(pattern))]:
        path.unlink(missing_ok=True)
    shutil.rmtree(Path(folder) / "tensorboard", ignore_errors=True)


def evaluation_path(cfg, saved, datagen, data_settings):
    """Where --evaluate writes its scores: named for what it scored, so no score replaces
    another's. Any of data_settings that differs from the run's own (saved) is in the name,
    and another folder of the same name as the run's data gets a hash of its path."""
    data = Path(str(datagen.data_dir)).name if datagen.source != "synthetic" else "synthetic"
    here = str(Path(str(datagen.data_dir)).resolve()) if datagen.source != "synthetic" else ""
    if saved and saved.get("data_dir") not in ("", here) and Path(saved["data_dir"]).name == data:
        data += "_" + hashlib.sha1(here.encode()).hexdigest()[:6]
    other = "".join(f"_{name}{getattr(cfg, name):g}" for name in data_settings
                    if saved and name in saved and isinstance(saved[name], (int, float))
                    and name not in ("eval_images", "test_seed")
                    and getattr(cfg, name) != saved[name])
    which = "" if cfg.checkpoint.name == "model.keras" else f"_{cfg.checkpoint.stem}"
    return cfg.out_dir / (f"eval_{data}_{cfg.eval_images}_images_seed{cfg.test_seed}{other}"
                          f"{which}.json")


# ---- what a run's flags may do to its folder

def refuse_to_replace(cfg):
    """The run folder's state; a run or model already there is kept unless the flags say."""
    held = state(cfg.out_dir) if cfg.out_dir else None  # None: a new folder, not yet made
    if held and not (cfg.resume or cfg.overwrite):
        what = ("continue it with --resume" if held == "interrupted" else
                "train it further with --resume --steps N")
        raise UsageError(f"{cfg.out_dir} holds {'an' if held == 'interrupted' else 'a'} "
                         f"{held} run; {what}, replace it with --overwrite, or choose another "
                         f"--out_dir")
    if cfg.checkpoint and cfg.checkpoint.exists() and not (cfg.resume or cfg.overwrite):
        raise UsageError(f"{cfg.checkpoint} already holds a model; continue it with --resume, "
                         f"replace it with --overwrite, or choose another --checkpoint")
    return held


def check_resumable(cfg, start, finished):
    """UsageError unless a checkpoint at step `start` can train on to --steps; True if it
    has trained them all already (a run interrupted while it was being scored)."""
    if start >= cfg.steps and (finished or start > cfg.steps):
        raise UsageError(f"{cfg.checkpoint} has already trained {start} steps; pass a larger "
                         f"--steps to train on")
    if start % cfg.eval_every and start != cfg.steps:
        raise UsageError(f"{cfg.checkpoint} stopped at step {start}, not a multiple of "
                         f"--eval_every {cfg.eval_every}; resume with the run's --eval_every")
    return start == cfg.steps


def check_same_model(cfg, model, num_classes, canvas):
    """UsageError unless --resume's flags describe the model its checkpoint holds."""
    for name, value in {"model": model, "num_classes": num_classes, "canvas": canvas}.items():
        if getattr(cfg, name) != value:
            raise UsageError(f"{cfg.checkpoint} holds a run with --{name} {value}; "
                             f"resume it with --{name} {value}")


def settings_of(cfg, names):
    """The config's settings among names as JSON-ready values: what config.json records."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items() if k in names}
