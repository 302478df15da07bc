"""distributed.py: TF_CONFIG checks, and a cluster whose peer never comes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import distributed

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
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    return process, cluster["worker"][1]


def test_an_absent_peer_is_named_and_given_up_on(tmp_path):
    process, peer = start_lonely_worker(tmp_path, timeout=6)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert f"waiting for worker 1 at {peer}" in stdout
    assert stderr.strip().splitlines() == [
        f"error: worker 1 at {peer} did not answer within 6 s; start it, or raise "
        f"--worker_timeout"]
    assert not (tmp_path / "run" / "model.keras").exists()


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
