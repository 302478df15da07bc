"""main.py: for each mistake a user can make, one sentence, the exit status and every byte kept.

Exit 2 is a usage error, 1 bad data or a file problem, 130 an interruption; a run
folder's files are compared byte for byte before and after."""
import json
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from segm import distributed
import load_data
import main
import model
from segm import metrics
from segm.tf_quiet import keras
from test_load_data import write_cifar, write_mnist

# Keras' own tensor-to-numpy conversion warns under numpy 2; nothing of ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
from helpers import (ROOT, SHAPES, TINY, call_main, one_sentence, says, run_main, snapshot,
                     step_of, temporaries)


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


@pytest.mark.slow
def test_nan_guard_keeps_the_run_alive(tmp_path):
    cfg = main.parse_config(TINY + ["--steps", "8", "--eval_every", "4",
                                    "--out_dir", str(tmp_path)])
    datagen = load_data.make_datagen(cfg)
    valid = datagen.test_set(8)
    strategy, _ = distributed.make_strategy(cfg.strategy)
    net, _, _ = main.fit(cfg, strategy, PoisonedData(datagen, bad_step=5), valid)
    assert all(np.isfinite(w).all() for w in net.get_weights())
    assert int(net.optimizer.iterations.numpy()) == 4  # back to the last good interval
    scores = metrics.score(net, *valid, cfg.num_classes)
    assert 0 <= scores["fg_iou"] <= 1
    reloaded = model.load_model(tmp_path / "model.keras")
    assert all(np.isfinite(w).all() for w in reloaded.get_weights())


def test_the_run_callbacks_have_no_per_step_hook():
    # A per-step hook makes Keras wait for every step before dispatching the next.
    from segm.checkpoints import RunWriter
    from segm.nan_guard import NanGuard
    base = keras.callbacks.Callback
    for callback in (NanGuard, RunWriter):
        for hook in ("on_batch_end", "on_train_batch_end", "on_train_batch_begin"):
            assert getattr(callback, hook) is getattr(base, hook), (callback, hook)


@pytest.mark.parametrize("decay", [0.0, 0.5])
def test_weight_decay_shrinks_each_weight_by_rate_times_decay(decay):
    cfg = main.parse_config(TINY + ["--weight_decay", str(decay), "--learning_rate", "0.2"])
    net = model.build_model("fcn", 2, 16, 16)
    main.compile_model(net, cfg)
    before = [w.numpy() for w in net.trainable_variables]
    # Zero gradients: Adam's own step is 0/(0 + eps) = 0, so only the decay moves a weight.
    net.optimizer.apply_gradients([(np.zeros_like(w), v) for w, v in
                                   zip(before, net.trainable_variables)])
    rate = cfg.learning_rate / 10  # the warm-up's first rate
    for old, new in zip(before, net.trainable_variables):
        np.testing.assert_allclose(new.numpy(), old * (1 - rate * decay), rtol=1e-5, atol=1e-7)


# ---- a run describes itself -----------------------------------------------------

@pytest.mark.slow
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


def test_evaluate_writes_beside_its_model_and_never_over_another_folders_score(
        run_copy, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default --out_dir im/ would be
    for where in ("a", "b"):     # two data folders of the same name
        write_mnist(tmp_path / where / "data" / "mnist", n=0, t10k=6)
        write_cifar(tmp_path / where / "data" / "cifar", n=0, test=4)
    config = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps(
        {**config, "source": "real", "data_dir": str((tmp_path / "a" / "data").resolve())}))
    scored = []
    for flags in ([], ["--data_dir", tmp_path / "b" / "data"]):
        status, out, err = call_main(capsys, "--evaluate", "--checkpoint",
                                     run_copy / "model.keras", "--eval_images", "10", *flags)
        assert status == 0, err
        scored.append(json.loads(out.strip().splitlines()[-1]))
    assert not (tmp_path / "im").exists()
    own = run_copy / "eval_data_10_images_seed2024.json"
    other = [p for p in run_copy.glob("eval_data_*_10_images_seed2024.json") if p != own]
    assert json.loads(own.read_text()) == scored[0]
    assert len(other) == 1 and json.loads(other[0].read_text()) == scored[1]


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


def test_a_run_that_finishes_here_meanwhile_is_not_replaced(tmp_path, capsys, monkeypatch):
    # The folder is checked at the start and again once held: between the two, another
    # run may have finished there (while this one read its data).
    run = tmp_path / "run"
    real_lock = main.files.FolderLock

    def lock_after_another_run_finished(folder):
        run.mkdir(exist_ok=True)
        for name in ("config.json", "metrics.json"):
            (run / name).write_text('{"the": "other run"}')
        return real_lock(folder)

    monkeypatch.setattr(main.files, "FolderLock", lock_after_another_run_finished)
    status, _, err = call_main(capsys, *TINY, "--steps", "2", "--eval_every", "1",
                               "--out_dir", run)
    assert status == 2 and "holds a finished run" in one_sentence(err)
    assert (run / "metrics.json").read_text() == '{"the": "other run"}'


def test_resume_of_a_finished_run_needs_more_steps(finished_run, capsys):
    before = snapshot(finished_run)
    status, _, err = call_main(capsys, "--resume", "--out_dir", finished_run)
    assert status == 2 and "pass a larger --steps" in one_sentence(err)
    status, _, err = call_main(capsys, "--resume", "--model", "dgcn", "--steps", "6",
                               "--out_dir", finished_run)
    assert status == 2 and says(err, "--model dgcn", "'fcn'")
    assert snapshot(finished_run) == before


def test_resume_checks_the_runs_own_interval_not_the_files(finished_run, capsys, monkeypatch):
    # main.py edited to STEPS = 200 after the run (4 steps, every 2): 200 is no multiple of
    # the file's EVAL_EVERY (150), but the run resumed keeps its own steps and interval
    monkeypatch.setitem(main.HYPERPARAMETERS, "steps", 200)
    assert 200 % main.HYPERPARAMETERS["eval_every"]
    status, _, err = call_main(capsys, "--resume", "--out_dir", finished_run)
    assert status == 2 and "pass a larger --steps" in one_sentence(err)
    status, _, err = call_main(capsys, "--resume", "--steps", "5", "--out_dir", finished_run)
    assert status == 2 and says(err, "--steps (5) must be a multiple of --eval_every (2)")


@pytest.mark.slow
def test_overwrite_replaces_a_finished_run(run_copy, capsys):
    for old in ("samples_unet.png", "learning_curves_unet.png", "prediction_cat.png"):
        (run_copy / old).write_text("the old run's")  # pictures of another model
    before = snapshot(run_copy)
    status, _, err = call_main(capsys, *TINY, "--steps", "2", "--eval_every", "1", "--seed", "1",
                               "--overwrite", "--out_dir", run_copy)
    assert status == 0, err
    assert json.loads((run_copy / "config.json").read_text())["seed"] == 1
    assert len((run_copy / "log.csv").read_text().splitlines()) == 1 + 2
    assert step_of(run_copy / "model.keras") == 2
    assert snapshot(run_copy)["metrics.json"] != before["metrics.json"]
    assert not any((run_copy / old).exists() for old in ("samples_unet.png",
                   "learning_curves_unet.png", "prediction_cat.png"))
    assert not temporaries(run_copy)


def test_impossible_out_dir_is_one_sentence(capsys):
    status, _, err = call_main(capsys, *TINY, "--steps", "2", "--out_dir", "/dev/null/x")
    assert status == 1 and "/dev/null" in one_sentence(err)


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigterm_stops_a_run_that_its_continue_command_finishes(tmp_path, capsys):
    # One run in the background: a second run into its folder is refused while it
    # works, SIGTERM stops it at an interval, and the command it prints finishes it.
    run = tmp_path / "run"
    args = [*TINY, "--steps", "160", "--eval_every", "20", "--out_dir", str(run)]
    process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = run / "log.csv"

        def wait_for_rows(n):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                # The log row comes first, then the checkpoint: wait for both.
                if (log.is_file() and len(log.read_text().splitlines()) >= 1 + n
                        and (run / "model.keras").is_file()):
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

    logged = log.read_text().splitlines()[:1 + saved // 20]
    assert len(logged) == 1 + saved // 20  # the log is never behind the checkpoint
    result = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"at step {saved}" in result.stdout
    assert step_of(run / "model.keras") == 160 and (run / "metrics.json").is_file()
    rows = log.read_text().splitlines()
    assert [int(row.split(",")[0]) for row in rows[1:]] == list(range(8))
    assert rows[:len(logged)] == logged  # the rows up to the checkpoint are kept as they were
    assert not temporaries(run)




def test_evaluate_on_turned_digits_is_named_for_it_and_said(run_copy, capsys):
    before = snapshot(run_copy)
    status, out, err = call_main(capsys, "--evaluate", "--out_dir", run_copy,
                                 "--digit_angle_min", "90", "--digit_angle_max", "90")
    assert status == 0, err
    assert "--digit_angle_min 90.0 differs from the run's 0.0" in out
    name = "eval_synthetic_16_images_seed2024_digit_angle_min90_digit_angle_max90.json"
    assert json.loads((run_copy / name).read_text()) == json.loads(out.strip().splitlines()[-1])
    after = snapshot(run_copy)
    assert {k: v for k, v in after.items() if k != name} == before  # the run's own files kept
