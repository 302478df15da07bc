"""distributed.py: TF_CONFIG, an absent peer, and 1 vs 2 devices or workers on one trajectory."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segm import distributed, pipeline
import load_data
import main
import model
from helpers import call_main, run_main, says

# Keras' own tensor-to-numpy conversion warns under numpy 2; nothing of ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ROOT = Path(__file__).resolve().parent.parent
TINY = ["--source", "synthetic", "--canvas", "16", "--digit_size", "8", "--batch_size", "8",
        "--eval_images", "16", "--model", "fcn", "--steps", "2", "--eval_every", "1"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("config", [
    "", "not json", "[]", '{"cluster": {}}', '{"cluster": {"worker": ["a:1"]}}',
    '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
    '{"cluster": {"worker": ["no-port"]}, "task": {"type": "worker", "index": 0}}',
])
def test_a_malformed_tf_config_is_one_sentence(monkeypatch, config):
    monkeypatch.setenv("TF_CONFIG", config)
    with pytest.raises(distributed.ClusterError, match="needs TF_CONFIG"):
        distributed.read_tf_config()


def test_tf_config_names_every_task_and_this_one(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["h0:1"], "worker": ["h1:2", "h2:3"]},
        "task": {"type": "worker", "index": 1}}))
    workers, me = distributed.read_tf_config()
    assert workers == [("chief", 0, "h0:1"), ("worker", 0, "h1:2"), ("worker", 1, "h2:3")]
    assert me == ("worker", 1)


def start_lonely_worker(tmp_path, timeout):
    """Worker 0 of a two-worker cluster whose worker 1 never starts."""
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *TINY, "--strategy", "multiworker",
         "--worker_timeout", str(timeout), "--out_dir", str(tmp_path / "run")],
        cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    return process, cluster["worker"][1]


@pytest.mark.slow
def test_an_absent_peer_is_named_and_given_up_on(tmp_path):
    process, peer = start_lonely_worker(tmp_path, timeout=6)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert f"waiting for worker 1 at {peer}" in stdout
    says(stderr, "worker 1", peer, "6 s", "--worker_timeout")
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.slow
def test_sigterm_ends_the_wait_at_once(tmp_path):
    process, peer = start_lonely_worker(tmp_path, timeout=600)
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline and "waiting for" not in line:
        line = process.stdout.readline()
        assert line or process.poll() is None, process.stderr.read()
    assert f"worker 1 at {peer}" in line
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - began < 10
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "interrupted" in stderr


@pytest.mark.slow
def test_two_devices_follow_the_one_device_trajectory(tmp_path, capsys):
    # unet: batch norm too, whose statistics are synchronised across replicas.
    args = [*TINY, "--model", "unet", "--steps", "6", "--eval_every", "2",
            "--strategy", "mirrored"]
    losses = {}
    for devices in (1, 2):
        # Each in a process of its own: logical devices must be set before TensorFlow
        # starts, and MirroredStrategy inside a test worker that has run many other
        # tests' TensorFlow once crashed it (a segfault in fit's iterator).
        out = tmp_path / f"d{devices}"
        result = run_main(*args, *(["--cpu_devices", str(devices)] if devices > 1 else []),
                          "--out_dir", str(out))
        status, stdout, stderr = result.returncode, result.stdout, result.stderr
        assert status == 0, stderr
        assert f"{devices} replica" in stdout
        rows = (out / "log.csv").read_text().splitlines()[1:]
        losses[devices] = [float(row.split(",")[2]) for row in rows]
    assert len(losses[1]) == 3
    np.testing.assert_allclose(losses[2], losses[1], rtol=5e-4)  # 2.6% apart unsynchronised

    # A checkpoint written under two replicas resumes under the default strategy.
    status, out, err = call_main(capsys, *TINY, "--model", "unet", "--steps", "8",
                                 "--eval_every", "2", "--strategy", "default", "--cpu_devices",
                                 "0", "--resume", "--out_dir", tmp_path / "d2")
    assert status == 0, err
    assert "at step 6" in out and "1 replica" in out


def test_worker_streams_together_hold_each_global_batch():
    # 2 workers x 2 local replicas: at every step the four slices, in replica
    # order, are the global batch a single device trains on.
    datagen = load_data.make_datagen(main.parse_config(TINY))
    single = list(pipeline.make_dataset(datagen, 8, start_step=3).take(2).as_numpy_iterator())
    workers = [list(pipeline.make_dataset(datagen, 8, 3, (first, 2, 4)).take(4).as_numpy_iterator())
               for first in (0, 2)]
    for step, (images, masks) in enumerate(single):
        pieces = [workers[w][2 * step + r] for w in (0, 1) for r in (0, 1)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in pieces]), images)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces]), masks)


def free_ports(n):
    import socket
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_follow_the_one_device_trajectory(tmp_path, capsys):
    # Two processes on loopback form a MultiWorkerMirroredStrategy cluster, as
    # two machines would; the chief writes, the other worker writes nothing.
    args = [*TINY, "--model", "unet", "--steps", "4", "--eval_every", "1"]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                      "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), *args, "--strategy", "multiworker",
             "--out_dir", str(tmp_path / f"worker{index}")],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr
        assert "2 replicas in sync" in stdout
    assert "(chief)" in outputs[0][0] and not (tmp_path / "worker1").exists()

    status, _, err = call_main(capsys, *args, "--out_dir", tmp_path / "single")
    assert status == 0, err
    logs = {}
    for name in ("worker0", "single"):
        with open(tmp_path / name / "log.csv") as f:
            logs[name] = list(csv.DictReader(f))
    assert len(logs["single"]) == 4 and logs["worker0"][0].keys() == logs["single"][0].keys()
    for key, tolerance in (("loss", 5e-4), ("val_loss", 5e-4), ("fg_iou", 0.01),
                           ("val_miou", 0.01)):
        np.testing.assert_allclose([float(row[key]) for row in logs["worker0"]],
                                   [float(row[key]) for row in logs["single"]],
                                   rtol=tolerance, err_msg=key)

    # The cluster's checkpoint is an ordinary model file, scored on the run's own data.
    status, out, err = call_main(capsys, "--evaluate", "--out_dir", tmp_path / "worker0")
    assert status == 0, err
    assert json.loads(out.strip().splitlines()[-1])["n_images"] == 16


@pytest.mark.slow
def test_a_diverging_multiworker_run_ends_like_a_fit_run(tmp_path, capsys):
    # A one-worker cluster whose learning rate blows the weights up at once: the
    # custom loop logs the interval, restores the weights and finishes as fit does.
    port, = free_ports(1)
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]},
                                                  "task": {"type": "worker", "index": 0}})}
    args = [*TINY, "--steps", "4", "--eval_every", "2", "--learning_rate", "1e30"]
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *args, "--strategy",
                             "multiworker", "--out_dir", str(tmp_path / "cluster")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "weights of step 0 were restored" in result.stdout
    assert call_main(capsys, *args, "--out_dir", tmp_path / "fit")[0] == 0
    logs = [(tmp_path / name / "log.csv").read_text().splitlines() for name in ("cluster", "fit")]
    assert len(logs[0]) == len(logs[1]) == 2 and logs[0][1].split(",")[2] == "nan"
    saved = model.load_model(tmp_path / "cluster" / "model.keras")
    assert int(saved.optimizer.iterations.numpy()) == 0
    assert all(np.isfinite(w).all() for w in saved.get_weights())


@pytest.mark.slow
def test_a_cluster_trains_on_your_own_folder_with_unlabelled_pixels(tmp_path):
    # Pictures smaller than the canvas: every crop runs off them, into unlabelled pixels,
    # which the custom loop's confusion matrix must leave out as metrics.py does.
    from test_folders import write_folder
    folder = write_folder(tmp_path / "cells", n=12, sizes=((12, 14),))
    port, = free_ports(1)
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]},
                                                  "task": {"type": "worker", "index": 0}})}
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--data_dir", str(folder),
                             "--canvas", "16", "--batch_size", "8", "--model", "fcn", "--steps",
                             "2", "--eval_every", "1", "--strategy", "multiworker", "--out_dir",
                             str(tmp_path / "run")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "nan" not in rows[-1]
