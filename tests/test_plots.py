"""plots.py: every picture is a whole PNG of the expected size, drawn without pyplot."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segm import plots
from segm.errors import FileError

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)
HEADER = "epoch,fg_iou,loss,miou,val_fg_iou,val_loss,val_miou"


def opened(path):
    """(size, mode) of the PNG at path, after checking it decodes in full."""
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        picture.load()
        return picture.size, picture.mode


def masks_of(num_classes, *shape):
    return RNG.integers(0, num_classes, shape)


def test_drawing_leaves_pyplot_and_its_backend_alone(tmp_path):
    # A bare Figure draws off-screen: nothing to close, no global backend switched.
    code = ("import sys, numpy as np; from segm import plots; "
            "plots.prediction(np.zeros((8, 8, 3)), np.zeros((8, 8), int), 2, 't', sys.argv[1]); "
            "print('matplotlib.pyplot' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.png")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout == "False\n", done.stderr
    assert opened(tmp_path / "p.png")[1] == "RGBA"


@pytest.mark.parametrize("num_classes", [2, 11])
def test_samples_is_one_row_per_example(num_classes, tmp_path):
    path = tmp_path / "samples_fcn.png"
    plots.samples(RNG.random((3, 16, 16, 3)), masks_of(num_classes, 3, 16, 16),
                  masks_of(num_classes, 3, 16, 16), num_classes, "fcn", path)
    assert opened(path) == ((800, 760), "RGBA")  # figsize (8, 2.2 x 3 rows + 1) at 100 dpi
    assert os.listdir(tmp_path) == ["samples_fcn.png"]


def test_error_overlay_colours_each_kind_of_mistake():
    truth = np.array([[0, 1, 2, 0]])
    pred = np.array([[0, 0, 3, 1]])
    overlay = plots.error_overlay(np.ones((1, 4, 3)), truth, pred)
    np.testing.assert_allclose(overlay[0], [(0.6, 0.6, 0.6), (0.2, 0.4, 1.0),
                                            (1.0, 0.9, 0.1), (1.0, 0.2, 0.2)])


@pytest.mark.parametrize("header", [HEADER, "epoch,loss,miou,val_loss,val_miou"])
def test_learning_curves_from_a_log(header, tmp_path):
    log = tmp_path / "log.csv"
    keys = header.split(",")[1:]
    rows = [",".join([str(epoch), *(f"{RNG.random():.4f}" for _ in keys)]) for epoch in range(3)]
    log.write_text("\n".join([header, *rows]) + "\n")
    path = tmp_path / "learning_curves_fcn.png"
    assert plots.learning_curves(log, 100, "fcn", path) is True
    assert opened(path) == ((1000, 360), "RGBA")


def test_learning_curves_of_a_header_only_log_is_false_and_draws_nothing(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(HEADER + "\n")
    assert plots.learning_curves(log, 100, "fcn", tmp_path / "curves.png") is False
    assert os.listdir(tmp_path) == ["log.csv"]


@pytest.mark.parametrize("num_classes", [2, 11])
def test_prediction_of_an_image_of_any_shape(num_classes, tmp_path):
    path = tmp_path / "prediction_photo.png"
    plots.prediction(RNG.random((37, 50, 3)), masks_of(num_classes, 37, 50), num_classes,
                     "photo.png", path)
    assert opened(path) == ((1200, 430), "RGBA")


def test_input_grid_of_sixteen_pairs(tmp_path):
    path = tmp_path / "input_data.png"
    plots.input_grid(RNG.random((16, 16, 16, 3)), masks_of(2, 16, 16, 16), 2,
                     "synthetic font digits on procedural backgrounds (as asked)", path)
    assert opened(path) == ((880, 520), "RGBA")  # 4 x 4 pairs: figsize (8.8, 5.2)


def test_class_colours_are_distinct_with_a_black_background():
    for num_classes in (2, 11):
        colours = plots.class_colours(num_classes)
        assert colours.shape == (num_classes, 3) and (colours[0] == 0).all()
        assert len({tuple(c) for c in colours}) == num_classes


def test_a_picture_that_cannot_be_written_is_one_sentence_and_closes_its_figure(tmp_path):
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(FileError, match="is a file, not a folder"):
        plots.prediction(RNG.random((8, 8, 3)), masks_of(2, 8, 8), 2, "x",
                         tmp_path / "a_file" / "prediction.png")


def test_error_title_counts_foreground_and_right_classes_by_hand():
    mask = np.array([[0, 3, 3, 255], [0, 5, 0, 0]])
    pred = np.array([[4, 3, 2, 7], [0, 5, 0, 0]])
    # foreground: truth {(0,1), (0,2), (1,1)}, found {(0,0), (0,1), (0,2), (1,1)}; the
    # unlabelled pixel counts in neither: IoU 3/4; right class at (0,1) and (1,1): 2 of 3.
    assert plots.error_title(mask, pred, 8) == "fg IoU 0.75, 67% right class"
    binary = np.where(mask == 255, 255, mask > 0)  # two classes: the IoU alone
    assert plots.error_title(binary, (pred > 0).astype(int), 2) == "errors (IoU 0.75)"
    assert plots.error_title(np.zeros((2, 2), int), np.zeros((2, 2), int), 11) == "errors"


def test_the_confusion_picture_is_drawn_from_the_runs_matrix(tmp_path, capsys):
    from helpers import TINY, call_main
    status, _, err = call_main(capsys, *TINY, "--num_classes", "11", "--steps", "2",
                               "--out_dir", tmp_path / "run")
    assert status == 0, err
    scores = json.loads((tmp_path / "run" / "metrics.json").read_text())
    cm = np.array(scores["confusion"])
    assert cm.shape == (11, 11) and cm.sum(1).tolist() == scores["class_pixels"]
    picture = Image.open(tmp_path / "run" / "confusion_fcn.png")
    assert picture.size == (750, 650)
