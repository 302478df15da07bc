"""configurator.py: flags over the defaults, and every bad value refused in one sentence."""
import time

import pytest

from segm import configurator, distributed
import main
from segm.errors import UsageError
from helpers import TINY, call_main, one_sentence, run_main


def test_flags_override_defaults_with_type_checks():
    cfg = main.parse_config(["--learning_rate", "1", "--batch_size=32", "--model", "dgcn"])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.batch_size == 32 and cfg.model == "dgcn"
    assert cfg.steps == main.STEPS and cfg.out_dir is None and cfg.checkpoint is None  # a new run


@pytest.mark.parametrize("argv, words", [
    (["--learning_rat", "0.1"], ["unknown flag --learning_rat", "--learning_rate"]),
    (["--batch_size", "3.5"], ["--batch_size", "invalid int"]),
    (["--model", "resnet"], ["fcn", "unet", "gcn", "cheb", "dgcn", "hybrid"]),
    (["--num_classes", "3"], ["2, 11"]),
    (["--steps", "250", "--eval_every", "150"], ["multiple of --eval_every"]),
    (["--model", "unet", "--canvas", "30"], ["unet pools 2 times", "multiple of 4"]),
    (["--model", "unet_fused", "--canvas", "36"], ["unet_fused pools 3 times", "multiple of 8"]),
    (["--cpu_devices", "2"], ["--strategy mirrored only"]),
    (["--evaluate", "--checkpoint", "nowhere.keras"], ["no saved model at nowhere.keras"]),
])
def test_bad_flags_are_one_clear_sentence(argv, words):
    with pytest.raises(UsageError) as error:
        main.parse_config(argv)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("steps, interval", [(200, 100), (1000, 125), (450, 150), (7, 7)])
def test_steps_edited_alone_take_the_nearest_interval_that_divides_them(steps, interval,
                                                                         capsys):
    cfg = main.parse_config(["--steps", str(steps)])  # EVAL_EVERY as main.py has it (150)
    assert cfg.eval_every == interval and steps % interval == 0
    note = capsys.readouterr().out
    assert (f"every {interval} steps" in note) == (min(steps, main.EVAL_EVERY) != interval)


@pytest.mark.parametrize("argv, words", [
    (["--learning_rate", "nan"], ["--learning_rate must be a finite number"]),
    (["--digit_scale_max", "inf"], ["--digit_scale_max must be a finite number"]),
    (["--clip_norm", "-1"], ["--clip_norm must be zero or more"]),
    (["--weight_decay", "-0.1"], ["--weight_decay must be zero or more"]),
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


def test_resume_takes_the_runs_data_folder_however_it_is_spelt(tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").touch()
    saved = {"source": "real", "data_dir": str((tmp_path / "data").resolve()), "seed": 3}
    cfg = main.parse_config(["--resume", "--data_dir", "data", "--out_dir", "run"])  # as its continue command says
    configurator.adopt_saved_settings(cfg, saved, "resume", main.HYPERPARAMETERS)
    assert cfg.seed == 3
    cfg = main.parse_config(["--resume", "--data_dir", "other", "--out_dir", "run"])
    with pytest.raises(UsageError, match="--data_dir other differs from the run's"):
        configurator.adopt_saved_settings(cfg, saved, "resume", main.HYPERPARAMETERS)
    for part in ("images", "masks"):  # your own folder, moved: --data_dir says where it is now
        (tmp_path / "other" / part).mkdir()
    configurator.adopt_saved_settings(cfg, {**saved, "source": "folder"}, "resume",
                                      main.HYPERPARAMETERS)
    assert cfg.data_dir == "other"
    cfg = main.parse_config(["--evaluate", "--data_dir", "other", "--out_dir", "run"])
    configurator.adopt_saved_settings(cfg, {**saved, "source": "folder"}, "evaluate",
                                      main.HYPERPARAMETERS)
    assert "--data_dir other differs from the run's" in capsys.readouterr().out  # said aloud


def test_own_folders_need_no_room_for_digits(tmp_path):
    (tmp_path / "cells" / "images").mkdir(parents=True)
    cfg = main.parse_config(["--data_dir", str(tmp_path / "cells"), "--canvas", "12",
                             "--model", "unet"])
    assert cfg.canvas == 12
    with pytest.raises(UsageError, match="do not fit a 12-pixel canvas"):
        main.parse_config(["--canvas", "12", "--model", "unet"])  # digits of 14 pixels


def test_scoring_a_real_run_on_the_synthetic_stand_in_reads_no_folder(tmp_path):
    (tmp_path / "model.keras").touch()
    cfg = main.parse_config(["--evaluate", "--source", "synthetic", "--checkpoint",
                             str(tmp_path / "model.keras")])
    saved = {"source": "real", "data_dir": str(tmp_path), "canvas": 16}
    configurator.adopt_saved_settings(cfg, saved, "evaluate", main.HYPERPARAMETERS)
    assert cfg.source == "synthetic" and not cfg.data_dir and cfg.canvas == 16


def test_help_shows_every_constants_comment_default_and_choices():
    comments = configurator.comments_beside(main.__file__)
    assert set(main.HYPERPARAMETERS) <= set(comments)  # every constant is explained
    assert all(len(text) > 10 for text in comments.values())
    assert comments["out_dir"].endswith("the latest for --resume/--evaluate/--predict/--export")
    done = run_main("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())  # argparse wraps lines where it likes
    for name, default in main.HYPERPARAMETERS.items():
        assert f"--{name}" in text and f"default: {default!r}" in text
        assert " ".join(comments[name].split()) in text
    for name, allowed in main.CHOICES.items():
        assert f"one of {', '.join(map(str, allowed))}" in text


def test_comments_are_read_from_the_source(tmp_path):
    script = tmp_path / "script.py"
    script.write_text('A = 1  # one\n      # and more\nB = "#"  # b\nx = 2  # not a constant\n'
                      'C = 3\n# a comment of its own\nD = 4  # d\n')
    assert configurator.comments_beside(script) == {"a": "one and more", "b": "b", "d": "d"}


def test_the_memory_check_needs_no_glibc_call(monkeypatch, capsys):
    import os
    real = os.sysconf

    def sysconf(name):  # macOS has no SC_AVPHYS_PAGES: os.sysconf raises for it
        if name == "SC_AVPHYS_PAGES":
            raise ValueError("unrecognized configuration name")
        return real(name)
    monkeypatch.setattr(os, "sysconf", sysconf)
    with pytest.raises(UsageError, match="needs about 1,000,000.0 GB of memory and"):
        configurator.check_memory("training", 1e15, "lower --batch_size")
    configurator.check_memory("training", 1e6, "lower --batch_size")  # fits: nothing said


def test_where_free_memory_cannot_be_read_the_check_is_skipped_with_a_note(monkeypatch,
                                                                           capsys):
    from segm import memory

    def unsupported():
        raise NotImplementedError("psutil: this platform is not supported")
    monkeypatch.setattr(memory.psutil, "virtual_memory", unsupported)
    configurator.check_memory("training", 1e15, "lower --batch_size")
    assert "note: this system does not say how much memory is free" in capsys.readouterr().out
