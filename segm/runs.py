"""The run folder: its config.json, checkpoint and log, written so that no finished run is lost.

A run folder holds model.keras (weights, optimizer, step), best.keras (the model
of the interval that scored best on the validation images), config.json (every
setting, the data as resolved), log.csv (a row per interval), metrics.json
(written last: it marks the run finished), eval_*.json, the pictures and, if asked
for, tensorboard/.
"""
import contextlib
import csv
import json
import shlex
import shutil
import signal
from pathlib import Path

from segm import files
from segm.errors import DataError, FileError, UsageError
from segm.region_layers import RegionGraph
from segm.tf_quiet import keras

RUN_FILES = ("model.keras", "best.keras", "config.json", "log.csv", "metrics.json")
BEST = "val_miou"  # what picks best.keras: the mean IoU on the validation images


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
    """The exact command that continues this run."""
    argv = [a for a in cfg.argv if a != "--overwrite"]
    return shlex.join(["python", "main.py", *argv, *([] if cfg.resume else ["--resume"])])


def save_model(model, path):
    """The whole model (weights, optimizer, step), replacing path only when complete."""
    with files.atomic_write(path) as tmp:
        model.save(tmp)


def export(model, folder):
    """model.export (Keras) as a TensorFlow SavedModel at folder, which appears whole or not
    at all: written beside it under a temporary name, then renamed."""
    if any(isinstance(layer, RegionGraph) for layer in model.layers):
        raise UsageError(f"{model.name} cannot be exported: it builds its region graphs with "
                         f"numpy (SLIC) inside the model, which a SavedModel cannot hold; serve "
                         f"its .keras file with model.py instead")
    folder = Path(folder)
    temporary = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(temporary, ignore_errors=True)  # a leftover of an export that was killed
    try:
        model.export(str(temporary), verbose=False)
        temporary.rename(folder)
    except OSError as e:
        raise FileError(f"could not write {folder} ({e.strerror or e}); free some space "
                              f"or choose another --export folder") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


class RunWriter(keras.callbacks.Callback):
    """At each interval's end: the log with that interval's row, then the checkpoint, and
    best.keras beside it when the interval beats every earlier one on validation.

    All are rewritten whole and atomically (keras.callbacks.CSVLogger appends in
    place, so a crash could leave half a row). The log may run one row ahead of the
    checkpoint, never behind: --resume drops the rows past the checkpoint (trim_log).
    """

    def __init__(self, checkpoint, log_path):
        super().__init__()
        self.checkpoint, self.log_path = Path(checkpoint), Path(log_path)
        self.best_path = self.checkpoint.with_name("best.keras")
        self.saved_step = None
        self.best = best_logged(self.log_path)

    def on_epoch_end(self, epoch, logs=None):
        keys = sorted(logs)
        lines = self.log_path.read_text().splitlines() if self.log_path.is_file() else []
        lines = lines or [",".join(["epoch", *keys])]
        lines.append(",".join([str(epoch), *(repr(float(logs[k])) for k in keys)]))
        with interrupts_deferred():  # saved_step always names what the checkpoint holds
            files.write_text(self.log_path, "\n".join(lines) + "\n")
            save_model(self.model, self.checkpoint)
            self.saved_step = int(self.model.optimizer.iterations.numpy())
        if BEST in logs and (self.best is None or logs[BEST] > self.best):
            self.best = float(logs[BEST])
            save_model(self.model, self.best_path)


def best_logged(log_path):
    """The best validation score in a run's log so far, or None."""
    if not Path(log_path).is_file():
        return None
    with open(log_path) as f:
        scores = [float(row[BEST]) for row in csv.DictReader(f) if row.get(BEST)]
    return max(scores, default=None)


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
