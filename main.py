"""Train, evaluate and apply a segmentation model on MNIST digits over CIFAR-10 photos.

    python main.py                                   train, score on the test set, pictures in im/
    python main.py --model dgcn --steps 1000         every constant below is a lower-case flag
    python main.py --resume                          continue an interrupted run from its checkpoint
    python main.py --evaluate --checkpoint im/model.keras [--data_dir DIR]
    python main.py --predict photo.jpg --checkpoint im/model.keras
"""
import argparse
import difflib
import json
import os
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import load_data
import model as model_lib
from model import keras, tf  # model.py imports TensorFlow quietly

# data
DATA_DIR = "data"          # real files in data/mnist, data/cifar; else a synthetic stand-in
SOURCE = "auto"            # auto | real | synthetic
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
CLIP_NORM = 1.0            # per-weight gradient clipping: one bad batch cannot wreck a run
DICE_WEIGHT = 1.0          # digits cover ~4% of pixels; soft Dice keeps them from being ignored
EVAL_EVERY = 100           # steps between checkpoints, log rows and learning-curve points
SEED = 0                   # weights and training data; the same seed gives the same numbers
STRATEGY = "default"       # default | mirrored (all GPUs, or CPU_DEVICES CPUs) | multiworker (TF_CONFIG)
CPU_DEVICES = 0            # >1 splits the CPU into that many logical devices for `mirrored`
# output
OUT_DIR = "im"             # checkpoint, logs, metrics and pictures
CHECKPOINT = ""            # model file; empty means {OUT_DIR}/model.keras
EVAL_IMAGES = 2000         # size of the fixed test set every model is scored on
TEST_SEED = 2024           # draws the test set: the same images whatever SEED or MODEL is
SAMPLE_ROWS = 6            # examples in samples_{model}.png

HYPERPARAMETERS = {name.lower(): value for name, value in dict(globals()).items()
                   if name.isupper()}
CHOICES = {"source": ("auto", "real", "synthetic"), "num_classes": (2, 11),
           "strategy": ("default", "mirrored", "multiworker"),
           "model": model_lib.MODELS}


class UsageError(Exception):
    """A bad flag or value: reported as one sentence, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_config(argv=None):
    """Flags over the defaults above, type-checked, into one config object."""
    parser = _Parser(prog="main.py", description=__doc__.split("\n")[0], allow_abbrev=False)
    for name, default in HYPERPARAMETERS.items():
        parser.add_argument(f"--{name}", type=type(default), default=default,
                            metavar=type(default).__name__.upper())
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--evaluate", action="store_true", help="score a saved model only")
    parser.add_argument("--predict", metavar="IMAGE", help="segment a PNG/JPEG with a saved model")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = unknown[0].split("=")[0]
        close = difflib.get_close_matches(flag, [f"--{n}" for n in vars(args)], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UsageError(f"unknown flag {flag}; {hint}`python main.py --help` lists them all")
    for name, allowed in CHOICES.items():
        if getattr(args, name) not in allowed:
            raise UsageError(f"--{name} must be one of {', '.join(map(str, allowed))}, "
                             f"not {getattr(args, name)!r}")
    for name in ("batch_size", "steps", "eval_every", "eval_images", "canvas", "digit_size",
                 "digits_per_image", "sample_rows", "learning_rate", "digit_scale_min"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name} must be positive, not {getattr(args, name)}")
    args.eval_every = min(args.eval_every, args.steps)
    if args.steps % args.eval_every:
        raise UsageError(f"--steps ({args.steps}) must be a multiple of --eval_every "
                         f"({args.eval_every}), the checkpoint interval")
    if args.model in ("unet", "hybrid") and args.canvas % 4:
        raise UsageError(f"{args.model} pools twice, so --canvas must be a multiple of 4, "
                         f"not {args.canvas}")
    if args.cpu_devices > 1 and args.strategy != "mirrored":
        raise UsageError("--cpu_devices splits the CPU for --strategy mirrored only; a "
                         "multiworker cluster uses each machine's GPUs, or one CPU each")
    if args.digit_scale_max < args.digit_scale_min:
        raise UsageError("--digit_scale_max must be at least --digit_scale_min")
    args.out_dir = Path(args.out_dir)
    args.checkpoint = Path(args.checkpoint) if args.checkpoint else args.out_dir / "model.keras"
    if (args.evaluate or args.predict) and not args.checkpoint.is_file():
        raise UsageError(f"no saved model at {args.checkpoint}; train one with `python main.py` "
                         "or pass --checkpoint PATH")
    return SimpleNamespace(**vars(args), chief=True)


def make_datagen(cfg, data_dir=None, seed=None):
    """The image/mask generator the config describes."""
    scale = None
    if (cfg.digit_scale_min, cfg.digit_scale_max) != (1.0, 1.0):
        scale = (cfg.digit_scale_min, cfg.digit_scale_max)
    return load_data.Datagen(data_dir or cfg.data_dir, canvas=cfg.canvas,
                             digit_size=cfg.digit_size, digits_per_image=cfg.digits_per_image,
                             num_classes=cfg.num_classes, seed=cfg.seed if seed is None else seed,
                             source=cfg.source, digit_scale=scale)


def make_strategy(cfg):
    """The tf.distribute strategy asked for; prints how many replicas train in sync."""
    if cfg.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cfg.cpu_devices)
    if cfg.strategy == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif cfg.strategy == "multiworker":
        try:
            config = json.loads(os.environ.get("TF_CONFIG", ""))
            workers = len(config["cluster"].get("chief", [])) + len(config["cluster"]["worker"])
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, TypeError, KeyError, AttributeError):
            raise UsageError("--strategy multiworker needs TF_CONFIG, the JSON that names every "
                             "worker and this one's task (see the README's example)") from None
        # The chief (or worker 0 if the cluster names no chief) writes every file.
        cfg.chief = strategy.extended.should_checkpoint
        task = config.get("task", {})
        print(f"worker: {task.get('type')} {task.get('index')} of {workers}"
              f"{' (chief)' if cfg.chief else ''}")
    else:
        strategy = tf.distribute.get_strategy()
    n = strategy.num_replicas_in_sync
    if cfg.batch_size % n:
        raise UsageError(f"--batch_size {cfg.batch_size} does not split evenly over {n} replicas")
    print(f"strategy: {cfg.strategy}, {n} replica{'s' if n > 1 else ''} in sync")
    return strategy


@keras.saving.register_keras_serializable(package="segm")
class SegmentationLoss(keras.losses.Loss):
    """Pixel cross-entropy on logits plus a soft-Dice term on the digit classes."""

    def __init__(self, num_classes=2, dice_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.dice_weight = dice_weight

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "int32")                      # (B, H, W)
        ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        ce = keras.ops.mean(ce, axis=(1, 2))                          # (B,)
        if not self.dice_weight:
            return ce
        probs = keras.ops.softmax(y_pred)[..., 1:]                    # (B, H, W, K-1)
        truth = keras.ops.one_hot(y_true, self.num_classes)[..., 1:]  # (B, H, W, K-1)
        overlap = keras.ops.sum(probs * truth, axis=(1, 2, 3))
        total = keras.ops.sum(probs + truth, axis=(1, 2, 3))
        dice = (2 * overlap + 1) / (total + 1)  # +1: an image without digits scores 1, not 0/0
        return ce + self.dice_weight * (1 - dice)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "dice_weight": self.dice_weight}


def compile_model(model, cfg):
    """Adam with warm-up, cosine decay and clipping; loss and training metrics."""
    warmup = max(1, cfg.steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate / 10, decay_steps=max(1, cfg.steps - warmup), alpha=0.01,
        warmup_target=cfg.learning_rate, warmup_steps=warmup)
    metrics = [keras.metrics.MeanIoU(cfg.num_classes, sparse_y_pred=False, name="miou")]
    if cfg.num_classes == 2:
        metrics.insert(0, keras.metrics.IoU(2, [1], sparse_y_pred=False, name="fg_iou"))
    loss = SegmentationLoss(cfg.num_classes, cfg.dice_weight)
    model.compile(keras.optimizers.Adam(schedule, clipnorm=cfg.clip_norm), loss, metrics=metrics)


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


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (weights, optimizer, step) by write-then-rename."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        save_atomically(self.model, self.path)


def save_atomically(model, path):
    """A crash mid-save leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    os.replace(partial, path)


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


def train(cfg, strategy, datagen, valid):
    """Fit (or resume) the model; returns it, the training time and the steps it took."""
    if cfg.chief:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.out_dir / "log.csv"
    with strategy.scope():
        if cfg.resume:
            if not cfg.checkpoint.is_file():
                raise UsageError(f"--resume needs a checkpoint, and {cfg.checkpoint} "
                                 "does not exist")
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
    if start >= cfg.steps:
        print(f"{cfg.checkpoint} has already trained {start} of {cfg.steps} steps")
        return model, 0.0, 0
    if start % cfg.eval_every:
        raise UsageError(f"{cfg.checkpoint} stopped at step {start}, not a multiple of "
                         f"--eval_every {cfg.eval_every}; resume with the run's own --eval_every")
    if start:
        # The optimizer, its learning-rate schedule included, comes back as saved.
        print(f"resuming {cfg.checkpoint} ({model.name}) at step {start}")
    print(f"training {model.name}: {model.count_params():,} parameters, "
          f"{cfg.steps} steps of {cfg.batch_size} images")
    callbacks = [NanGuard()]
    if cfg.chief:
        callbacks += [AtomicCheckpoint(cfg.checkpoint),
                      keras.callbacks.CSVLogger(log_path, append=bool(start))]
    began = time.perf_counter()
    if cfg.strategy == "multiworker":
        fit_multiworker(model, cfg, strategy, datagen, valid, start, callbacks)
    else:
        model.fit(make_dataset(datagen, cfg.batch_size, start),
                  epochs=-(-cfg.steps // cfg.eval_every), steps_per_epoch=cfg.eval_every,
                  initial_epoch=start // cfg.eval_every, validation_data=valid,
                  validation_batch_size=cfg.batch_size, shuffle=False, callbacks=callbacks,
                  verbose=2 if os.environ.get("CI") else "auto")
    seconds = time.perf_counter() - began
    if cfg.chief:
        save_atomically(model, cfg.checkpoint)
    return model, seconds, int(model.optimizer.iterations.numpy()) - start


def fit_multiworker(model, cfg, strategy, datagen, valid, start, callbacks):
    """model.fit's work under MultiWorkerMirroredStrategy, where Keras 3's fit fails
    (keras-team/keras#20585): a strategy.run step, the same callbacks and log."""
    replicas = strategy.num_replicas_in_sync

    def per_worker(context):
        local = replicas // context.num_input_pipelines
        return make_dataset(datagen, cfg.batch_size, start,
                            (context.input_pipeline_id * local, local, replicas))

    batches = iter(strategy.distribute_datasets_from_function(per_worker))
    loss_fn = SegmentationLoss(cfg.num_classes, cfg.dice_weight)

    def replica_step(images, masks):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.nn.compute_average_loss(loss_fn.call(masks, logits),
                                              global_batch_size=cfg.batch_size)
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        confusion = tf.math.confusion_matrix(tf.reshape(masks, [-1]),
                                             tf.reshape(tf.argmax(logits, -1), [-1]),
                                             cfg.num_classes, dtype=tf.float32)
        return loss, confusion

    @tf.function
    def train_step():
        loss, confusion = strategy.run(replica_step, args=next(batches))
        return (strategy.reduce("SUM", loss, axis=None),
                strategy.reduce("SUM", confusion, axis=None))

    def interval_logs(loss, confusion, prefix=""):
        metrics = metrics_from_confusion(confusion, 0)
        logs = {"loss": loss, "miou": metrics["miou"]}
        if cfg.num_classes == 2:
            logs["fg_iou"] = metrics["fg_iou"]
        return {prefix + key: value for key, value in logs.items()}

    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    hooks.on_train_begin()
    for epoch in range(start // cfg.eval_every, cfg.steps // cfg.eval_every):
        hooks.on_epoch_begin(epoch)
        bar = keras.utils.Progbar(cfg.eval_every, verbose=2 if os.environ.get("CI") else 1,
                                  stateful_metrics=["loss"])
        losses, confusion = [], 0
        for batch in range(cfg.eval_every):
            loss, step_confusion = train_step()
            losses.append(float(loss))
            confusion = confusion + step_confusion.numpy()
            hooks.on_train_batch_end(batch, {"loss": losses[-1]})
            if model.stop_training:  # as in fit: the interval still ends and is logged
                break
            bar.update(batch + 1, [("loss", np.mean(losses))])
        val_confusion, val_loss = confusion_matrix(model, *valid, cfg.num_classes,
                                                   cfg.batch_size, loss_fn)
        logs = {**interval_logs(float(np.mean(losses)), confusion),
                **interval_logs(val_loss, val_confusion, "val_")}
        print(" - ".join(f"{key}: {value:.4f}" for key, value in logs.items()))
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end()


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


# ---- pictures ---------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def class_colours(num_classes):
    """Black background; a distinct colour per digit class."""
    import matplotlib
    colours = [(0.0, 0.0, 0.0)] + [matplotlib.colormaps["tab10"](i)[:3] for i in range(10)]
    if num_classes == 2:
        colours = [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]
    return np.array(colours[:num_classes])


def colour_mask(mask, num_classes):
    return class_colours(num_classes)[mask]                        # (H, W, 3)


def error_overlay(image, truth, pred):
    """Grey image; missed digit pixels blue, false digit pixels red, wrong digit yellow."""
    grey = np.repeat(image.mean(-1, keepdims=True), 3, -1) * 0.6   # (H, W, 3)
    grey[(truth > 0) & (pred == 0)] = (0.2, 0.4, 1.0)
    grey[(truth == 0) & (pred > 0)] = (1.0, 0.2, 0.2)
    grey[(truth > 0) & (pred > 0) & (truth != pred)] = (1.0, 0.9, 0.1)
    return grey


def plot_samples(images, masks, preds, num_classes, title, path):
    """Rows of input | ground truth | prediction | errors, in true colours."""
    plt = _pyplot()
    rows = len(images)
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2 * rows + 0.6), squeeze=False)
    shown = load_data.denormalize(images)
    for r in range(rows):
        inter = ((masks[r] > 0) & (preds[r] > 0)).sum()
        union = ((masks[r] > 0) | (preds[r] > 0)).sum()
        panels = (shown[r], colour_mask(masks[r], num_classes),
                  colour_mask(preds[r], num_classes), error_overlay(shown[r], masks[r], preds[r]))
        names = ("input", "ground truth", "prediction",
                 f"errors (IoU {inter / union:.2f})" if union else "errors")
        for ax, panel, name in zip(axes[r], panels, names):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    if num_classes > 2:
        from matplotlib.patches import Patch
        handles = [Patch(color=c, label="background" if k == 0 else f"digit {k - 1}")
                   for k, c in enumerate(class_colours(num_classes))]
        fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8)
    fig.suptitle(title + "\nerrors: blue = missed digit, red = false digit, yellow = wrong digit",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.05 if num_classes > 2 else 0, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_learning_curves(log_path, eval_every, title, path):
    """Loss and IoU against step, from the CSV log."""
    import csv
    plt = _pyplot()
    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"note: {log_path} has no intervals yet, so there are no learning curves to draw")
        return
    steps = [(int(r["epoch"]) + 1) * eval_every for r in rows]
    iou = "fg_iou" if "fg_iou" in rows[0] else "miou"
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    iou_name = {"fg_iou": "foreground IoU", "miou": "mean IoU"}[iou]
    for ax, key, label in ((left, "loss", "loss"), (right, iou, iou_name)):
        ax.plot(steps, [float(r[key]) for r in rows], "o-", label="training batches (interval)")
        ax.plot(steps, [float(r["val_" + key]) for r in rows], "s-", label="held-out images")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    right.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- modes ------------------------------------------------------------------

def write_json(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def load_checkpoint(path):
    """A saved model, or one clear sentence about why it cannot be read."""
    try:
        return keras.saving.load_model(path)
    except Exception as error:
        raise UsageError(f"{path} is not a model this project saved ({type(error).__name__}); "
                         "pass the model.keras that `python main.py` wrote") from None


def run_training(cfg):
    """Train, score on the fixed test set, and write the pictures."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()
                if k in HYPERPARAMETERS or k == "resume"}
    print("config: " + " ".join(f"{k}={v}" for k, v in settings.items()))
    strategy = make_strategy(cfg)
    if cfg.chief:
        write_json(settings, cfg.out_dir / "config.json")
    datagen = make_datagen(cfg)
    print(f"data: {datagen.describe()}")
    test_images, test_masks = make_datagen(cfg, seed=cfg.test_seed).test_set(cfg.eval_images)
    valid = make_datagen(cfg, seed=cfg.test_seed + 1).test_set(min(512, cfg.eval_images))
    model, seconds, trained = train(cfg, strategy, datagen, valid)
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
    write_json(metrics, cfg.out_dir / "metrics.json")
    name = model.name
    rows = slice(0, cfg.sample_rows)
    preds = predict_logits(model, test_images[rows], cfg.batch_size).argmax(-1)
    plot_samples(test_images[rows], test_masks[rows], preds, cfg.num_classes,
                 f"{name} on the test set: foreground IoU {metrics['fg_iou']:.3f}, "
                 f"mean IoU {metrics['miou']:.3f}",
                 cfg.out_dir / f"samples_{name}.png")
    plot_learning_curves(cfg.out_dir / "log.csv", cfg.eval_every, f"{name} learning curves",
                         cfg.out_dir / f"learning_curves_{name}.png")
    load_data.save_grid(datagen, cfg.out_dir / "input_data.png")
    print(f"test set ({metrics['n_images']} images): foreground IoU {metrics['fg_iou']:.4f}, "
          f"mean IoU {metrics['miou']:.4f}, Dice {metrics['dice']:.4f}, "
          f"pixel accuracy {metrics['pixel_accuracy']:.4f}; trained in {seconds:.0f} s")
    print(f"wrote {cfg.checkpoint} and the pictures in {cfg.out_dir}/")
    return metrics


def run_evaluation(cfg):
    """Score a saved model on the test split; the metrics are the last line of stdout."""
    model = load_checkpoint(cfg.checkpoint)
    _, height, width, _ = model.input_shape
    cfg.canvas, cfg.num_classes = height, model.output_shape[-1]
    images, masks = make_datagen(cfg, seed=cfg.test_seed).test_set(cfg.eval_images)
    metrics = score(model, images, masks, cfg.num_classes, cfg.batch_size)
    write_json(metrics, cfg.out_dir / "metrics.json")
    print(json.dumps(metrics))
    return metrics


def run_prediction(cfg):
    """Segment one user image of any size and draw image | mask | overlay."""
    from PIL import Image, UnidentifiedImageError
    path = Path(cfg.predict)
    try:
        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))             # (H, W, 3) uint8
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; pass the path of a PNG or JPEG") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise UsageError(f"{path} is not a readable image; pass a PNG or JPEG") from None
    trained = load_checkpoint(cfg.checkpoint)
    num_classes = trained.output_shape[-1]
    height, width = pixels.shape[:2]
    # Models are built for a fixed grid (graph layers bake it in), so build the
    # same architecture for this image, padded to a multiple of 4 for the
    # poolings, and give it the trained weights.
    padded_h, padded_w = -(-height // 4) * 4, -(-width // 4) * 4
    model = model_lib.build_model(trained.name, num_classes, padded_h, padded_w)
    model.set_weights(trained.get_weights())
    image = load_data.normalize(pixels)[None]                      # (1, H, W, 3)
    image = np.pad(image, ((0, 0), (0, padded_h - height), (0, padded_w - width), (0, 0)),
                   mode="reflect" if min(height, width) > 4 else "edge")
    pred = predict_logits(model, image)[0, :height, :width].argmax(-1)  # (H, W)
    plt = _pyplot()
    shown = load_data.denormalize(image[0, :height, :width])
    overlay = shown * 0.5 + colour_mask(pred, num_classes) * 0.5
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    for ax, panel, name in zip(axes, (shown, colour_mask(pred, num_classes), overlay),
                               ("image", "predicted mask", "overlay")):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(f"{path.name}: {trained.name}, {(pred > 0).mean():.1%} of pixels digit")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out = cfg.out_dir / "prediction.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"wrote {out}")
    return pred


def main(argv=None):
    try:
        cfg = parse_config(argv)
        if cfg.predict:
            run_prediction(cfg)
        elif cfg.evaluate:
            run_evaluation(cfg)
        else:
            run_training(cfg)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except load_data.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the same command with --resume continues from the last "
              "checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
