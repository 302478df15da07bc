"""Train, evaluate and apply a segmentation model on MNIST digits over CIFAR-10 photos,
or on a folder of your own images and masks.

    python main.py                          train into im/train (then train2, ...); look in im/
    python main.py --model dgcn --steps 1000   every constant below is a lower-case flag
    python main.py --data_dir my_pictures   train on images/ and masks/ (see segm/folders.py)
    python main.py --data_dir my_pictures --check_data   every problem of a folder, at once
    python main.py --resume                 continue the latest run (or --out_dir's)
    python main.py --evaluate               score the latest run again, with its own data
    python main.py --predict photos/        segment a picture, or a folder of them: mask files
    python main.py --export served/         the run's model as a TensorFlow SavedModel
"""
import contextlib
import gc
import json
import signal
import sys
import time
from pathlib import Path


import load_data
import model as model_lib
from segm import (check_data, checkpoints, configurator, distributed, files, folders, losses,
                  memory, metrics, pipeline, plots, predict, recipe, runs)
from segm.nan_guard import NanGuard
from segm.errors import DataError, FileError, UsageError
from segm.tf_quiet import keras

# data
DATA_DIR = ""              # mnist/ and cifar/, or your images/ and masks/; "": data/ beside main.py
SOURCE = "auto"            # real files, or synthetic font digits (no download); auto: real if
                           # data/ holds them
NUM_CLASSES = 2            # 2: background/digit; 11: background + which digit (label + 1);
                           # a folder of your own: from its masks, unless given as a flag
CANVAS = 32                # image side in pixels; 32 is the seed repository's protocol
MASK_MAP = ""              # your own masks' values as from:to pairs: 255:1 for 0/255 masks
AUGMENT = True             # your own folder: random scales, crops, flips and colours (--no-augment)
DIGIT_SIZE = 14            # MNIST digits are shrunk from 28x28 to this
DIGITS_PER_IMAGE = 1       # more digits make busier scenes (later digits drawn on top)
DIGIT_SCALE_MIN = 1.0      # digits resized by a random factor in [min, max]; 1, 1 keeps DIGIT_SIZE
DIGIT_SCALE_MAX = 1.0      # the factor's upper end
DIGIT_ANGLE_MIN = 0.0      # digits turned by a random angle in [min, max] degrees, masks with them
DIGIT_ANGLE_MAX = 0.0      # 0, 0 keeps them upright; 90, 90 turns every digit a quarter
# model
MODEL = "unet_fast"        # the network, each described in model.py; this U-Net adds class
                           # scores from its coarse layers and adds (not stacks) its skips
# training
BATCH_SIZE = 64            # global batch, split evenly across replicas
STEPS = 300                # optimizer steps; 300 reach the seed budget's (500 x 64) score
LEARNING_RATE = 1e-2       # Adam's peak rate, reached after a short warm-up, then cosine-decayed
LR_FLOOR = 0.0             # the rate's end, a share of the peak: 0 lets the last steps settle
EMA = 0.0                  # weight averaging's momentum (0: off); the average is what is scored
EMA_EVERY = 50             # steps between copies of the average into the model, with EMA
PRECISION = "auto"         # bfloat16: Keras's mixed_bfloat16 (logits, loss stay float32); auto:
                           # bfloat16 where measured faster (avx512_bf16/AMX CPUs, newer GPUs)
CLIP_NORM = 1.0            # per-weight gradient clipping (0: off): one bad batch cannot wreck a run
WEIGHT_DECAY = 0.0         # AdamW's decoupled decay, w -= rate x decay x w each step (0: off)
CLASS_WEIGHTS = "none"     # auto: the pixels of rare classes weigh more (median frequency
                           # balancing, from the training masks)
DICE_WEIGHT = 1.0          # digits cover ~4% of pixels; soft Dice keeps them from being ignored
EVAL_EVERY = 150           # steps between checkpoints, log rows and learning-curve points; each
                           # costs a validation pass and a save, and bounds what a kill loses;
                           # the nearest interval that divides STEPS, if this one does not
SEED = 0                   # weights and training data; the same seed gives the same numbers
STRATEGY = "default"       # mirrored: all GPUs, or CPU_DEVICES CPUs; multiworker: a cluster
CPU_DEVICES = 0            # >1 splits the CPU into that many logical devices for `mirrored`
WORKER_TIMEOUT = 300.0     # seconds a multiworker task waits for its peers before giving up
# output
OUT_DIR = ""               # the run folder; "": a new im/train, im/train2, ... per run (see
                           # segm/runs.py), the latest for --resume/--evaluate/--predict/--export
CHECKPOINT = ""            # model file; empty means {OUT_DIR}/model.keras
EVAL_IMAGES = 2000         # size of the fixed test set every model is scored on
TEST_SEED = 2024           # draws the test set: the same images whatever SEED or MODEL is
SAMPLE_ROWS = 6            # examples in samples_{model}.png
TENSORBOARD = False        # also write Keras's TensorBoard logs to {OUT_DIR}/tensorboard

HYPERPARAMETERS = {name.lower(): value for name, value in dict(globals()).items()
                   if name.isupper()}
CHOICES = {"source": load_data.SOURCES, "num_classes": load_data.CLASS_COUNTS,  # allowed values
           "model": model_lib.MODELS, "strategy": distributed.STRATEGIES,
           "class_weights": losses.CLASS_WEIGHTS, "precision": recipe.PRECISIONS}


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during training; carries the steps done and the steps saved."""


def parse_config(argv=None):
    """Flags over the defaults above, every value checked (see configurator.py)."""
    return configurator.parse_config(argv, HYPERPARAMETERS, CHOICES, __doc__.split("\n\n")[0],
                                     configurator.comments_beside(__file__))


# ---- training -----------------------------------------------------------------

def compile_model(model, cfg):
    """The recipe of segm/recipe.py: optimizer, schedule, averaging; loss and metrics."""
    recipe.compile_model(model, cfg)


def fit(cfg, strategy, datagen, valid, finished=False):
    """Fit (or resume) the model; returns it, the training time and the steps it took."""
    with strategy.scope():
        if cfg.resume:
            model = model_lib.load_model(cfg.checkpoint)
            runs.check_same_model(cfg, model.name, model.output_shape[-1], model.input_shape[1])
        else:
            keras.utils.set_random_seed(cfg.seed)
            model = recipe.build(model_lib.build_model, cfg)
            compile_model(model, cfg)
    for layer in model.layers:
        # Batch statistics over the global batch, not each replica's share: the
        # same flags then train the same model on any number of replicas.
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = strategy.num_replicas_in_sync > 1
    start = int(model.optimizer.iterations.numpy())
    if runs.check_resumable(cfg, start, finished):  # interrupted while scoring: score it now
        print(f"{cfg.checkpoint} has trained all {start} steps; scoring it")
        return model, 0.0, 0
    if start:
        # The optimizer, its learning-rate schedule included, comes back as saved.
        print(f"resuming {cfg.checkpoint} ({model.name}) at step {start}")
    print(f"training {model.name}: {model.count_params():,} parameters, "
          f"{cfg.steps} steps of {cfg.batch_size} images")
    if cfg.chief:
        runs.trim_log(cfg.out_dir / "log.csv", start // cfg.eval_every)
    writer = checkpoints.RunWriter(cfg.checkpoint, cfg.out_dir / "log.csv") if cfg.chief else None
    callbacks = [NanGuard()] + ([writer] if writer else [])
    if cfg.tensorboard and cfg.chief:
        callbacks.append(keras.callbacks.TensorBoard(cfg.out_dir / "tensorboard"))
    began, failures, prepare = time.perf_counter(), [], model_lib.graph_builder(model)

    def batches(*replicas):  # all of them, or (first, local, total) for one worker
        return pipeline.make_dataset(datagen, cfg.batch_size, start, replicas or (0, 1, 1),
                                     failures, prepare)
    try:
        with pipeline.raised_as_themselves(failures):
            if cfg.strategy == "multiworker":
                distributed.fit_multiworker(
                    model, strategy, batches, valid, callbacks, cfg.steps, cfg.eval_every, start,
                    cfg.batch_size)
            else:
                model.fit(batches(),
                          epochs=cfg.steps // cfg.eval_every, steps_per_epoch=cfg.eval_every,
                          initial_epoch=start // cfg.eval_every, validation_data=valid,
                          validation_batch_size=cfg.batch_size, shuffle=False,
                          callbacks=callbacks, verbose="auto" if sys.stdout.isatty() else 2)
    except KeyboardInterrupt:
        saved = writer.saved_step if writer and writer.saved_step is not None else start
        raise Interrupted(int(model.optimizer.iterations.numpy()), saved) from None
    seconds = time.perf_counter() - began
    if cfg.chief and (cfg.ema or writer.saved_step != model.optimizer.iterations.numpy()):
        checkpoints.save_model(model, cfg.checkpoint)  # the average copied in, or unsaved steps
    return model, seconds, int(model.optimizer.iterations.numpy()) - start


# ---- the three modes --------------------------------------------------------------

def run_training(cfg):
    """Train, score on the fixed test set, and write the pictures."""
    state = runs.refuse_to_replace(cfg)
    saved = {}
    if cfg.resume:
        saved = runs.saved_config(cfg.checkpoint) or {}
        configurator.adopt_saved_settings(cfg, saved, "resume", HYPERPARAMETERS)
        if state == "finished" and cfg.steps <= saved.get("steps", 0):
            raise UsageError(f"{cfg.out_dir} holds a finished run of {saved['steps']} steps; "
                             f"pass a larger --steps to train it further")
    configurator.check_training_memory(cfg, cfg.eval_images + load_data.VALID_IMAGES)
    # The data is found before the folder is touched: a wrong --data_dir leaves no
    # run folder behind, and an --overwrite with one deletes nothing.
    datagen = load_data.make_datagen(cfg, saved_split=saved.get("split") if cfg.resume else None)
    datagen.sample(1, split="train", step=0)  # data that cannot train fails now, before any work
    cfg.num_classes = datagen.num_classes  # a folder's masks may have said how many
    cfg.weights = losses.class_weights(cfg.class_weights, datagen.class_pixels)
    strategy, cfg.chief = distributed.make_strategy(cfg.strategy, cfg.cpu_devices,
                                                    cfg.worker_timeout)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise UsageError(f"--batch_size {cfg.batch_size} does not split evenly over "
                         f"{strategy.num_replicas_in_sync} replicas")
    if cfg.out_dir is None and cfg.chief:  # the data is found: now the new run takes its folder
        cfg.out_dir = cfg.claimed = runs.claim()
        cfg.checkpoint = cfg.checkpoint or cfg.out_dir / "model.keras"
    settings = runs.settings_of(cfg, HYPERPARAMETERS)
    shown = {k: v for k, v in settings.items()  # a folder has no digits to set
             if not (datagen.source == "folder" and k.startswith("digit"))}
    print(f"run: {cfg.out_dir}" if cfg.chief else "run: a worker's share (the chief writes)")
    print("config: " + " ".join(f"{k}={v}" for k, v in shown.items()))
    print(f"data: {datagen.describe()}")
    # Only the chief writes, so only the chief holds the folder (a worker may share it).
    with files.FolderLock(cfg.out_dir) if cfg.chief else contextlib.nullcontext():
        if cfg.chief:  # again, holding the folder: another run may have finished here since
            runs.refuse_to_replace(cfg)
        if cfg.overwrite:
            runs.clear(cfg.out_dir, cfg.checkpoint)
        try:
            return _train_and_score(cfg, strategy, datagen, settings, finished=state == "finished")
        except (KeyboardInterrupt, Interrupted):
            if cfg.chief and not cfg.checkpoint.is_file():  # nothing to continue: no run left
                cfg.abandoned = runs.abandon(cfg)
            raise


def _train_and_score(cfg, strategy, datagen, settings, finished):
    folder = datagen.source == "folder"
    if cfg.chief:  # the run describes itself: the data as resolved, not only as asked
        data_dir = str(datagen.data_dir.resolve()) if datagen.source != "synthetic" else ""
        runs.write_json({**settings, "source": datagen.source, "data_dir": data_dir,
                         "data": datagen.describe(),
                         **(datagen.record() if folder else {})},
                        cfg.out_dir / "config.json")
        cfg.wrote_config = True
    if folder:  # your own pictures: whole, of any size, read one by one when scored
        valid = datagen.valid_set(load_data.VALID_IMAGES)
    else:
        (test_images, test_masks), valid = load_data.held_out_sets(cfg)
    model, seconds, trained = fit(cfg, strategy, datagen, valid, finished)
    if not cfg.chief:
        print("this worker's part is done; the chief scores the model and writes the results")
        return None
    began = time.perf_counter()
    # Scored in training-sized batches: peak memory stays that of training, at any canvas.
    if folder:
        scores = predict.score_pictures(model, datagen.pictures("test"), cfg.num_classes,
                                        cfg.batch_size)
    else:
        scores = metrics.score(model, test_images, test_masks, cfg.num_classes, cfg.batch_size)
    scores["inference_ms_per_image"] = 1000 * (time.perf_counter() - began) / scores["n_images"]
    scores["train_seconds"] = round(seconds, 1)
    scores["train_images_per_second"] = trained * cfg.batch_size / seconds if seconds else None
    scores["peak_memory_mb"] = memory.peak() / 2**20  # this whole process, TensorFlow included
    predict.draw_samples(model, datagen, None if folder else (test_images, test_masks), scores,
                         cfg.sample_rows, cfg.batch_size, cfg.out_dir / f"samples_{model.name}.png")
    if not plots.learning_curves(cfg.out_dir / "log.csv", cfg.eval_every,
                                 f"{model.name} learning curves",
                                 cfg.out_dir / f"learning_curves_{model.name}.png"):
        print("note: the log has no finished interval, so there are no learning curves")
    load_data.save_grid(datagen, cfg.out_dir / "input_data.png")
    if cfg.num_classes > 2:  # which classes are taken for which
        plots.confusion(scores["confusion"], datagen.class_names,
                        f"{model.name}: test-set pixels, mean IoU {scores['miou']:.3f}",
                        cfg.out_dir / f"confusion_{model.name}.png")
    scores["class_names"] = datagen.class_names
    runs.write_json(scores, cfg.out_dir / "metrics.json")  # last: it marks the run finished
    shown = cfg.out_dir.resolve().parent == runs.RUNS.resolve()
    if shown:  # the latest run's pictures, where the edit-run-look loop looks
        runs.show_pictures(cfg.out_dir)
    print(metrics.report(scores, folder))
    print(f"trained in {seconds:.0f} s; wrote {cfg.checkpoint}, best.keras and the pictures in "
          f"{cfg.out_dir}/{f' (copied to {runs.RUNS}/)' if shown else ''}")
    return scores


def run_evaluation(cfg):
    """Score a saved model on its run's test data; the scores are the last line of stdout."""
    saved = runs.saved_config(cfg.checkpoint)
    if saved is None:
        print(f"note: no config.json beside {cfg.checkpoint}; scoring on the data the flags "
              f"describe")
    else:
        configurator.adopt_saved_settings(cfg, saved, "evaluate", HYPERPARAMETERS)
    model = model_lib.load_model(cfg.checkpoint)
    print(f"scoring {runs.describe_checkpoint(cfg.checkpoint)}")
    _, height, width, _ = model.input_shape
    cfg.canvas, cfg.num_classes = height, model.output_shape[-1]
    if cfg.data_dir and folders.is_folder(cfg.data_dir):
        # The run's own folder: its recorded test split. Any other folder: every pair in it.
        own = saved and saved.get("data_dir") == str(Path(cfg.data_dir).resolve())
        datagen = folders.FolderData(cfg.data_dir, cfg.canvas, cfg.num_classes, cfg.seed,
                                     cfg.test_seed, saved_split=own and saved.get("split"),
                                     score_all=not own, mask_map=cfg.mask_map)
        print(f"data: {datagen.describe()}")
        scores = predict.score_pictures(model, datagen.pictures("test"), cfg.num_classes,
                                        cfg.batch_size)
        cfg.eval_images = scores["n_images"]
        scores["class_names"] = datagen.class_names
    else:
        datagen = load_data.make_datagen(cfg, seed=cfg.test_seed)
        print(f"data: {datagen.describe()}")
        images, masks = datagen.test_set(cfg.eval_images)
        scores = metrics.score(model, images, masks, cfg.num_classes, cfg.batch_size)
    path = runs.evaluation_path(cfg, saved, datagen, configurator.DATA_SETTINGS)
    with files.FolderLock(cfg.out_dir):
        runs.write_json(scores, path)
    print(metrics.report(scores, per_class=True))
    print(f"wrote {path}")
    print(json.dumps(scores))
    return scores


def run_prediction(cfg):
    """Segment a picture, or every picture of a folder, with the run's model (see predict.py):
    a class-index mask and an overlay each, in a new predictions folder of the run's."""
    saved = runs.saved_config(cfg.checkpoint) or {}
    return predict.predict_path(Path(cfg.predict), lambda: model_lib.load_model(cfg.checkpoint),
                                runs.describe_checkpoint(cfg.checkpoint), cfg.out_dir,
                                cfg.batch_size, folder_run=saved.get("source") == "folder",
                                names=saved.get("class_names"))


def run_export(cfg):
    """The run's model in a new folder, served with no project code (a SavedModel, or ONNX)."""
    model = model_lib.load_model(cfg.checkpoint)
    print(f"exporting {runs.describe_checkpoint(cfg.checkpoint)}")
    checkpoints.export(model, cfg.export, cfg.format)
    call = ("onnxruntime.InferenceSession(" + repr(str(cfg.export / "model.onnx")) + ").run"
            if cfg.format == "onnx" else f"tf.saved_model.load({str(cfg.export)!r}).serve")
    print(f"wrote {cfg.export}: call it with {call} on float32 images in [-1, 1] of shape "
          f"(batch, {model.input_shape[1]}, {model.input_shape[2]}, 3); it returns logits "
          f"(batch, H, W, {model.output_shape[-1]})")


# ---- from Python, as in a notebook: the same work, its results returned, errors raised --

def flags(**settings):
    """Keyword arguments named like the constants above, as the command line's flags."""
    return [f"--{name}" if value is True else f"--no-{name}" if value is False else
            f"--{name}={value}" for name, value in settings.items()
            if value is not None and (value is not False or name in HYPERPARAMETERS)]


def train(**settings):
    """Train as `python main.py` does: train(model="dgcn", steps=1000) -> (the run folder,
    its test-set scores). Exceptions, not exit statuses; no signal handler is installed."""
    cfg = parse_config(flags(**settings))
    scores = run_training(cfg)
    return cfg.out_dir, scores


def evaluate(run=None, **settings):
    """A run's scores (its folder; None: the latest) on its own test data, or as flags say."""
    return run_evaluation(parse_config(["--evaluate", *flags(out_dir=run, **settings)]))


def segment(pictures, run=None, batch_size=BATCH_SIZE):
    """The (H, W) class-index masks of pictures ((H, W, 3) uint8 arrays of any size) by a run's
    model (its folder; None: the latest), as --predict makes them."""
    cfg = parse_config(["--evaluate", *flags(out_dir=run)])
    net = model_lib.load_model(cfg.checkpoint)
    return list(predict.segment_many(net, pictures, batch_size))


def main(argv=None):
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends as Ctrl-C does
    cfg = None
    try:
        cfg = parse_config(argv)
        if cfg.check_data:
            check_data.run(cfg.data_dir, cfg.mask_map, cfg.num_classes if "num_classes" in
                           cfg.given else None, (cfg.out_dir or runs.RUNS) / "check_data.png")
        elif cfg.predict:
            run_prediction(cfg)
        elif cfg.export:
            run_export(cfg)
        elif cfg.evaluate:
            run_evaluation(cfg)
        else:
            run_training(cfg)
    except (UsageError, distributed.ClusterError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DataError, FileError) as error:
        kept = ""
        if (isinstance(error, FileError) and not isinstance(error, files.FolderBusy)
                and cfg and cfg.checkpoint and cfg.checkpoint.is_file()
                and not (cfg.evaluate or cfg.predict or cfg.export)):
            kept = f"; the last checkpoint is kept, and `{runs.continue_command(cfg)}` continues"
        print(f"error: {error}{kept}", file=sys.stderr)
        return 1
    except Interrupted as stop:
        done, saved = stop.args
        if hasattr(cfg, "abandoned"):  # before the first checkpoint: nothing to continue
            print(f"\ninterrupted at step {done} of {cfg.steps}, before the first checkpoint; "
                  f"{cfg.abandoned}", file=sys.stderr)
            return 130
        print(f"\ninterrupted at step {done} of {cfg.steps}; the checkpoint holds step {saved}"
              f"{' (the steps since were not saved)' if done > saved else ''}; continue with: "
              f"{runs.continue_command(cfg)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        training = cfg and not (cfg.evaluate or cfg.predict or cfg.export)
        if training and cfg.checkpoint and cfg.checkpoint.is_file():
            print(f"\ninterrupted; the checkpoint is kept; continue with: "
                  f"{runs.continue_command(cfg)}", file=sys.stderr)
        elif training:
            print(f"\ninterrupted before any training step was saved; "
                  f"{getattr(cfg, 'abandoned', 'nothing was written')}", file=sys.stderr)
        else:
            print("\ninterrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    status = main()
    # Every file is written and closed by now. On the way out Python's last garbage
    # collection would walk all of TensorFlow's objects (about 0.6 s); frozen, they are left.
    gc.freeze()
    sys.exit(status)
