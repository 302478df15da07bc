"""tf_quiet.py: TensorFlow's known start-up lines are dropped, every other line is shown."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segm import tf_quiet

ROOT = Path(__file__).resolve().parent.parent


# TensorFlow 2.21's start-up lines, as recorded on a CPU-only machine, and from
# CUDA machines the ones that say a plugin was registered twice.
TF_NOISE = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795980236.592129    4614 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1795980151.973939    3084 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1795980152.070001    3084 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1795980178.529310    3585 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
E0000 00:00:1712345678.123456   12345 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered
E0000 00:00:1712345678.123456   12345 cuda_fft.cc:607] Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered
E0000 00:00:1712345678.123456   12345 cuda_blas.cc:1515] Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when one has already been registered
W0000 00:00:1712345678.123456   12345 computation_placer.cc:177] computation placer already registered. Please check linkage and avoid linking the same target more than once.
W0000 00:00:1712345678.123456   12345 py_utils.cc:38] TF-TRT Warning: Could not find TensorRT
"""
FATAL = "F0000 fake.cc:1] Check failed: this TensorFlow cannot start\n"
FAKE_TENSORFLOW = f"""
import os
os.write(2, {(TF_NOISE + FATAL).encode()!r})
raise ImportError("the fake TensorFlow")
"""


def run_python(code, **env):
    """`python -c code` in the project folder; env changes the environment, None unsets."""
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_filter_drops_the_known_notices_and_keeps_everything_else():
    noise = TF_NOISE.splitlines(keepends=True)
    assert all(any(notice in line for line in noise) for notice in tf_quiet.TF_STARTUP_NOTICES)
    real = ["F0000 00:00:1795980151.000000    3084 op_kernel.cc:1] Check failed: x == y\n",
            "UserWarning: a real warning from an import\n", "\n", "a last line without newline"]
    mixed = [noise[0], real[0], *noise[1:5], real[1], real[2], *noise[5:], real[3]]
    assert tf_quiet.drop_startup_notices("".join(mixed)) == "".join(real)
    assert tf_quiet.drop_startup_notices(TF_NOISE) == ""


@pytest.mark.slow
@pytest.mark.parametrize("env", [{}, {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "1"}],
                         ids=["default", "tf-log-level-0"])
def test_import_is_silent(env):
    # TF_CPP_MIN_LOG_LEVEL=0 lets TensorFlow print every notice, the cuInit error too.
    done = run_python("import model; model.tf.constant(0)", **env)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


@pytest.mark.slow
def test_segm_tf_logs_shows_what_tensorflow_prints():
    done = run_python("import os, model; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))",
                      SEGM_TF_LOGS="1", TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL=None)
    assert done.returncode == 0 and done.stdout == "None\n"
    assert "oneDNN custom operations are on" in done.stderr


def test_a_failing_tensorflow_import_shows_its_own_lines_before_the_error(tmp_path):
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    done = run_python("import model", PYTHONPATH=str(tmp_path))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == FATAL.strip()
    assert lines[-1] == "ImportError: the fake TensorFlow"
    assert not any(notice in done.stderr for notice in tf_quiet.TF_STARTUP_NOTICES)
