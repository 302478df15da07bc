"""Models on disk: a checkpoint written whole at every interval, best.keras, SavedModel export."""
import importlib.util
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np

from segm import files
from segm.errors import DataError, FileError, UsageError
from segm.pyramid_layers import GraphPool, GraphUnpool, PyramidChebConv
from segm.region_layers import RegionGraph
from segm.runs import BEST, best_logged, interrupts_deferred
from segm.tf_quiet import keras


def save_model(model, path):
    """The whole model (weights, optimizer, step), replacing path only when complete."""
    with files.atomic_write(path) as tmp:
        model.save(tmp)


def export(model, folder, format="savedmodel"):
    """model.export (Keras) into a new folder: a TensorFlow SavedModel, or model.onnx in it.
    The folder appears whole or not at all: written beside it under a temporary name,
    then renamed."""
    if any(isinstance(layer, RegionGraph) for layer in model.layers):
        raise UsageError(f"{model.name} cannot be exported: it builds its region graphs with "
                         f"numpy (SLIC) inside the model, which neither a SavedModel nor ONNX can "
                         f"hold; serve its .keras file with model.py instead")
    if format == "onnx":
        check_onnx(model)
    folder = Path(folder)
    temporary = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(temporary, ignore_errors=True)  # a leftover of an export that was killed
    try:
        if format == "onnx":
            temporary.mkdir()
            model(np.zeros((1, *model.input_shape[1:]), np.float32))  # Keras exports called models
            with warnings.catch_warnings():  # Keras's tf2onnx patch asks numpy for np.object
                warnings.filterwarnings("ignore", category=FutureWarning, module="keras")
                model.export(str(temporary / "model.onnx"), format="onnx", verbose=False)
        else:
            model.export(str(temporary), verbose=False)
        temporary.rename(folder)
    except OSError as e:
        raise FileError(f"could not write {folder} ({e.strerror or e}); free some space "
                        f"or choose another --export folder") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def check_onnx(model):
    """UsageError unless the model's ops convert to ONNX and tf2onnx is installed."""
    sparse = next((layer for layer in model.layers if isinstance(
        layer, (PyramidChebConv, GraphPool, GraphUnpool)) or getattr(layer, "stencil", True)
        is False), None)
    if sparse is not None:
        raise UsageError(f"{model.name} cannot be exported to ONNX: its {type(sparse).__name__} "
                         f"layers multiply by a sparse matrix (TensorFlow's SparseMatrixMatMul), "
                         f"which has no ONNX operator; export it as a SavedModel (no --format)")
    if not all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnx")):
        raise UsageError("--format onnx needs tf2onnx and onnx; install them with "
                         "`pip install -r requirements-onnx.txt`")


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
            # The checkpoint just written holds these very weights: a byte copy of it
            # costs a thousandth of serializing the model again.
            with files.atomic_write(self.best_path) as tmp:
                shutil.copyfile(self.checkpoint, tmp)


def load(path, names):
    """A saved model whose name is one of `names`, or one clear sentence (DataError) why not."""
    try:
        model = keras.saving.load_model(path)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a model this project saved ({type(e).__name__}); "
                        f"pass the model.keras that `python main.py` wrote") from None
    shape_in, shape_out = model.input_shape, model.output_shape
    if not (model.name in names and isinstance(shape_in, tuple) and len(shape_in) == 4
            and shape_in[-1] == 3 and tuple(shape_out[:3]) == tuple(shape_in[:3])
            and 2 <= shape_out[-1] <= 255):
        raise DataError(f"{path} is a Keras model but not one of this project's segmentation "
                        f"models ({', '.join(names)}); pass a model.keras that `python "
                        f"main.py` wrote")
    return model
