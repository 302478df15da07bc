"""Flags over main.py's defaults: parsed, type-checked and range-checked once, before any work."""
import argparse
import difflib
import math
import sys
import tokenize
from pathlib import Path
from types import SimpleNamespace

from segm import layouts, masks, memory, runs
from segm.errors import DataError, UsageError

EXPORT_FORMATS = ("savedmodel", "onnx")  # --export's; ONNX needs requirements-onnx.txt

POSITIVE = ("batch_size", "steps", "eval_every", "eval_images", "canvas", "digit_size",
            "digits_per_image", "sample_rows", "learning_rate", "digit_scale_min",
            "worker_timeout")
NON_NEGATIVE = ("clip_norm", "weight_decay", "dice_weight", "seed", "test_seed", "cpu_devices")
MODES = ("resume", "evaluate", "predict", "export", "overwrite", "check_data")
# What the images and the test set are: a run's config.json fixes them for --evaluate.
DATA_SETTINGS = ("data_dir", "mask_map", "source", "num_classes", "canvas", "digit_size", "digits_per_image",
                 "digit_scale_min", "digit_scale_max", "digit_angle_min", "digit_angle_max",
                 "eval_images", "test_seed")
# The models that pool, and how often: each 2x2 pooling halves the side, so the canvas must
# be a multiple of 2 ** poolings.
POOLINGS = {"unet": 2, "hybrid": 2, "unet_fused": 3, "unet_fast": 3}
RESUME_MAY_CHANGE = ("steps", "strategy", "cpu_devices", "worker_timeout", "sample_rows")
# Peak memory, measured with /usr/bin/time on unet and dgcn (the largest) at 32 and 128 pixels:
# about 0.7 GB for TensorFlow itself, and up to 6 KB per training pixel for activations.
BASE_BYTES, BYTES_PER_TRAIN_PIXEL, BYTES_PER_STORED_PIXEL = 0.7e9, 8192, 16


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def comments_beside(script):
    """{lower-case name: comment} of a script's top-level UPPER_CASE constants: the comment
    on the constant's line, joined with the indented comment lines right below it."""
    comments, name, line_of_name = {}, None, None
    with tokenize.open(script) as f:
        for token in tokenize.generate_tokens(f.readline):
            row, column = token.start
            if token.type == tokenize.NAME and column == 0:
                name = token.string.lower() if token.string.isupper() else None
                line_of_name = row
            elif token.type == tokenize.COMMENT and name:
                text = token.string.lstrip("#").strip()
                if row == line_of_name:
                    comments[name] = text
                elif name in comments and column > 0:
                    comments[name] += " " + text
            elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT) \
                    and row != line_of_name:
                name = None  # anything but a comment ends the constant's explanation
    return comments


def parse_config(argv, defaults, choices, description, comments=None):
    """Flags over the defaults, type-checked and checked, into one config object.

    defaults, choices ({name: allowed values}) and comments (comments_beside) are
    main.py's, written there once; --help shows each flag's comment, default and choices.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _Parser(prog="main.py", description=description, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in defaults.items():
        shown = f"default: {default!r}" + (f"; one of {', '.join(map(str, choices[name]))}"
                                            if name in choices else "")
        text = f"{(comments or {}).get(name, '')} ({shown})".replace("%", "%%")
        if isinstance(default, bool):  # --augment / --no-augment
            parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction,
                                default=default, help=text)
        else:
            parser.add_argument(f"--{name}", type=type(default), default=default, help=text,
                                metavar=type(default).__name__.upper())
    parser.add_argument("--resume", action="store_true",
                        help="continue the latest run, or the one --out_dir names")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the latest run, or the one --out_dir names, with a new one")
    parser.add_argument("--evaluate", action="store_true", help="score the latest run's model again, on its own test data")
    parser.add_argument("--predict", metavar="IMAGE", help="segment a PNG/JPEG with a saved model")
    parser.add_argument("--check_data", action="store_true",
                        help="check --data_dir's images and masks, list every problem, draw a "
                             "few with their masks, and stop (exit 0: it can train, 1: not)")
    parser.add_argument("--export", metavar="DIR", type=Path,
                        help="write the run's model to a new folder, as --format says")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="savedmodel",
                        help="--export's format: a TensorFlow SavedModel, or ONNX (model.onnx; "
                             "pip install -r requirements-onnx.txt)")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = unknown[0].split("=")[0]
        close = difflib.get_close_matches(flag, [f"--{n}" for n in vars(args)], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UsageError(f"unknown flag {flag}; {hint}`python main.py --help` lists them all")
    given = {a[2:].split("=")[0].removeprefix("no-") for a in argv
             if a.startswith("--")} & set(defaults)
    # weights: the loss's class weights, known once the data is (losses.class_weights)
    cfg = SimpleNamespace(**vars(args), given=given, argv=argv, chief=True, choices=choices,
                          weights=None)
    # A resumed run's steps and interval are its own, known once adopt_saved_settings has
    # read its config.json; they are checked then.
    check_config(cfg, interval=not cfg.resume)
    return cfg


def check_config(cfg, interval=True):
    """Every value checked once, before any work: kinds, ranges, modes, paths and memory."""
    modes = [f"--{m}" for m in MODES if getattr(cfg, m)]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} exclude each other; give one of them")
    if cfg.format != "savedmodel" and not cfg.export:
        raise UsageError("--format chooses --export's format; give --export DIR with it")
    own = bool(cfg.data_dir) and layouts.is_folder(cfg.data_dir)  # images/ and masks/
    masks.parse_map(cfg.mask_map)
    if cfg.check_data and not cfg.data_dir:
        raise UsageError("--check_data checks a folder of your own; pass --data_dir with it")
    for name, allowed in cfg.choices.items():
        if name == "num_classes" and own:  # your own masks: 0..K-1, and 255 unlabelled
            allowed = range(2, 256)
            if cfg.num_classes not in allowed:
                raise UsageError(f"--num_classes must be 2 to 255 for a folder of your own "
                                 f"(255 marks unlabelled pixels), not {cfg.num_classes}")
        if getattr(cfg, name) not in allowed:
            raise UsageError(f"--{name} must be one of {', '.join(map(str, allowed))}, "
                             f"not {getattr(cfg, name)!r}")
    for name, value in vars(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{name} must be a finite number, not {value}")
    for name in POSITIVE:
        if getattr(cfg, name) <= 0:
            raise UsageError(f"--{name} must be positive, not {getattr(cfg, name)}")
    for name in NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise UsageError(f"--{name} must be zero or more, not {getattr(cfg, name)}")
    for name, most, why in (("sample_rows", 64, "would draw a picture too tall to look at"),
                            ("cpu_devices", 64, "is more logical devices than is useful")):
        if getattr(cfg, name) > most:
            raise UsageError(f"--{name} {getattr(cfg, name)} {why}; choose at most {most}")
    if interval:
        check_interval(cfg)
    poolings = POOLINGS.get(cfg.model, 0)
    if cfg.canvas % 2 ** poolings:
        raise UsageError(f"{cfg.model} pools {poolings} times, so --canvas must be a multiple "
                         f"of {2 ** poolings}, not {cfg.canvas}")
    if cfg.cpu_devices > 1 and cfg.strategy != "mirrored":
        raise UsageError("--cpu_devices splits the CPU for --strategy mirrored only; a "
                         "multiworker cluster uses each machine's GPUs, or one CPU each")
    for low, high in (("digit_scale_min", "digit_scale_max"),
                      ("digit_angle_min", "digit_angle_max")):
        if getattr(cfg, high) < getattr(cfg, low):
            raise UsageError(f"--{high} must be at least --{low}")
    if not own and round(cfg.digit_scale_max * cfg.digit_size) > cfg.canvas:
        raise UsageError(f"digits of up to {round(cfg.digit_scale_max * cfg.digit_size)} pixels "
                         f"do not fit a {cfg.canvas}-pixel canvas; lower --digit_size or "
                         f"--digit_scale_max, or raise --canvas")
    if own and cfg.source != "auto":
        raise UsageError(f"{cfg.data_dir} holds your own images and masks, not the "
                         f"{cfg.source} digits --source {cfg.source} names; leave --source out")
    if cfg.tensorboard and cfg.strategy == "multiworker":
        raise UsageError("--tensorboard works with the default and mirrored strategies; the "
                         "multiworker loop writes log.csv only")
    if cfg.data_dir and cfg.source == "synthetic":
        raise UsageError("--source synthetic draws no files, so --data_dir would be ignored; "
                         "give one or the other")
    check_paths(cfg)


def check_interval(cfg):
    """STEPS a multiple of EVAL_EVERY, the checkpoint interval; with STEPS edited alone, the
    interval nearest EVAL_EVERY that divides it."""
    cfg.eval_every = min(cfg.eval_every, cfg.steps)
    if cfg.steps % cfg.eval_every and not cfg.resume and "eval_every" not in cfg.given:
        # STEPS edited, EVAL_EVERY left as it was: the interval nearest it that divides STEPS
        # (a resumed run keeps its own interval, and a flag is taken as meant)
        near = min((d for d in range(1, cfg.steps + 1) if cfg.steps % d == 0),
                   key=lambda d: (abs(d - cfg.eval_every), d))
        print(f"note: a checkpoint every {near} steps, the interval nearest EVAL_EVERY "
              f"({cfg.eval_every}) that divides STEPS ({cfg.steps})")
        cfg.eval_every = near
    if cfg.steps % cfg.eval_every:
        raise UsageError(f"--steps ({cfg.steps}) must be a multiple of --eval_every "
                         f"({cfg.eval_every}), the checkpoint interval")


def check_training_memory(cfg, stored_images):
    """UsageError unless training, with stored_images held for scoring, fits in memory now."""
    check_memory("training", BASE_BYTES + cfg.batch_size * cfg.canvas ** 2 * (
        BYTES_PER_TRAIN_PIXEL + stored_images / cfg.batch_size * BYTES_PER_STORED_PIXEL),
        "lower --batch_size, --canvas or --eval_images")


def check_paths(cfg):
    """The run folder and the model file: names that can work, and a model where one is read.

    With no --out_dir, a new training run's folder is None here: main.py claims the next
    im/trainN once the data is found. Every other mode takes the latest run (runs.latest).
    """
    reading = cfg.evaluate or cfg.predict or cfg.export
    if cfg.out_dir is not None and not str(cfg.out_dir).strip():
        if reading and "checkpoint" in cfg.given:
            cfg.out_dir = Path(cfg.checkpoint).parent  # a model's scores and pictures go beside it
        elif reading or cfg.resume or cfg.overwrite:
            cfg.out_dir = runs.latest()
        else:
            cfg.out_dir = None
    cfg.out_dir = cfg.out_dir if cfg.out_dir is None else Path(cfg.out_dir)
    if cfg.checkpoint is not None and str(cfg.checkpoint).strip():
        cfg.checkpoint = Path(cfg.checkpoint)
    else:
        cfg.checkpoint = None if cfg.out_dir is None else cfg.out_dir / "model.keras"
    if cfg.out_dir is not None and cfg.out_dir.exists() and not cfg.out_dir.is_dir():
        raise UsageError(f"--out_dir {cfg.out_dir} is a file; name a folder")
    wrong = cfg.checkpoint is not None and cfg.checkpoint.suffix != ".keras"
    if wrong or (cfg.checkpoint is not None and cfg.checkpoint.is_dir()):
        raise UsageError(f"--checkpoint {cfg.checkpoint} must name a .keras file, the format "
                         f"Keras saves and loads whole models in")
    if (reading or cfg.resume) and not cfg.checkpoint.is_file():
        raise UsageError(f"no saved model at {cfg.checkpoint}; train one with `python main.py` "
                         f"or pass --checkpoint PATH")
    if cfg.export and cfg.export.exists():
        raise UsageError(f"--export {cfg.export} already exists; name a new folder, so that no "
                         f"exported model is replaced")


def check_memory(what, needed, advice):
    """UsageError with the figures if `needed` bytes exceed the memory available now; where
    that cannot be measured, a note, and the check is skipped."""
    available = memory.available()
    if available is None:
        print(f"note: this system does not say how much memory is free, so {what} starts "
              f"without checking that about {needed / 1e9:,.1f} GB fit")
    elif needed > available:
        raise UsageError(f"{what} needs about {needed / 1e9:,.1f} GB of memory and "
                         f"{available / 1e9:,.1f} GB are free; {advice}")


def adopt_saved_settings(cfg, saved, mode, defaults):
    """Take the run's own values from its config.json, where no flag says otherwise.

    For --evaluate, a flag that differs is kept and said aloud; for --resume it is
    refused unless it leaves the training unchanged (more steps, other devices).
    """
    where = cfg.data_dir if "data_dir" in cfg.given else saved.get("data_dir", "")
    if saved.get("source") == "folder" and not layouts.is_folder(where):
        raise DataError(f"{where} does not hold the run's images/ and masks/; pass "
                        f"--data_dir where the folder is now")
    names = DATA_SETTINGS if mode == "evaluate" else [n for n in saved if n in defaults
                                                      and n not in ("out_dir", "checkpoint")]
    if ("data_dir" in cfg.given and "source" not in cfg.given) or saved.get("source") == "folder":
        names = [n for n in names if n != "source"]  # a named folder means what it holds
    if "source" in cfg.given and cfg.source == "synthetic":
        names = [n for n in names if n != "data_dir"]  # it reads no folder, the run's or other
    for name in names:
        if name not in saved:
            continue
        try:
            value = type(defaults[name])(saved[name])
        except (TypeError, ValueError):
            raise DataError(f"the run's config.json holds {saved[name]!r} for {name}, which "
                        f"is not a value of that setting; restore the file") from None
        if name not in cfg.given:
            setattr(cfg, name, value)
        elif name == "data_dir" and (Path(cfg.data_dir).resolve() == Path(value).resolve() or (
                saved.get("source") == "folder" and mode == "resume")):
            continue  # the same folder however spelt, or your own folder where it is now
        elif getattr(cfg, name) != value and mode == "evaluate":
            print(f"note: --{name} {getattr(cfg, name)} differs from the run's {value!r}, "
                  f"so this score is not on the run's own test set")
        elif getattr(cfg, name) != value and name not in RESUME_MAY_CHANGE:
            raise UsageError(f"--{name} {getattr(cfg, name)} differs from the run's {value!r}; "
                             f"resume without it, or start anew with --overwrite")
    check_config(cfg)
