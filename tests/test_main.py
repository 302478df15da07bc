"""main.py: flags, metrics against hand counts, the NaN guard, and for each mistake a user can
make: one sentence on stderr, the exit status (2 usage, 1 bad data or file, 130 interrupted),
and every byte of the run folder as it was."""
import csv
import hashlib
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

import distributed
import load_data
import main
from model import keras
from test_load_data import write_cifar, write_mnist

# Keras' own tensor-to-numpy conversion warns under numpy 2; nothing of ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ROOT = Path(__file__).resolve().parent.parent
SHAPES = ["--canvas", "16", "--digit_size", "8", "--batch_size", "8", "--eval_images", "16",
          "--sample_rows", "2", "--model", "fcn"]
TINY = ["--source", "synthetic", *SHAPES]


def run_main(*args, timeout=300):
    """main.py in its own process, as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def call_main(capsys, *args):
    """main.main in this process (no TensorFlow start-up to wait for): (status, stdout, stderr)."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        status = main.main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGTERM, handler)  # main() makes SIGTERM a Ctrl-C; not pytest's
    out, err = capsys.readouterr()
    return status, out, err


def one_sentence(err):
    """The error line, after checking it is the only line and no traceback."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def snapshot(folder):
    """{name: sha256} of every file in folder, hidden ones included."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).iterdir()) if p.is_file()}


def temporaries(folder):
    """Hidden files other than the lock: what an interrupted atomic write would leave."""
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".") and p.name != ".lock"]


def step_of(checkpoint):
    return int(main.load_checkpoint(checkpoint).optimizer.iterations.numpy())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run (4 steps, checkpoints at 2 and 4), shared; copy it to change it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert main.main([*TINY, "--steps", "4", "--eval_every", "2", "--out_dir", str(out)]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


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


@pytest.mark.parametrize("argv, words", [
    (["--learning_rate", "nan"], ["--learning_rate must be a finite number"]),
    (["--digit_scale_max", "inf"], ["--digit_scale_max must be a finite number"]),
    (["--clip_norm", "-1"], ["--clip_norm must be zero or more"]),
    (["--seed", "-1"], ["--seed must be zero or more"]),
    (["--dice_weight", "-0.5"], ["--dice_weight must be zero or more"]),
    (["--steps", "0"], ["--steps must be positive"]),
    (["--batch_size", "0"], ["--batch_size must be positive"]),
    (["--learning_rate", "0"], ["--learning_rate must be positive"]),
    (["--canvas", "0"], ["--canvas must be positive"]),
    (["--batch_size", "100000", "--canvas", "2048"], ["GB", "lower --batch_size"]),
    (["--evaluate", "--predict", "x.png"], ["--evaluate and --predict exclude each other"]),
    (["--resume", "--overwrite"], ["--resume and --overwrite exclude each other"]),
    (["--source", "synthetic", "--data_dir", "somewhere"], ["--data_dir would be ignored"]),
    (["--checkpoint", "model.h5"], ["must name a .keras file"]),
    (["--sample_rows", "65"], ["too tall", "at most 64"]),
    (["--strategy", "mirrored", "--cpu_devices", "65"], ["at most 64"]),
])
def test_bad_values_are_refused_before_any_work(argv, words, tmp_path, capsys):
    out = tmp_path / "run"
    began = time.perf_counter()
    status, _, err = call_main(capsys, *argv, "--out_dir", out)
    assert status == 2
    for word in words:
        assert word in one_sentence(err)
    assert not out.exists() and time.perf_counter() - began < 5


def test_out_dir_that_is_a_file_and_checkpoint_that_is_a_folder_are_usage_errors(tmp_path, capsys):
    status, _, err = call_main(capsys, *TINY, "--out_dir", " ")
    assert status == 2 and "--out_dir is empty" in one_sentence(err)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    status, _, err = call_main(capsys, *TINY, "--out_dir", a_file)
    assert status == 2 and "is a file; name a folder" in one_sentence(err)
    assert a_file.read_text() == "mine"
    folder = tmp_path / "model.keras"
    folder.mkdir()
    status, _, err = call_main(capsys, *TINY, "--checkpoint", folder, "--out_dir", tmp_path / "r")
    assert status == 2 and "must name a .keras file" in one_sentence(err)
    assert not (tmp_path / "r").exists() and list(folder.iterdir()) == []


def test_cli_bad_flag_exits_without_traceback():
    result = run_main("--bogus", "1")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown flag --bogus")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_multiworker_without_tf_config_is_one_clear_sentence(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(distributed.ClusterError, match="--strategy multiworker needs TF_CONFIG"):
        distributed.make_strategy("multiworker")
    status, _, err = call_main(capsys, *TINY, "--strategy", "multiworker",
                               "--out_dir", tmp_path / "run")
    assert status == 2 and "needs TF_CONFIG" in one_sentence(err)
    assert not (tmp_path / "run").exists()


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
    assert per_class[3] == pytest.approx(1 / 2)      # class 3: 1 hit of 2 true
    assert per_class[4] == pytest.approx(0.0)        # class 4: predicted, never true
    assert per_class[5] == pytest.approx(0.0)        # class 5: true, missed
    assert per_class[1] is None                      # never true nor predicted
    present = [v for v in per_class if v is not None]
    assert metrics["miou"] == pytest.approx(sum(present) / len(present))


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
    strategy, _ = distributed.make_strategy(cfg.strategy)
    model, _, _ = main.train(cfg, strategy, PoisonedData(datagen, bad_step=5), valid)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert int(model.optimizer.iterations.numpy()) == 4  # back to the last good interval
    metrics = main.score(model, *valid, cfg.num_classes)
    assert 0 <= metrics["fg_iou"] <= 1
    reloaded = main.load_checkpoint(tmp_path / "model.keras")
    assert all(np.isfinite(w).all() for w in reloaded.get_weights())


# ---- a run describes itself -----------------------------------------------------

def test_a_run_describes_itself_and_evaluate_reproduces_its_score(real_data_dir, tmp_path,
                                                                  capsys):
    run = tmp_path / "run"
    status, _, err = call_main(capsys, *SHAPES, "--data_dir", real_data_dir, "--steps", "4",
                               "--eval_every", "2", "--seed", "3", "--out_dir", run)
    assert status == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["source"] == "real" and config["data_dir"] == str(real_data_dir.resolve())
    assert (config["canvas"], config["num_classes"], config["digit_size"]) == (16, 2, 8)
    assert (config["digits_per_image"], config["digit_scale_min"],
            config["digit_scale_max"]) == (1, 1.0, 1.0)
    assert (config["seed"], config["test_seed"], config["eval_images"]) == (3, 2024, 16)
    assert config["data"].startswith("real MNIST")

    before = snapshot(run)
    result = run_main("--evaluate", "--out_dir", run)  # no data flags: the run's own
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "oneDNN" not in result.stderr
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    trained = json.loads((run / "metrics.json").read_text())
    assert scored["n_images"] == 16
    assert (scored["fg_iou"], scored["miou"]) == (trained["fg_iou"], trained["miou"])
    own = f"eval_{real_data_dir.resolve().name}_16_images_seed2024.json"
    assert json.loads((run / own).read_text()) == scored
    after = snapshot(run)
    assert set(after) - set(before) == {own}
    assert {n: h for n, h in after.items() if n in before and n != ".lock"} == {
        n: h for n, h in before.items() if n != ".lock"}  # .lock holds the last pid only

    status, out, err = call_main(capsys, "--evaluate", "--out_dir", run, "--eval_images", "8")
    assert status == 0, err
    assert "--eval_images 8 differs from the run's 16" in out
    assert json.loads(out.strip().splitlines()[-1])["n_images"] == 8
    assert (run / f"eval_{real_data_dir.resolve().name}_8_images_seed2024.json").is_file()
    assert snapshot(run)["metrics.json"] == before["metrics.json"] and not temporaries(run)


def test_a_folder_of_only_the_test_files_is_enough_to_evaluate(finished_run, tmp_path, capsys):
    write_mnist(tmp_path / "test_only" / "mnist", n=0, t10k=6)
    write_cifar(tmp_path / "test_only" / "cifar", n=0, test=4)
    status, out, err = call_main(capsys, "--evaluate", "--checkpoint",
                                 finished_run / "model.keras", "--data_dir",
                                 tmp_path / "test_only", "--eval_images", "10",
                                 "--out_dir", tmp_path / "eval")
    assert status == 0, err
    assert "--data_dir" in out and "differs from the run's" in out
    assert json.loads(out.strip().splitlines()[-1])["n_images"] == 10
    assert (tmp_path / "eval" / "eval_test_only_10_images_seed2024.json").is_file()


# ---- no silent stand-in -----------------------------------------------------------

@pytest.mark.parametrize("state", ["missing", "empty"])
def test_a_data_dir_without_the_files_is_refused_and_writes_nothing(state, tmp_path, capsys):
    data = tmp_path / "data"
    if state == "empty":
        data.mkdir()
    status, _, err = call_main(capsys, *SHAPES, "--data_dir", data, "--out_dir", tmp_path / "run")
    assert status in (1, 2) and str(data) in one_sentence(err)
    assert not (tmp_path / "run").exists()


def test_overwrite_with_a_wrong_data_dir_deletes_nothing(finished_run, capsys, tmp_path):
    before = snapshot(finished_run)
    status, _, err = call_main(capsys, *SHAPES, "--data_dir", tmp_path / "nowhere",
                               "--overwrite", "--out_dir", finished_run)
    assert status == 1 and "nowhere" in one_sentence(err)
    assert snapshot(finished_run) == before


# ---- nothing finished is lost -------------------------------------------------------

def test_a_fresh_run_into_a_finished_run_is_refused(finished_run, capsys):
    before = snapshot(finished_run)
    status, _, err = call_main(capsys, *TINY, "--out_dir", finished_run)
    sentence = one_sentence(err)
    assert status == 2 and "finished run" in sentence
    assert "--resume" in sentence and "--overwrite" in sentence
    assert snapshot(finished_run) == before and not temporaries(finished_run)


def test_resume_of_a_finished_run_needs_more_steps(finished_run, capsys):
    before = snapshot(finished_run)
    status, _, err = call_main(capsys, "--resume", "--out_dir", finished_run)
    assert status == 2 and "pass a larger --steps" in one_sentence(err)
    status, _, err = call_main(capsys, "--resume", "--model", "dgcn", "--steps", "6",
                               "--out_dir", finished_run)
    assert status == 2 and "--model dgcn differs from the run's 'fcn'" in one_sentence(err)
    assert snapshot(finished_run) == before


def test_overwrite_replaces_a_finished_run(run_copy, capsys):
    before = snapshot(run_copy)
    status, _, err = call_main(capsys, *TINY, "--steps", "2", "--eval_every", "1", "--seed", "1",
                               "--overwrite", "--out_dir", run_copy)
    assert status == 0, err
    assert json.loads((run_copy / "config.json").read_text())["seed"] == 1
    assert len((run_copy / "log.csv").read_text().splitlines()) == 1 + 2
    assert step_of(run_copy / "model.keras") == 2
    assert snapshot(run_copy)["metrics.json"] != before["metrics.json"]
    assert not temporaries(run_copy)


def test_impossible_out_dir_is_one_sentence(capsys):
    status, _, err = call_main(capsys, *TINY, "--steps", "2", "--out_dir", "/dev/null/x")
    assert status == 1 and "/dev/null" in one_sentence(err)


def test_a_full_disk_keeps_a_loadable_checkpoint_and_names_the_continue_command(tmp_path,
                                                                                capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        run = disk / "run"
        status, _, err = call_main(capsys, *TINY, "--steps", "8", "--eval_every", "1",
                                   "--out_dir", run)
        sentence = one_sentence(err)
        assert status == 1 and "is full" in sentence
        assert f"--out_dir {run} --resume` continues" in sentence
        assert step_of(run / "model.keras") >= 1  # a whole checkpoint, not half of one
        assert not temporaries(run)
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_sigterm_stops_a_run_that_its_continue_command_finishes(tmp_path, capsys):
    # One run in the background: a second run into its folder is refused while it
    # works, SIGTERM stops it at an interval, and the command it prints finishes it.
    run = tmp_path / "run"
    args = [*TINY, "--steps", "160", "--eval_every", "20", "--out_dir", str(run)]
    process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = run / "log.csv"

        def wait_for_rows(n):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                if log.is_file() and len(log.read_text().splitlines()) >= 1 + n:
                    return
                time.sleep(0.05)
            pytest.fail("the run ended or stalled before it could be interrupted")

        wait_for_rows(1)
        for mode in ("--overwrite", "--resume"):
            status, _, err = call_main(capsys, *args, mode)
            sentence = one_sentence(err)
            assert status == 1 and "another run is writing" in sentence, mode
            assert "continues" not in sentence  # nothing failed, so there is nothing to continue
            assert (run / "model.keras").is_file() and log.is_file()
        wait_for_rows(2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert "interrupted at step" in last and "Traceback" not in stderr
    command = last.split("continue with: ")[1]
    assert shlex.split(command) == ["python", "main.py", *args, "--resume"]
    saved = step_of(run / "model.keras")
    assert saved >= 40 and saved % 20 == 0 and f"checkpoint holds step {saved}" in last
    assert not temporaries(run)

    logged = log.read_text().splitlines()
    assert len(logged) == 1 + saved // 20  # the log never runs ahead of the checkpoint
    result = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"at step {saved}" in result.stdout
    assert step_of(run / "model.keras") == 160 and (run / "metrics.json").is_file()
    rows = log.read_text().splitlines()
    assert [int(row.split(",")[0]) for row in rows[1:]] == list(range(8))
    assert rows[:len(logged)] == logged  # the rows up to the checkpoint are kept as they were
    assert not temporaries(run)


# ---- --predict -----------------------------------------------------------------------

def png_header(width, height):
    """The first bytes of a PNG whose header claims width x height RGB pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))


def make_picture(kind, path):
    from PIL import Image
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 50, 3), np.uint8)
    if kind == "rgb":
        Image.fromarray(rgb).save(path)
    elif kind == "grey16":
        Image.fromarray(rng.integers(0, 65536, (37, 50)).astype(np.uint16)).save(path)
    elif kind == "palette":
        Image.fromarray(rgb).convert("P").save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(path)
    elif kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees to show upright
        Image.fromarray(rgb).save(path, exif=exif)
    return path


@pytest.mark.parametrize("kind, suffix", [("rgb", ".png"), ("grey16", ".png"),
                                          ("palette", ".png"), ("rgba", ".png"),
                                          ("exif", ".jpg")])
def test_predict_reads_every_common_kind_of_picture(kind, suffix, finished_run, tmp_path,
                                                    capsys):
    from PIL import Image
    photo = make_picture(kind, tmp_path / f"photo_{kind}{suffix}")
    with Image.open(photo) as picture:
        assert picture.mode == {"rgb": "RGB", "grey16": "I;16", "palette": "P",
                                "rgba": "RGBA", "exif": "RGB"}[kind]
    pixels = main.read_image(photo, max_pixels=10**6)
    assert pixels.dtype == np.uint8 and pixels.shape == ((50, 37, 3) if kind == "exif"
                                                         else (37, 50, 3))
    status, out, err = call_main(capsys, "--predict", photo, "--checkpoint",
                                 finished_run / "model.keras", "--out_dir", tmp_path / "pred")
    assert status == 0, err
    with Image.open(tmp_path / "pred" / f"prediction_photo_{kind}.png") as picture:
        assert picture.size == (1200, 430)
    assert not temporaries(tmp_path / "pred")


def test_predict_refuses_what_is_not_a_usable_picture(finished_run, tmp_path, capsys):
    from PIL import Image
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        truncated)
    truncated.write_bytes(truncated.read_bytes()[:len(truncated.read_bytes()) // 2])
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(100_000, 100_000))
    folder = tmp_path / "folder.png"
    folder.mkdir()
    cases = [(junk, 1, "not a readable image"), (truncated, 1, "not a readable image"),
             (huge, 1, "shrink it first"), (folder, 2, "is a folder"),
             (tmp_path / "missing.png", 2, "does not exist")]
    before = snapshot(finished_run)
    for path, code, words in cases:
        began = time.perf_counter()
        status, _, err = call_main(capsys, "--predict", path, "--out_dir", finished_run)
        assert status == code and words in one_sentence(err), path
        assert time.perf_counter() - began < 5, path  # refused from the header: nothing decoded
    assert snapshot(finished_run) == before


def test_a_header_a_little_over_the_limit_is_refused_without_a_warning(tmp_path):
    # Between the limit and twice it PIL warns rather than refuses: the warning must not
    # reach stderr beside our sentence (here it would be raised as an error).
    path = tmp_path / "big.png"
    path.write_bytes(png_header(40, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(load_data.DataError, match="is 40x40 pixels, more than the 1,000"):
            main.read_image(path, max_pixels=1000)
    from PIL import Image
    assert Image.MAX_IMAGE_PIXELS > 10**6  # PIL's own limit is back for everyone else


def test_predict_refuses_a_keras_model_that_is_not_ours(tmp_path, capsys):
    inputs = keras.Input((16, 16, 3))
    foreign = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    foreign.save(tmp_path / "foreign.keras")
    photo = make_picture("rgb", tmp_path / "photo.png")
    status, _, err = call_main(capsys, "--predict", photo, "--checkpoint",
                               tmp_path / "foreign.keras", "--out_dir", tmp_path / "pred")
    assert status == 1 and "not one of this project's" in one_sentence(err)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    status, _, err = call_main(capsys, "--predict", photo, "--checkpoint", junk)
    assert status == 1 and "is not a model this project saved" in one_sentence(err)
    assert not (tmp_path / "pred").exists()


def test_tiling_adds_no_seams():
    # A per-pixel model: every tile gives each pixel the logits the whole image would,
    # so the tiled class map is exactly the 1x1 convolution's argmax over the image.
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(3, 1)
    model = keras.Model(inputs, conv(inputs))
    pixels = np.random.default_rng(1).integers(0, 256, (37, 50, 3), np.uint8)
    kernel, bias = conv.get_weights()
    logits = load_data.normalize(pixels) @ kernel[0, 0] + bias          # (H, W, K)
    pred, tiles = main.segment_tiled(model, pixels, batch_size=4)
    assert pred.shape == (37, 50) and tiles > 1
    np.testing.assert_array_equal(pred, logits.argmax(-1))


# ---- several devices and workers --------------------------------------------------------

def test_two_devices_follow_the_one_device_trajectory(tmp_path, capsys):
    # unet: batch norm too, whose statistics are synchronised across replicas.
    args = [*TINY, "--model", "unet", "--steps", "6", "--eval_every", "2",
            "--strategy", "mirrored"]
    losses = {}
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        if devices == 1:  # this process's one CPU device will do
            status, stdout, stderr = call_main(capsys, *args, "--out_dir", out)
        else:  # logical devices must be set before TensorFlow starts: a process of its own
            result = run_main(*args, "--cpu_devices", str(devices), "--out_dir", str(out))
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
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
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


def test_a_diverging_multiworker_run_ends_like_a_fit_run(tmp_path, capsys):
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
    assert call_main(capsys, *args, "--out_dir", tmp_path / "fit")[0] == 0
    logs = [(tmp_path / name / "log.csv").read_text().splitlines() for name in ("cluster", "fit")]
    assert len(logs[0]) == len(logs[1]) == 2 and logs[0][1].split(",")[2] == "nan"
    saved = main.load_checkpoint(tmp_path / "cluster" / "model.keras")
    assert int(saved.optimizer.iterations.numpy()) == 0
    assert all(np.isfinite(w).all() for w in saved.get_weights())
