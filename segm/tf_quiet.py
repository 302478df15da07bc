"""Import TensorFlow and Keras with their known start-up notices dropped, every other line kept."""
import contextlib
import os
import sys
import tempfile

__all__ = ["keras", "tf"]

# TF 2.21 writes these start-up notices from C++ straight to file descriptor 2,
# whatever TF_CPP_MIN_LOG_LEVEL says, so sys.stderr cannot catch them. They
# come at import and when the devices are first listed (the cuInit line).
TF_STARTUP_NOTICES = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "TF-TRT Warning",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",  # the second line of the one above
    "computation placer already registered",
)
# SEGM_TF_LOGS=1 shows everything TensorFlow prints, for when it misbehaves.
SHOW_TF_LOGS = os.environ.get("SEGM_TF_LOGS") == "1"


def drop_startup_notices(text):
    """text without the lines that hold one of TF_STARTUP_NOTICES; every other line is kept."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not any(notice in line for notice in TF_STARTUP_NOTICES))


@contextlib.contextmanager
def startup_notices_dropped():
    """Capture fd 2 in the block, then write the captured lines but the known notices to stderr."""
    # Written back in `finally`, so an error raised in the block is shown with
    # what TensorFlow said before it. A process that dies outright (a C++ abort)
    # loses it: run with SEGM_TF_LOGS=1 to see it.
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(drop_startup_notices(captured.read().decode(errors="replace")))
            sys.stderr.flush()


if not SHOW_TF_LOGS:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # errors still show
with contextlib.nullcontext() if SHOW_TF_LOGS else startup_notices_dropped():
    import keras
    import tensorflow as tf
    # Listing the devices runs cuInit now, inside the capture, rather than at the
    # first op; unlike an op it leaves them configurable (logical devices, memory growth).
    tf.config.list_physical_devices()
