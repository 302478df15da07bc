"""Train, evaluate and apply a segmentation model on MNIST digits over CIFAR-10 photos.

    python main.py                          train, score on the test set, pictures in im/
    python main.py --model dgcn --steps 1000   every constant below is a lower-case flag
    python main.py --resume                 continue an interrupted run in --out_dir
    python main.py --evaluate               score the run in --out_dir again, with its own data
    python main.py --predict photo.jpg      segment your own picture with the run's model
"""
import argparse
import contextlib
import json
import math
import os
import resource
import shlex
import signal
import sys
import time
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import distributed
import files
import load_data
import model as model_lib
import plots
from model import keras, tf  # model.py imports TensorFlow quietly

# data
DATA_DIR = ""              # folder with mnist/ and cifar/; "" = data/ beside main.py, if it has them
SOURCE = "auto"            # auto | real | synthetic (font digits: a fresh clone needs no download)
NUM_CLASSES = 2            # 2: background/digit; 11: background + which digit (label + 1)
CANVAS = 32                # image side in pixels; 32 is the seed repository's protocol
DIGIT_SIZE = 14            # MNIST digits are shrunk from 28x28 to this
DIGITS_PER_IMAGE = 1       # more digits make busier scenes (later digits drawn on top)
DIGIT_SCALE_MIN = 1.0      # digits resized by a random factor in [min, max]; 1, 1 keeps DIGIT_SIZE
DIGIT_SCALE_MAX = 1.0
# model
MODEL = "unet"             # fcn | unet | gcn | cheb | dgcn | hybrid (see model.py)
# training
BATCH_SIZE = 64            # global batch, split evenly across replicas
STEPS = 500                # optimizer steps; 500 x 64 is the seed repository's budget
LEARNING_RATE = 3e-3       # Adam's peak rate, reached after a short warm-up, then cosine-decayed
CLIP_NORM = 1.0            # per-weight gradient clipping (0: off): one bad batch cannot wreck a run
DICE_WEIGHT = 1.0          # digits cover ~4% of pixels; soft Dice keeps them from being ignored
EVAL_EVERY = 100           # steps between checkpoints, log rows and learning-curve points
SEED = 0                   # weights and training data; the same seed gives the same numbers
STRATEGY = "default"       # default | mirrored (all GPUs, or CPU_DEVICES CPUs) | multiworker
CPU_DEVICES = 0            # >1 splits the CPU into that many logical devices for `mirrored`
WORKER_TIMEOUT = 300.0     # seconds a multiworker task waits for its peers before giving up
# output
OUT_DIR = "im"             # the run folder: model, config, log, metrics and pictures
CHECKPOINT = ""            # model file; empty means {OUT_DIR}/model.keras
EVAL_IMAGES = 2000         # size of the fixed test set every model is scored on
TEST_SEED = 2024           # draws the test set: the same images whatever SEED or MODEL is
SAMPLE_ROWS = 6            # examples in samples_{model}.png

HYPERPARAMETERS = {name.lower(): value for name, value in dict(globals()).items()
                   if name.isupper()}
CHOICES = {"source": load_data.SOURCES, "num_classes": (2, 11), "model": model_lib.MODELS,
           "strategy": ("default", "mirrored", "multiworker")}
POSITIVE = ("batch_size", "steps", "eval_every", "eval_images", "canvas", "digit_size",
            "digits_per_image", "sample_rows", "learning_rate", "digit_scale_min",
            "worker_timeout")
NON_NEGATIVE = ("clip_norm", "dice_weight", "seed", "test_seed", "cpu_devices")
# What the images and the test set are: a run's config.json fixes them for --evaluate.
DATA_SETTINGS = ("data_dir", "source", "num_classes", "canvas", "digit_size", "digits_per_image",
                 "digit_scale_min", "digit_scale_max", "eval_images", "test_seed")
MODES = ("resume", "evaluate", "predict", "overwrite")
RUN_FILES = ("model.keras", "config.json", "log.csv", "metrics.json")
RESUME_MAY_CHANGE = ("steps", "strategy", "cpu_devices", "worker_timeout", "sample_rows")
# Peak memory, measured with /usr/bin/time on unet and dgcn (the largest) at 32 and 128 pixels:
# about 0.7 GB for TensorFlow itself, and up to 6 KB per training pixel for activations.
BASE_BYTES, BYTES_PER_TRAIN_PIXEL, BYTES_PER_STORED_PIXEL = 0.7e9, 8192, 16


class UsageError(Exception):
    """A bad flag or value: reported as one sentence, exit status 2."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during training; carries the steps done and the steps saved."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_config(argv=None):
    """Flags over the defaults above, type-checked, into one config object."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _Parser(prog="main.py", description=__doc__.split("\n")[0], allow_abbrev=False)
    for name, default in HYPERPARAMETERS.items():
        parser.add_argument(f"--{name}", type=type(default), default=default,
                            metavar=type(default).__name__.upper())
    parser.add_argument("--resume", action="store_true", help="continue the run in --out_dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --out_dir with a new one")
    parser.add_argument("--evaluate", action="store_true", help="score a saved model only")
    parser.add_argument("--predict", metavar="IMAGE", help="segment a PNG/JPEG with a saved model")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        import difflib
        flag = unknown[0].split("=")[0]
        close = difflib.get_close_matches(flag, [f"--{n}" for n in vars(args)], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UsageError(f"unknown flag {flag}; {hint}`python main.py --help` lists them all")
    given = {a[2:].split("=")[0] for a in argv if a.startswith("--")} & set(HYPERPARAMETERS)
    cfg = SimpleNamespace(**vars(args), given=given, argv=argv, chief=True)
    check_config(cfg)
    return cfg


def check_config(cfg):
    """Every value checked once, before any work: kinds, ranges, modes, paths and memory."""
    modes = [f"--{m}" for m in MODES if getattr(cfg, m)]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} exclude each other; give one of them")
    for name, allowed in CHOICES.items():
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
    cfg.eval_every = min(cfg.eval_every, cfg.steps)
    if cfg.steps % cfg.eval_every:
        raise UsageError(f"--steps ({cfg.steps}) must be a multiple of --eval_every "
                         f"({cfg.eval_every}), the checkpoint interval")
    if cfg.model in ("unet", "hybrid") and cfg.canvas % 4:
        raise UsageError(f"{cfg.model} pools twice, so --canvas must be a multiple of 4, "
                         f"not {cfg.canvas}")
    if cfg.cpu_devices > 1 and cfg.strategy != "mirrored":
        raise UsageError("--cpu_devices splits the CPU for --strategy mirrored only; a "
                         "multiworker cluster uses each machine's GPUs, or one CPU each")
    if cfg.digit_scale_max < cfg.digit_scale_min:
        raise UsageError("--digit_scale_max must be at least --digit_scale_min")
    if round(cfg.digit_scale_max * cfg.digit_size) > cfg.canvas:
        raise UsageError(f"digits of up to {round(cfg.digit_scale_max * cfg.digit_size)} pixels "
                         f"do not fit a {cfg.canvas}-pixel canvas; lower --digit_size or "
                         f"--digit_scale_max, or raise --canvas")
    if cfg.data_dir and cfg.source == "synthetic":
        raise UsageError("--source synthetic draws no files, so --data_dir would be ignored; "
                         "give one or the other")
    if not str(cfg.out_dir).strip():
        raise UsageError("--out_dir is empty; name the folder for the run")
    if cfg.sample_rows > 64:
        raise UsageError(f"--sample_rows {cfg.sample_rows} would draw a picture too tall to "
                         f"look at; choose at most 64")
    if cfg.cpu_devices > 64:
        raise UsageError(f"--cpu_devices {cfg.cpu_devices} is more logical devices than "
                         f"is useful; choose at most 64")
    cfg.out_dir = Path(cfg.out_dir)
    cfg.checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else cfg.out_dir / "model.keras"
    if cfg.out_dir.exists() and not cfg.out_dir.is_dir():
        raise UsageError(f"--out_dir {cfg.out_dir} is a file; name a folder")
    if cfg.checkpoint.is_dir() or cfg.checkpoint.suffix != ".keras":
        raise UsageError(f"--checkpoint {cfg.checkpoint} must name a .keras file, the format "
                         f"Keras saves and loads whole models in")
    if (cfg.evaluate or cfg.predict or cfg.resume) and not cfg.checkpoint.is_file():
        raise UsageError(f"no saved model at {cfg.checkpoint}; train one with `python main.py` "
                         f"or pass --checkpoint PATH")
    if not (cfg.evaluate or cfg.predict):
        check_memory("training", BASE_BYTES + cfg.batch_size * cfg.canvas ** 2 * (
            BYTES_PER_TRAIN_PIXEL + (cfg.eval_images + 512) / cfg.batch_size
            * BYTES_PER_STORED_PIXEL), "lower --batch_size, --canvas or --eval_images")


def check_memory(what, needed, advice):
    """UsageError with the figures if `needed` bytes exceed the memory available now."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/meminfo") if os.path.exists("/proc/meminfo") else open(os.devnull) as f:
        for line in f:  # MemAvailable counts reclaimable caches too, as the kernel would
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    if needed > available:
        raise UsageError(f"{what} needs about {needed / 1e9:,.1f} GB of memory and "
                         f"{available / 1e9:,.1f} GB are free; {advice}")


# ---- data -------------------------------------------------------------------

def make_datagen(cfg, seed=None):
    """The image/mask generator the config describes; seed defaults to the training SEED."""
    scale = None
    if (cfg.digit_scale_min, cfg.digit_scale_max) != (1.0, 1.0):
        scale = (cfg.digit_scale_min, cfg.digit_scale_max)
    return load_data.Datagen(cfg.data_dir or None, canvas=cfg.canvas, digit_size=cfg.digit_size,
                             digits_per_image=cfg.digits_per_image, num_classes=cfg.num_classes,
                             seed=cfg.seed if seed is None else seed, source=cfg.source,
                             digit_scale=scale)


def make_dataset(datagen, batch_size, start_step=0, replicas=(0, 1, 1)):
    """Training batches as a prefetched tf.data stream; batch k depends only on (SEED, k).

    replicas = (first, local, total) makes the stream of one worker of several:
    for each step, the slices of global batch k that its replicas first .. first +
    local - 1 of total train on, one after another.
    """
    first, local, total = replicas
    share, c = batch_size // total, datagen.canvas

    def piece(index):
        step, replica = divmod(int(index), local)
        rows = slice((first + replica) * share, (first + replica + 1) * share)
        return datagen.sample(batch_size, split="train", step=step, rows=rows)

    # Indexing batches by step keeps the stream identical however often it is
    # restarted: on --resume, and when tf.distribute re-creates the iterator.
    dataset = tf.data.Dataset.range(start_step * local, 2**62).map(
        lambda index: tf.numpy_function(piece, [index], (tf.float32, tf.int32)))
    dataset = dataset.map(lambda x, y: (tf.ensure_shape(x, (share, c, c, 3)),
                                        tf.ensure_shape(y, (share, c, c))))
    return dataset.prefetch(tf.data.AUTOTUNE)


# ---- the run folder -----------------------------------------------------------

def run_state(folder):
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
        raise load_data.DataError(f"{path} is not readable JSON; restore it, or pass the "
                                  f"--checkpoint of a run that has one") from None


def settings_of(cfg):
    """The config as JSON-ready values: what config.json records."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()
            if k in HYPERPARAMETERS}


def adopt_saved_settings(cfg, saved, mode):
    """Take the run's own values from its config.json, where no flag says otherwise.

    For --evaluate, a flag that differs is kept and said aloud; for --resume it is
    refused unless it leaves the training unchanged (more steps, other devices).
    """
    names = DATA_SETTINGS if mode == "evaluate" else [n for n in saved if n in HYPERPARAMETERS
                                                      and n not in ("out_dir", "checkpoint")]
    if "data_dir" in cfg.given and "source" not in cfg.given:
        names = [n for n in names if n != "source"]  # a named folder means its real files
    for name in names:
        if name not in saved:
            continue
        try:
            value = type(HYPERPARAMETERS[name])(saved[name])
        except (TypeError, ValueError):
            raise load_data.DataError(f"the run's config.json holds {saved[name]!r} for "
                                      f"{name}, which is not a value of that setting; "
                                      f"restore the file") from None
        if name not in cfg.given:
            setattr(cfg, name, value)
        elif getattr(cfg, name) != value and mode == "evaluate":
            print(f"note: --{name} {getattr(cfg, name)} differs from the run's {value!r}, "
                  f"so this score is not on the run's own test set")
        elif getattr(cfg, name) != value and name not in RESUME_MAY_CHANGE:
            raise UsageError(f"--{name} {getattr(cfg, name)} differs from the run's {value!r}; "
                             f"resume without it, or start anew with --overwrite")
    check_config(cfg)


def continue_command(cfg):
    """The exact command that continues this run."""
    argv = [a for a in cfg.argv if a != "--overwrite"]
    return shlex.join(["python", "main.py", *argv, *([] if cfg.resume else ["--resume"])])


def load_checkpoint(path):
    """A saved model of this project, or one clear sentence about why it cannot be used."""
    try:
        model = keras.saving.load_model(path)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, zipfile.BadZipFile) as e:
        raise load_data.DataError(f"{path} is not a model this project saved "
                                  f"({type(e).__name__}); pass the model.keras that "
                                  f"`python main.py` wrote") from None
    shape_in, shape_out = model.input_shape, model.output_shape
    if not (model.name in model_lib.MODELS and isinstance(shape_in, tuple) and len(shape_in) == 4
            and shape_in[-1] == 3 and tuple(shape_out[:3]) == tuple(shape_in[:3])
            and shape_out[-1] in CHOICES["num_classes"]):
        raise load_data.DataError(f"{path} is a Keras model but not one of this project's "
                                  f"segmentation models ({', '.join(model_lib.MODELS)}); pass "
                                  f"a model.keras that `python main.py` wrote")
    return model


# ---- training -----------------------------------------------------------------

def compile_model(model, cfg):
    """Adam with warm-up, cosine decay and clipping; loss and training metrics."""
    warmup = max(1, cfg.steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate / 10, decay_steps=max(1, cfg.steps - warmup), alpha=0.01,
        warmup_target=cfg.learning_rate, warmup_steps=warmup)
    metrics = [keras.metrics.MeanIoU(cfg.num_classes, sparse_y_pred=False, name="miou")]
    if cfg.num_classes == 2:
        metrics.insert(0, keras.metrics.IoU(2, [1], sparse_y_pred=False, name="fg_iou"))
    loss = model_lib.SegmentationLoss(cfg.num_classes, cfg.dice_weight)
    optimizer = keras.optimizers.Adam(schedule, clipnorm=cfg.clip_norm or None)
    model.compile(optimizer, loss, metrics=metrics)


class NanGuard(keras.callbacks.Callback):
    """At a non-finite loss or weight, put back the interval's first weights and stop."""

    def on_epoch_begin(self, epoch, logs=None):
        self.good_step = int(self.model.optimizer.iterations.numpy())
        self.good = [v.numpy() for v in self._variables()]

    def on_train_batch_end(self, batch, logs=None):
        # The weights are checked too: oneDNN's ReLU maps NaN to 0, so a NaN
        # batch can poison the weights while the reported loss stays finite.
        if np.isfinite(logs["loss"]) and all(np.isfinite(w).all()
                                             for w in self.model.get_weights()):
            return
        step = int(self.model.optimizer.iterations.numpy())
        for variable, value in zip(self._variables(), self.good):
            variable.assign(value)
        self.model.stop_training = True
        print(f"\nwarning: the loss or weights became NaN at step {step}; training stopped "
              f"and the weights of step {self.good_step} were restored")

    def _variables(self):
        return self.model.weights + self.model.optimizer.variables


class RunWriter(keras.callbacks.Callback):
    """At each interval's end: the checkpoint, then the log with that interval's row.

    Both files are rewritten whole and atomically (keras.callbacks.CSVLogger appends in
    place, so a crash could leave half a row), and the log never runs ahead of the model.
    """

    def __init__(self, checkpoint, log_path):
        super().__init__()
        self.checkpoint, self.log_path = Path(checkpoint), Path(log_path)
        self.saved_step = None

    def on_epoch_end(self, epoch, logs=None):
        save_model(self.model, self.checkpoint)
        self.saved_step = int(self.model.optimizer.iterations.numpy())
        keys = sorted(logs)
        lines = self.log_path.read_text().splitlines() if self.log_path.is_file() else []
        lines = lines or [",".join(["epoch", *keys])]
        lines.append(",".join([str(epoch), *(repr(float(logs[k])) for k in keys)]))
        files.write_text(self.log_path, "\n".join(lines) + "\n")


def save_model(model, path):
    """The whole model (weights, optimizer, step), replacing path only when complete."""
    with files.atomic_write(path) as tmp:
        model.save(tmp)


def trim_log(log_path, epochs):
    """Keep the log's first `epochs` rows: on --resume, rows past the checkpoint are redone."""
    if log_path.is_file():
        lines = log_path.read_text().splitlines()
        files.write_text(log_path, "\n".join(lines[:1 + epochs]) + "\n")


def train(cfg, strategy, datagen, valid, finished=False):
    """Fit (or resume) the model; returns it, the training time and the steps it took."""
    with strategy.scope():
        if cfg.resume:
            model = load_checkpoint(cfg.checkpoint)
            saved = {"model": model.name, "num_classes": model.output_shape[-1],
                     "canvas": model.input_shape[1]}
            for name, value in saved.items():
                if getattr(cfg, name) != value:
                    raise UsageError(f"{cfg.checkpoint} holds a run with --{name} {value}; "
                                     f"resume it with --{name} {value}")
        else:
            keras.utils.set_random_seed(cfg.seed)
            model = model_lib.build_model(cfg.model, cfg.num_classes, cfg.canvas, cfg.canvas)
            compile_model(model, cfg)
    for layer in model.layers:
        # Batch statistics over the global batch, not each replica's share: the
        # same flags then train the same model on any number of replicas.
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = strategy.num_replicas_in_sync > 1
    start = int(model.optimizer.iterations.numpy())
    if start >= cfg.steps and (finished or start > cfg.steps):
        raise UsageError(f"{cfg.checkpoint} has already trained {start} steps; pass a larger "
                         f"--steps to train on")
    if start == cfg.steps:  # interrupted while scoring: score it now
        print(f"{cfg.checkpoint} has trained all {start} steps; scoring it")
        return model, 0.0, 0
    if start % cfg.eval_every:
        raise UsageError(f"{cfg.checkpoint} stopped at step {start}, not a multiple of "
                         f"--eval_every {cfg.eval_every}; resume with the run's --eval_every")
    if start:
        # The optimizer, its learning-rate schedule included, comes back as saved.
        print(f"resuming {cfg.checkpoint} ({model.name}) at step {start}")
    print(f"training {model.name}: {model.count_params():,} parameters, "
          f"{cfg.steps} steps of {cfg.batch_size} images")
    writer = RunWriter(cfg.checkpoint, cfg.out_dir / "log.csv")
    callbacks = [NanGuard()] + ([writer] if cfg.chief else [])
    if cfg.chief:
        trim_log(writer.log_path, start // cfg.eval_every)
    began = time.perf_counter()
    try:
        if cfg.strategy == "multiworker":
            def validate(m):
                confusion, loss = confusion_matrix(m, *valid, cfg.num_classes, cfg.batch_size,
                                                   m.loss)
                return loss, confusion

            distributed.fit_multiworker(
                model, strategy,
                lambda *replicas: make_dataset(datagen, cfg.batch_size, start, replicas),
                validate, lambda loss, cm, prefix: interval_logs(loss, cm, cfg.num_classes,
                                                                 prefix),
                callbacks, cfg.steps, cfg.eval_every, start, cfg.batch_size)
        else:
            model.fit(make_dataset(datagen, cfg.batch_size, start),
                      epochs=cfg.steps // cfg.eval_every, steps_per_epoch=cfg.eval_every,
                      initial_epoch=start // cfg.eval_every, validation_data=valid,
                      validation_batch_size=cfg.batch_size, shuffle=False, callbacks=callbacks,
                      verbose="auto" if sys.stdout.isatty() else 2)
    except KeyboardInterrupt:
        raise Interrupted(int(model.optimizer.iterations.numpy()),
                          writer.saved_step if writer.saved_step is not None else start) from None
    seconds = time.perf_counter() - began
    if cfg.chief:
        save_model(model, cfg.checkpoint)
    return model, seconds, int(model.optimizer.iterations.numpy()) - start


# ---- scoring --------------------------------------------------------------------

def predict_logits(model, images, batch_size=64):
    """Inference mode (no dropout, batch-norm running statistics), batch by batch."""
    return np.concatenate([model(images[i:i + batch_size], training=False).numpy()
                           for i in range(0, len(images), batch_size)])


def confusion_matrix(model, images, masks, num_classes, batch_size=64, loss_fn=None):
    """One Keras MeanIoU confusion matrix over all the images (rows = truth) and, with
    loss_fn, the mean loss per image from the same forward passes (else None)."""
    miou, loss = keras.metrics.MeanIoU(num_classes), 0.0
    for i in range(0, len(images), batch_size):
        logits = model(images[i:i + batch_size], training=False)     # (B, H, W, K)
        miou.update_state(masks[i:i + batch_size], keras.ops.argmax(logits, axis=-1))
        if loss_fn:
            loss += float(keras.ops.sum(loss_fn.call(masks[i:i + batch_size], logits)))
    return miou.total_cm.numpy(), loss / len(images) if loss_fn else None


def score(model, images, masks, num_classes, batch_size=64):
    """Dataset-level metrics from one confusion matrix over the whole test set."""
    cm, _ = confusion_matrix(model, images, masks, num_classes, batch_size)
    return metrics_from_confusion(cm, len(images))


def metrics_from_confusion(cm, n_images):
    """fg IoU, Dice and accuracy of digit-vs-background; per-class and mean IoU, the mean
    over the classes that occur in truth or prediction (as Keras MeanIoU takes it)."""
    cm = np.asarray(cm, dtype=np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    per_class = [float(i / u) if u else None for i, u in zip(np.diag(cm), union)]
    tp, fp, fn = cm[1:, 1:].sum(), cm[0, 1:].sum(), cm[1:, 0].sum()
    return {"fg_iou": float(tp / max(tp + fp + fn, 1)),
            "miou": float(np.mean([iou for iou in per_class if iou is not None])),
            "per_class_iou": per_class, "dice": float(2 * tp / max(2 * tp + fp + fn, 1)),
            "pixel_accuracy": float(np.trace(cm) / cm.sum()), "n_images": n_images}


def interval_logs(loss, confusion, num_classes, prefix=""):
    """The log row of one interval, as model.fit names its entries."""
    metrics = metrics_from_confusion(confusion, 0)
    logs = {"loss": loss, "miou": metrics["miou"]}
    if num_classes == 2:
        logs["fg_iou"] = metrics["fg_iou"]
    return {prefix + key: value for key, value in logs.items()}


def write_json(obj, path):
    files.write_text(path, json.dumps(obj, indent=2) + "\n")


# ---- the three modes --------------------------------------------------------------

def run_training(cfg):
    """Train, score on the fixed test set, and write the pictures."""
    state = run_state(cfg.out_dir)
    if state and not (cfg.resume or cfg.overwrite):
        what = ("continue it with --resume" if state == "interrupted" else
                "train it further with --resume --steps N")
        raise UsageError(f"{cfg.out_dir} holds a {state} run; {what}, replace it with "
                         f"--overwrite, or choose another --out_dir")
    if cfg.checkpoint.exists() and not (cfg.resume or cfg.overwrite):
        raise UsageError(f"{cfg.checkpoint} already holds a model; continue it with --resume, "
                         f"replace it with --overwrite, or choose another --checkpoint")
    if cfg.resume:
        saved = saved_config(cfg.checkpoint) or {}
        adopt_saved_settings(cfg, saved, "resume")
        if state == "finished" and cfg.steps <= saved.get("steps", 0):
            raise UsageError(f"{cfg.out_dir} holds a finished run of {saved['steps']} steps; "
                             f"pass a larger --steps to train it further")
    settings = settings_of(cfg)
    print("config: " + " ".join(f"{k}={v}" for k, v in settings.items()))
    # The data is found before the folder is touched: a wrong --data_dir leaves no
    # run folder behind, and an --overwrite with one deletes nothing.
    datagen = make_datagen(cfg)
    print(f"data: {datagen.describe()}")
    strategy, cfg.chief = distributed.make_strategy(cfg.strategy, cfg.cpu_devices,
                                                    cfg.worker_timeout)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise UsageError(f"--batch_size {cfg.batch_size} does not split evenly over "
                         f"{strategy.num_replicas_in_sync} replicas")
    # Only the chief writes, so only the chief holds the folder (a worker may share it).
    with files.FolderLock(cfg.out_dir) if cfg.chief else contextlib.nullcontext():
        if cfg.overwrite:  # the old run's scores go with it: they describe another model
            for path in [cfg.checkpoint, *map(cfg.out_dir.joinpath, RUN_FILES),
                         *cfg.out_dir.glob("eval_*.json")]:
                path.unlink(missing_ok=True)
        return _train_and_score(cfg, strategy, datagen, settings, finished=state == "finished")


def _train_and_score(cfg, strategy, datagen, settings, finished):
    if cfg.chief:  # the run describes itself: the data as resolved, not only as asked
        write_json({**settings, "source": datagen.source,
                    "data_dir": str(datagen.data_dir.resolve()) if datagen.source == "real"
                    else "", "data": datagen.describe()}, cfg.out_dir / "config.json")
    test_images, test_masks = make_datagen(cfg, seed=cfg.test_seed).test_set(cfg.eval_images)
    valid = make_datagen(cfg, seed=cfg.test_seed + 1).test_set(min(512, cfg.eval_images))
    model, seconds, trained = train(cfg, strategy, datagen, valid, finished)
    if not cfg.chief:
        print("this worker's part is done; the chief scores the model and writes the results")
        return None
    began = time.perf_counter()
    # Scored in training-sized batches: peak memory stays that of training, at any canvas.
    metrics = score(model, test_images, test_masks, cfg.num_classes, cfg.batch_size)
    metrics["inference_ms_per_image"] = 1000 * (time.perf_counter() - began) / len(test_images)
    metrics["train_seconds"] = round(seconds, 1)
    metrics["train_images_per_second"] = trained * cfg.batch_size / seconds if seconds else None
    # ru_maxrss is in KiB on Linux: the peak memory of this whole process, TensorFlow included.
    metrics["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    name, rows = model.name, slice(0, cfg.sample_rows)
    preds = predict_logits(model, test_images[rows], cfg.batch_size).argmax(-1)
    plots.samples(load_data.denormalize(test_images[rows]), test_masks[rows], preds,
                  cfg.num_classes, f"{name} on the test set: foreground IoU "
                  f"{metrics['fg_iou']:.3f}, mean IoU {metrics['miou']:.3f}",
                  cfg.out_dir / f"samples_{name}.png")
    if not plots.learning_curves(cfg.out_dir / "log.csv", cfg.eval_every,
                                 f"{name} learning curves",
                                 cfg.out_dir / f"learning_curves_{name}.png"):
        print("note: the log has no finished interval, so there are no learning curves")
    load_data.save_grid(datagen, cfg.out_dir / "input_data.png")
    write_json(metrics, cfg.out_dir / "metrics.json")  # last: it marks the run finished
    print(f"test set ({metrics['n_images']} images): foreground IoU {metrics['fg_iou']:.4f}, "
          f"mean IoU {metrics['miou']:.4f}, Dice {metrics['dice']:.4f}, "
          f"pixel accuracy {metrics['pixel_accuracy']:.4f}; trained in {seconds:.0f} s")
    print(f"wrote {cfg.checkpoint} and the pictures in {cfg.out_dir}/")
    return metrics


def run_evaluation(cfg):
    """Score a saved model on its run's test data; the metrics are the last line of stdout."""
    saved = saved_config(cfg.checkpoint)
    if saved is None:
        print(f"note: no config.json beside {cfg.checkpoint}; scoring on the data the flags "
              f"describe")
    else:
        adopt_saved_settings(cfg, saved, "evaluate")
    model = load_checkpoint(cfg.checkpoint)
    _, height, width, _ = model.input_shape
    cfg.canvas, cfg.num_classes = height, model.output_shape[-1]
    datagen = make_datagen(cfg, seed=cfg.test_seed)
    print(f"data: {datagen.describe()}")
    images, masks = datagen.test_set(cfg.eval_images)
    metrics = score(model, images, masks, cfg.num_classes, cfg.batch_size)
    data = Path(str(datagen.data_dir)).name if datagen.source == "real" else "synthetic"
    path = cfg.out_dir / f"eval_{data}_{cfg.eval_images}_images_seed{cfg.test_seed}.json"
    with files.FolderLock(cfg.out_dir):
        write_json(metrics, path)
    print(f"wrote {path}")
    print(json.dumps(metrics))
    return metrics


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


def run_prediction(cfg):
    """Segment one user image of any size and draw image | mask | overlay."""
    path = Path(cfg.predict)
    pixels = read_image(path, max_pixels=max_image_pixels())
    model = load_checkpoint(cfg.checkpoint)
    num_classes, side = model.output_shape[-1], model.input_shape[1]
    pred, tiles = segment_tiled(model, pixels, cfg.batch_size)
    height, width = pred.shape
    print(f"segmented {path.name} ({width}x{height}) in {tiles} overlapping {side}x{side} tiles, "
          f"the canvas {model.name} was trained on, at the image's own scale")
    out = cfg.out_dir / f"prediction_{path.stem}.png"
    step = max(1, max(height, width) // 1200)  # the picture shows no more than this anyway
    with files.FolderLock(cfg.out_dir):
        plots.prediction(pixels[::step, ::step] / 255.0, pred[::step, ::step], num_classes,
                         f"{path.name}: {model.name}, {(pred > 0).mean():.1%} of pixels digit",
                         out)
    print(f"wrote {out}")
    return pred


def max_image_pixels():
    """The largest image --predict takes: about 150 bytes a pixel for tiles, logits and picture."""
    available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(max(available / 2 - BASE_BYTES, 0) // 150)


def main(argv=None):
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends as Ctrl-C does
    cfg = None
    try:
        cfg = parse_config(argv)
        if cfg.predict:
            run_prediction(cfg)
        elif cfg.evaluate:
            run_evaluation(cfg)
        else:
            run_training(cfg)
    except (UsageError, distributed.ClusterError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (load_data.DataError, files.FileError) as error:
        kept = ""
        if (isinstance(error, files.FileError) and not isinstance(error, files.FolderBusy)
                and cfg and cfg.checkpoint.is_file() and not (cfg.evaluate or cfg.predict)):
            kept = f"; the last checkpoint is kept, and `{continue_command(cfg)}` continues"
        print(f"error: {error}{kept}", file=sys.stderr)
        return 1
    except Interrupted as stop:
        done, saved = stop.args
        print(f"\ninterrupted at step {done} of {cfg.steps}; the checkpoint holds step {saved}"
              f"{' (the steps since were not saved)' if done > saved else ''}; continue with: "
              f"{continue_command(cfg)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        training = cfg and not (cfg.evaluate or cfg.predict)
        if training and cfg.checkpoint.is_file():
            print(f"\ninterrupted; the checkpoint is kept; continue with: "
                  f"{continue_command(cfg)}", file=sys.stderr)
        elif training:
            print("\ninterrupted before any training step was saved", file=sys.stderr)
        else:
            print("\ninterrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
