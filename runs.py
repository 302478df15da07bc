"""The run folder: its config.json, checkpoint and log, written so that no finished run is lost.

A run folder holds model.keras (weights, optimizer, step), config.json (every
setting, the data as resolved), log.csv (a row per interval), metrics.json
(written last: it marks the run finished), eval_*.json and the pictures.
"""
import contextlib
import json
import shlex
import signal
import zipfile
from pathlib import Path

import files
import load_data
import model as model_lib
from model import keras  # model.py imports TensorFlow quietly

RUN_FILES = ("model.keras", "config.json", "log.csv", "metrics.json")


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
        raise load_data.DataError(f"{path} is not readable JSON; restore it, or pass the "
                                  f"--checkpoint of a run that has one") from None


def write_json(obj, path):
    files.write_text(path, json.dumps(obj, indent=2) + "\n")


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
            and shape_out[-1] in load_data.CLASS_COUNTS):
        raise load_data.DataError(f"{path} is a Keras model but not one of this project's "
                                  f"segmentation models ({', '.join(model_lib.MODELS)}); pass "
                                  f"a model.keras that `python main.py` wrote")
    return model


def save_model(model, path):
    """The whole model (weights, optimizer, step), replacing path only when complete."""
    with files.atomic_write(path) as tmp:
        model.save(tmp)


class RunWriter(keras.callbacks.Callback):
    """At each interval's end: the log with that interval's row, then the checkpoint.

    Both files are rewritten whole and atomically (keras.callbacks.CSVLogger appends in
    place, so a crash could leave half a row). The log may run one row ahead of the
    checkpoint, never behind: --resume drops the rows past the checkpoint (trim_log).
    """

    def __init__(self, checkpoint, log_path):
        super().__init__()
        self.checkpoint, self.log_path = Path(checkpoint), Path(log_path)
        self.saved_step = None

    def on_epoch_end(self, epoch, logs=None):
        keys = sorted(logs)
        lines = self.log_path.read_text().splitlines() if self.log_path.is_file() else []
        lines = lines or [",".join(["epoch", *keys])]
        lines.append(",".join([str(epoch), *(repr(float(logs[k])) for k in keys)]))
        with interrupts_deferred():  # saved_step always names what the checkpoint holds
            files.write_text(self.log_path, "\n".join(lines) + "\n")
            save_model(self.model, self.checkpoint)
            self.saved_step = int(self.model.optimizer.iterations.numpy())


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
