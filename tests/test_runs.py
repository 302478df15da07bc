"""Run folders: every run its own numbered folder under im/, the latest one found by default,
its pictures shown in im/, and the edit-run-look loop of a fresh clone kept clean."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import main
from helpers import ROOT, TINY, call_main
from segm import runs
from segm.errors import UsageError

SIZES = ["--canvas", "16", "--digit_size", "8", "--batch_size", "8", "--eval_images", "16",
         "--sample_rows", "2", "--steps", "2"]


def test_folders_are_numbered_claimed_once_and_the_latest_holds_a_run(tmp_path):
    home = tmp_path / "im"
    with pytest.raises(UsageError, match="holds no run yet"):
        runs.latest(home)
    assert [runs.claim(home) for _ in range(3)] == [home / "train", home / "train2",
                                                    home / "train3"]
    (home / "train2" / "config.json").write_text("{}")
    (home / "train10").mkdir()  # claimed, but nothing written yet: not a run
    (home / "train07").mkdir()
    (home / "train07" / "config.json").write_text("{}")  # not a name claim() makes
    assert runs.latest(home) == home / "train2"
    assert [runs.number_of(name) for name in ("train", "train2", "train1", "train07", "trainx",
                                              "test2")] == [1, 2, None, None, None, None]


def test_showing_a_run_replaces_only_the_copies_of_the_run_shown_before(tmp_path):
    home, first, second = tmp_path / "im", tmp_path / "im" / "train", tmp_path / "im" / "train2"
    for folder, names in ((first, ["samples_unet.png", "input_data.png"]),
                          (second, ["samples_fcn.png", "input_data.png"])):
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_text(f"{folder.name} {name}")
    (home / "mine.png").write_text("a picture of my own")
    runs.show_pictures(first, home)
    assert (home / "samples_unet.png").read_text() == "train samples_unet.png"
    runs.show_pictures(second, home)
    assert sorted(p.name for p in home.glob("*.png")) == ["input_data.png", "mine.png",
                                                          "samples_fcn.png"]
    assert (home / "input_data.png").read_text() == "train2 input_data.png"
    assert (first / "samples_unet.png").is_file()  # the run keeps its own
    assert json.loads((home / "latest.json").read_text())["run"] == str(second)


def test_running_again_makes_a_new_run_and_the_modes_take_the_latest(tmp_path, capsys):
    for _ in range(2):
        status, out, err = call_main(capsys, "--source", "synthetic", *SIZES, "--model", "fcn")
        assert status == 0, err
    assert "run: im/train2\n" in out and "(copied to im/)" in out
    for folder in ("train", "train2"):
        assert {"model.keras", "config.json", "log.csv", "metrics.json",
                "samples_fcn.png"} <= {p.name for p in (tmp_path / "im" / folder).iterdir()}
    assert (tmp_path / "im" / "samples_fcn.png").is_file()
    status, out, err = call_main(capsys, "--evaluate")
    assert status == 0 and "scoring im/train2/model.keras" in out, err
    status, out, err = call_main(capsys, "--resume", "--steps", "4")
    assert status == 0 and "resuming im/train2/model.keras" in out, err
    assert json.loads((tmp_path / "im" / "train2" / "config.json").read_text())["steps"] == 4
    assert json.loads((tmp_path / "im" / "train" / "config.json").read_text())["steps"] == 2
    before = sorted((tmp_path / "im" / "train").iterdir())
    status, out, err = call_main(capsys, "--source", "synthetic", *SIZES, "--model", "fcn",
                                 "--overwrite")  # the latest run, replaced; the first kept
    assert status == 0 and "run: im/train2\n" in out, err
    assert json.loads((tmp_path / "im" / "train2" / "config.json").read_text())["steps"] == 2
    assert sorted((tmp_path / "im" / "train").iterdir()) == before
    assert not (tmp_path / "im" / "train3").exists()


def test_a_new_run_with_bad_data_leaves_no_folder(tmp_path, capsys):
    status, _, err = call_main(capsys, *SIZES, "--data_dir", tmp_path / "nowhere")
    assert status == 1 and "nowhere" in err
    assert not (tmp_path / "im").exists()


@pytest.mark.slow
def test_a_fresh_clone_runs_edits_a_constant_runs_again_and_stays_clean(tmp_path):
    clone = tmp_path / "clone"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in listed:  # the checkout as it stands, committed or not, without its runs
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=clone, capture_output=True, text=True, check=True).stdout
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "clone")
    first = subprocess.run([sys.executable, "main.py", *SIZES], cwd=clone,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "run: im/train\n" in first.stdout and "synthetic" in first.stdout
    assert git("status", "--porcelain") == ""
    script = (clone / "main.py").read_text()
    assert 'MODEL = "unet_fast"' in script
    (clone / "main.py").write_text(script.replace('MODEL = "unet_fast"', 'MODEL = "fcn"', 1))
    second = subprocess.run([sys.executable, "main.py", *SIZES], cwd=clone,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "run: im/train2\n" in second.stdout
    for folder, name in (("train", "unet_fast"), ("train2", "fcn")):
        held = {p.name for p in (clone / "im" / folder).iterdir()}
        assert {"model.keras", "config.json", "log.csv", f"samples_{name}.png"} <= held
        assert json.loads((clone / "im" / folder / "config.json").read_text())["model"] == name
    assert (clone / "im" / "samples_fcn.png").is_file()
    assert not (clone / "im" / "samples_unet_fast.png").exists()  # im/ shows the latest run
    assert git("status", "--porcelain") == " M main.py\n"


def test_the_readmes_notebook_lines_run_and_return_scores_and_masks(tmp_path, capsys):
    import signal
    import numpy as np
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    handler = signal.getsignal(signal.SIGTERM)
    found = {}
    exec(code, found)  # in this test's own folder, so the run is im/train here
    assert signal.getsignal(signal.SIGTERM) is handler  # a notebook's handlers are left alone
    assert found["run"] == Path("im") / "train" and (tmp_path / "im" / "train").is_dir()
    assert 0 <= found["scores"]["fg_iou"] <= 1 and found["scores"]["n_images"] == 500
    masks = found["masks"]
    assert len(masks) == 1 and masks[0].shape == (48, 64)
    assert np.issubdtype(masks[0].dtype, np.integer)


def test_the_functions_raise_instead_of_exiting(tmp_path):
    import main
    with pytest.raises(UsageError, match="--steps must be positive"):
        main.train(steps=0)
    with pytest.raises(UsageError, match="holds no run yet"):
        main.evaluate()


@pytest.mark.parametrize("stop", [KeyboardInterrupt, main.Interrupted(37, 0)])
def test_a_run_stopped_before_its_first_checkpoint_leaves_no_run(capsys, monkeypatch, stop):
    def stopped(cfg, *args, **kwargs):  # Ctrl-C in the first interval, config.json written
        if cfg.tensorboard:
            (cfg.out_dir / "tensorboard" / "train").mkdir(parents=True)
        raise stop
    monkeypatch.setattr(main, "fit", stopped)
    status, _, err = call_main(capsys, *TINY, "--steps", "2", "--tensorboard")
    assert status == 130 and "train is removed" in err and "Traceback" not in err
    assert "--resume" not in err and not (runs.RUNS / "train").exists()  # nothing to continue
    named = Path("mine")
    named.mkdir()
    (named / "notes.txt").write_text("the user's")
    status, _, err = call_main(capsys, *TINY, "--steps", "2", "--out_dir", named)
    assert status == 130 and f"{named} is kept, with no run in it" in err
    assert runs.state(named) is None and (named / "notes.txt").read_text() == "the user's"
    status, _, err = call_main(capsys, *TINY, "--steps", "2", "--out_dir", named)
    assert status == 130  # the same command starts it anew: no run there refuses it
