"""main.py: flags, metrics against hand counts, the NaN guard, checkpoints, the three modes."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import main
from test_load_data import write_cifar, write_mnist

# Keras' own tensor-to-numpy conversion warns under numpy 2; nothing of ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ROOT = Path(__file__).resolve().parent.parent
TINY = ["--source", "synthetic", "--canvas", "16", "--digit_size", "8", "--batch_size", "8",
        "--eval_images", "16", "--sample_rows", "2", "--model", "fcn"]


def run_main(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def one_hot_model(preds, num_classes):
    """A stand-in model whose argmax is `preds`, to score known predictions."""
    logits = np.eye(num_classes, dtype=np.float32)[preds]                # (B, H, W, K)
    served = [0]

    def model(images, training):
        start = served[0]
        served[0] += len(images)
        return logits[start:start + len(images)]

    return model


# ---- flags ------------------------------------------------------------------

def test_flags_override_defaults_with_type_checks():
    cfg = main.parse_config(["--learning_rate", "1", "--batch_size=32", "--model", "dgcn"])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.batch_size == 32 and cfg.model == "dgcn"
    assert cfg.steps == main.STEPS and cfg.checkpoint == Path(main.OUT_DIR) / "model.keras"


@pytest.mark.parametrize("argv, words", [
    (["--learning_rat", "0.1"], ["unknown flag --learning_rat", "--learning_rate"]),
    (["--batch_size", "3.5"], ["--batch_size", "invalid int"]),
    (["--model", "resnet"], ["fcn", "unet", "gcn", "cheb", "dgcn", "hybrid"]),
    (["--num_classes", "3"], ["2, 11"]),
    (["--steps", "0"], ["--steps must be positive"]),
    (["--steps", "250"], ["multiple of --eval_every"]),
    (["--canvas", "30"], ["unet pools twice", "multiple of 4"]),
    (["--cpu_devices", "2"], ["--strategy mirrored only"]),
    (["--evaluate", "--checkpoint", "nowhere.keras"], ["no saved model at nowhere.keras"]),
])
def test_bad_flags_are_one_clear_sentence(argv, words):
    with pytest.raises(main.UsageError) as error:
        main.parse_config(argv)
    for word in words:
        assert word in str(error.value)


def test_multiworker_without_tf_config_is_one_clear_sentence(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    cfg = main.parse_config(["--strategy", "multiworker"])
    with pytest.raises(main.UsageError, match="--strategy multiworker needs TF_CONFIG"):
        main.make_strategy(cfg)


def test_cli_bad_flag_exits_without_traceback():
    result = run_main("--bogus", "1")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown flag --bogus")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---- metrics ----------------------------------------------------------------

def test_binary_metrics_match_hand_counts():
    truth = np.array([[[0, 1, 1],
                       [0, 1, 0],
                       [0, 0, 0]]])
    pred = np.array([[[0, 1, 0],
                      [1, 1, 0],
                      [0, 0, 0]]])
    # digit: TP = 2, FP = 1 (row 1, col 0), FN = 1 (row 0, col 2); background: TP = 5.
    metrics = main.score(one_hot_model(pred, 2), np.zeros((1, 3, 3, 3)), truth, 2)
    assert metrics["fg_iou"] == pytest.approx(2 / 4)
    assert metrics["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics["per_class_iou"] == pytest.approx([5 / 7, 2 / 4])
    assert metrics["miou"] == pytest.approx((5 / 7 + 2 / 4) / 2)
    assert metrics["pixel_accuracy"] == pytest.approx(7 / 9)
    assert metrics["n_images"] == 1


def test_metrics_aggregate_over_the_dataset_not_per_batch():
    # Image 1 has a big digit found perfectly, image 2 a one-pixel digit missed:
    # dataset-level IoU is 4/5, while a mean of per-image IoUs would be 1/2.
    truth = np.zeros((2, 4, 4), int)
    truth[0, :2, :2] = 1
    truth[1, 3, 3] = 1
    pred = truth.copy()
    pred[1, 3, 3] = 0
    metrics = main.score(one_hot_model(pred, 2), np.zeros((2, 4, 4, 3)), truth, 2, batch_size=1)
    assert metrics["fg_iou"] == pytest.approx(4 / 5)


def test_eleven_class_metrics_count_wrong_digits_as_class_errors_only():
    truth = np.array([[[0, 3, 3, 5]]])
    pred = np.array([[[0, 3, 4, 0]]])
    metrics = main.score(one_hot_model(pred, 11), np.zeros((1, 1, 4, 3)), truth, 11)
    # digit-vs-background: TP = 2 (cols 1, 2), FN = 1 (col 3), FP = 0.
    assert metrics["fg_iou"] == pytest.approx(2 / 3)
    per_class = metrics["per_class_iou"]
    assert per_class[0] == pytest.approx(1 / 2)      # background: 1 hit, 1 false
    assert per_class[3] == pytest.approx(1 / 2)  # class 3: 1 hit of 2 true
    assert per_class[4] == pytest.approx(0.0)        # class 4: predicted, never true
    assert per_class[5] == pytest.approx(0.0)        # class 5: true, missed
    assert per_class[1] is None                      # never true nor predicted
    present = [v for v in per_class if v is not None]
    assert metrics["miou"] == pytest.approx(sum(present) / len(present))


def test_loss_is_finite_on_empty_masks_and_round_trips():
    loss = main.SegmentationLoss(num_classes=2, dice_weight=1.0)
    y_true = np.zeros((2, 4, 4), np.int32)
    y_pred = np.random.default_rng(0).normal(size=(2, 4, 4, 2)).astype(np.float32)
    value = float(loss(y_true, y_pred))
    assert np.isfinite(value) and value > 0
    clone = main.SegmentationLoss.from_config(loss.get_config())
    assert float(clone(y_true, y_pred)) == pytest.approx(value)


# ---- training ---------------------------------------------------------------

class PoisonedData:
    """Real synthetic batches, with NaN images from step `bad_step` on."""

    def __init__(self, datagen, bad_step):
        self.datagen, self.bad_step, self.canvas = datagen, bad_step, datagen.canvas

    def sample(self, batch_size, split="train", step=None, rows=None):
        images, masks = self.datagen.sample(batch_size, split, step, rows)
        if step >= self.bad_step:
            images = np.full_like(images, np.nan)
        return images, masks


def test_nan_guard_keeps_the_run_alive(tmp_path):
    cfg = main.parse_config(TINY + ["--steps", "8", "--eval_every", "4",
                                    "--out_dir", str(tmp_path)])
    datagen = main.make_datagen(cfg)
    valid = datagen.test_set(8)
    model, _, _ = main.train(cfg, main.make_strategy(cfg), PoisonedData(datagen, bad_step=5), valid)
    weights = model.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    assert int(model.optimizer.iterations.numpy()) == 4  # back to the last good interval
    metrics = main.score(model, *valid, cfg.num_classes)
    assert 0 <= metrics["fg_iou"] <= 1
    reloaded = main.load_checkpoint(tmp_path / "model.keras")
    assert all(np.isfinite(w).all() for w in reloaded.get_weights())


def test_train_evaluate_predict_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = run_main(*TINY, "--steps", "10", "--eval_every", "5", "--out_dir", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("model.keras", "metrics.json", "config.json", "log.csv", "input_data.png",
                 "samples_fcn.png", "learning_curves_fcn.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["steps"] == 10
    assert "Traceback" not in result.stderr and "oneDNN" not in result.stderr

    result = run_main("--evaluate", "--checkpoint", str(out / "model.keras"), "--source",
                      "synthetic", "--digit_size", "8", "--eval_images", "16",
                      "--out_dir", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(metrics) >= {"fg_iou", "miou", "per_class_iou", "dice", "pixel_accuracy",
                            "n_images"}
    assert metrics["n_images"] == 16
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics

    # A folder holding only the test files (t10k-*, test_batch) is enough to evaluate.
    write_mnist(tmp_path / "test_only" / "mnist", n=0, t10k=6)
    write_cifar(tmp_path / "test_only" / "cifar", n=0, test=4)
    result = run_main("--evaluate", "--checkpoint", str(out / "model.keras"), "--data_dir",
                      str(tmp_path / "test_only"), "--digit_size", "8", "--eval_images", "10",
                      "--out_dir", str(tmp_path / "eval_test_only"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["n_images"] == 10

    from PIL import Image
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 50, 3), np.uint8)).save(photo)
    result = run_main("--predict", str(photo), "--checkpoint", str(out / "model.keras"),
                      "--out_dir", str(tmp_path / "pred"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pred" / "prediction.png").is_file()

    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    result = run_main("--predict", str(junk), "--checkpoint", str(out / "model.keras"))
    assert result.returncode == 2
    assert "not a readable image" in result.stderr and "Traceback" not in result.stderr


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    args = [*TINY, "--steps", "400", "--eval_every", "2", "--out_dir", str(tmp_path)]
    process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "log.csv"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 4:  # header + 3 intervals
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = main.load_checkpoint(tmp_path / "model.keras")
    done = int(saved.optimizer.iterations.numpy())
    assert done >= 4 and done % 2 == 0

    result = run_main(*TINY, "--model", "dgcn", "--steps", str(done + 4), "--resume",
                      "--out_dir", str(tmp_path))
    assert result.returncode == 2 and "holds a run with --model fcn" in result.stderr

    result = run_main(*TINY, "--steps", str(done + 4), "--eval_every", "2",
                      "--out_dir", str(tmp_path), "--resume")
    assert result.returncode == 0, result.stderr
    assert f"resuming {tmp_path / 'model.keras'} (fcn) at step {done}" in result.stdout
    resumed = main.load_checkpoint(tmp_path / "model.keras")
    assert int(resumed.optimizer.iterations.numpy()) == done + 4
    epochs = [int(line.split(",")[0]) for line in log.read_text().splitlines()[1:]]
    assert epochs[-2:] == [done // 2, done // 2 + 1]


def test_two_devices_follow_the_one_device_trajectory(tmp_path):
    # unet: batch norm too, whose statistics are synchronised across replicas.
    args = [*TINY, "--model", "unet", "--steps", "6", "--eval_every", "2",
            "--strategy", "mirrored"]
    losses = {}
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        result = run_main(*args, "--cpu_devices", str(devices), "--out_dir", str(out))
        assert result.returncode == 0, result.stderr
        assert f"{devices} replica" in result.stdout
        rows = (out / "log.csv").read_text().splitlines()[1:]
        losses[devices] = [float(row.split(",")[2]) for row in rows]
    assert len(losses[1]) == 3
    np.testing.assert_allclose(losses[2], losses[1], rtol=5e-4)  # 2.6% apart unsynchronised

    # A checkpoint written under two replicas resumes under the default strategy.
    result = run_main(*TINY, "--model", "unet", "--steps", "8", "--eval_every", "2",
                      "--resume", "--out_dir", str(tmp_path / "d2"))
    assert result.returncode == 0, result.stderr
    assert "at step 6" in result.stdout and "1 replica" in result.stdout


def test_worker_streams_together_hold_each_global_batch():
    # 2 workers x 2 local replicas: at every step the four slices, in replica
    # order, are the global batch a single device trains on.
    datagen = main.make_datagen(main.parse_config(TINY))
    single = list(main.make_dataset(datagen, 8, start_step=3).take(2).as_numpy_iterator())
    workers = [list(main.make_dataset(datagen, 8, 3, (first, 2, 4)).take(4).as_numpy_iterator())
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


def test_two_workers_follow_the_one_device_trajectory(tmp_path):
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
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr
        assert "2 replicas in sync" in stdout
    assert "(chief)" in outputs[0][0] and not (tmp_path / "worker1").exists()

    result = run_main(*args, "--out_dir", str(tmp_path / "single"))
    assert result.returncode == 0, result.stderr
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

    # The cluster's checkpoint is an ordinary model file.
    result = run_main("--evaluate", "--checkpoint", str(tmp_path / "worker0" / "model.keras"),
                      "--source", "synthetic", "--digit_size", "8", "--eval_images", "16",
                      "--out_dir", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["n_images"] == 16


def test_a_diverging_multiworker_run_ends_like_a_fit_run(tmp_path):
    # A one-worker cluster whose learning rate blows the weights up at once: the
    # custom loop logs the interval, restores the weights and finishes as fit does.
    port, = free_ports(1)
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]},
                                                  "task": {"type": "worker", "index": 0}})}
    args = [*TINY, "--steps", "4", "--eval_every", "2", "--learning_rate", "1e30"]
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *args, "--strategy",
                             "multiworker", "--out_dir", str(tmp_path / "cluster")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "weights of step 0 were restored" in result.stdout
    assert run_main(*args, "--out_dir", str(tmp_path / "fit")).returncode == 0
    logs = [(tmp_path / name / "log.csv").read_text().splitlines() for name in ("cluster", "fit")]
    assert len(logs[0]) == len(logs[1]) == 2 and logs[0][1].split(",")[2] == "nan"
    saved = main.load_checkpoint(tmp_path / "cluster" / "model.keras")
    assert int(saved.optimizer.iterations.numpy()) == 0
    assert all(np.isfinite(w).all() for w in saved.get_weights())
