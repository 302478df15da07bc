"""A folder of your own images and masks: layouts, checks, the split, augmentation, streaming."""
import contextlib
import io
import json
import re
import signal

import numpy as np
import pytest
from PIL import Image

from segm import folders, layouts
import main
import model
from segm import predict
from segm import readers
from helpers import call_main, one_sentence, says
from model import SegmentationLoss
from segm.tf_quiet import keras
from segm.errors import DataError
from segm.readers import IGNORE


def boxes(rng, height, width, classes=(1, 2)):
    """An image with a bright square per class on a dark noisy ground, and its mask; the mask
    can be read back from the pixels: class k where channel k-1 is bright."""
    image = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    for k in classes:
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        mask[y:y + 8, x:x + 8] = k
    for k in classes:
        image[..., k - 1][mask == k] = 230
    return image, mask


def from_pixels(image):
    """The mask boxes() drew, read back from an image in 0..255."""
    bright = image > 160
    return np.where(bright[..., 0], 1, np.where(bright[..., 1], 2, 0))


def write_folder(root, n=20, sizes=((40, 56),), seed=0, suffix=".png", classes=(1, 2)):
    """root/images and root/masks with n pairs drawn by boxes()."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = boxes(rng, *sizes[i % len(sizes)], classes)
        Image.fromarray(image).save(root / "images" / f"p{i:03d}{suffix}")
        Image.fromarray(mask).save(root / "masks" / f"p{i:03d}.png")
    return root


# ---- layouts and the split

def test_a_plain_folder_is_split_by_the_test_seed_into_disjoint_parts(tmp_path):
    root = write_folder(tmp_path / "own", n=30)
    assert layouts.is_folder(root) and not layouts.is_folder(tmp_path)
    data = folders.FolderData(root, canvas=16, test_seed=7)
    names = data.split_names()
    assert [len(names[p]) for p in ("train", "valid", "test")] == [21, 3, 6]  # 70 / 10 / 20 %
    every = names["train"] + names["valid"] + names["test"]
    assert sorted(every) == [f"p{i:03d}" for i in range(30)]  # each pair in one part only
    assert folders.FolderData(root, canvas=16, test_seed=7).split_names() == names
    assert folders.FolderData(root, canvas=16, test_seed=8).split_names()["test"] != names["test"]
    assert data.num_classes == 3 and "3 classes (from the masks)" in data.describe()


def test_train_and_test_subfolders_are_the_users_own_split(tmp_path):
    write_folder(tmp_path / "own" / "train", n=10)
    write_folder(tmp_path / "own" / "test", n=4, seed=1, classes=(1, 2, 3))
    data = folders.FolderData(tmp_path / "own", canvas=16)
    assert [p.image.parent.parent.name for p in data.parts["test"]] == ["test"] * 4
    assert len(data.parts["train"]) + len(data.parts["valid"]) == 10
    assert data.num_classes == 4  # from the masks of both parts
    assert "train/ and test/ as given" in data.describe()


def test_a_recorded_split_is_kept_and_a_missing_file_named(tmp_path):
    root = write_folder(tmp_path / "own", n=12)
    saved = {"train": ["p000", "p001"], "valid": ["p002"], "test": ["p011"]}
    data = folders.FolderData(root, canvas=16, saved_split=saved)
    assert data.split_names() == saved
    with pytest.raises(DataError, match="'p099' of the run's split is no longer in"):
        folders.FolderData(root, canvas=16, saved_split={**saved, "test": ["p099"]})


# ---- one sentence for each kind of bad folder

def bad_folder(tmp_path, damage):
    root = write_folder(tmp_path / "own", n=12)
    damage(root)
    return root


def rgb_mask(root):
    Image.new("RGB", (56, 40)).save(root / "masks" / "p003.png")


def big_value(root):
    mask = np.zeros((40, 56), np.uint8)
    mask[0, 0] = 7
    Image.fromarray(mask).save(root / "masks" / "p004.png")


@pytest.mark.parametrize("damage, expected", [
    (lambda root: (root / "masks" / "p002.png").unlink(),
     "p002.png has no mask of the same name in"),
    (lambda root: Image.fromarray(np.zeros((40, 56), np.uint8)).save(root / "masks" / "x.png"),
     "x.png has no image of the same name in"),
    (lambda root: Image.fromarray(np.zeros((40, 50), np.uint8)).save(root / "masks" / "p005.png"),
     "p005.png is 56x40 pixels but its mask p005.png is 50x40"),
    (rgb_mask, "p003.png is a RGB picture, but a mask holds one class number per pixel"),
    (lambda root: (root / "images" / "notes.txt").write_text("hi"),
     "notes.txt is not a PNG or JPG or JPEG file"),
    (lambda root: (root / "images" / "p006.png").write_bytes(b"not a picture"),
     "p006.png is not a readable image"),
    (lambda root: [p.unlink() for p in (root / "masks").iterdir()] and (root / "masks").rmdir(),
     "masks is missing; a folder of your own holds images/ and masks/"),
])
def test_each_bad_folder_gets_its_sentence_and_no_run(tmp_path, capsys, damage, expected):
    root = bad_folder(tmp_path, damage)
    status, _, err = call_main(capsys, "--data_dir", root, "--out_dir", tmp_path / "run",
                               "--canvas", "16", "--steps", "2")
    assert status == 1 and expected in one_sentence(err), err
    assert not (tmp_path / "run").exists()


def test_a_class_beyond_the_given_count_names_the_mask(tmp_path, capsys):
    root = bad_folder(tmp_path, big_value)
    status, _, err = call_main(capsys, "--data_dir", root, "--num_classes", "3", "--out_dir",
                               tmp_path / "run", "--canvas", "16", "--steps", "2")
    assert status == 1 and says(err, "p004.png", "class 7", "3 classes")
    assert folders.FolderData(root, canvas=16).num_classes == 8  # unless given: from the masks


def test_a_jpeg_mask_and_an_unlabelled_folder_are_refused(tmp_path):
    root = write_folder(tmp_path / "own", n=6)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(DataError, match="is a JPEG file; save masks as PNG"):
        readers.read_mask(tmp_path / "m.jpg", 100)
    for path in (root / "masks").iterdir():
        Image.fromarray(np.zeros((40, 56), np.uint8)).save(path)
    with pytest.raises(DataError, match="every mask in .* is background"):
        folders.FolderData(root, canvas=16)


def test_folder_only_flags_are_checked(tmp_path, capsys):
    root = write_folder(tmp_path / "own", n=6)
    status, _, err = call_main(capsys, "--data_dir", root, "--source", "real")
    assert status == 2 and "holds your own images and masks" in one_sentence(err)
    status, _, err = call_main(capsys, "--data_dir", root, "--num_classes", "256")
    assert status == 2 and says(err, "--num_classes", "255")


# ---- reading: EXIF, palette masks, streaming

def test_exif_orientation_turns_image_and_size_as_the_eye_sees_them(tmp_path):
    rng = np.random.default_rng(3)
    upright, mask = boxes(rng, 24, 40)
    raw = Image.fromarray(np.rot90(upright, 1).copy())  # stored a quarter turn to the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to view"
    raw.save(tmp_path / "photo.png", exif=exif)
    assert readers.picture_size(tmp_path / "photo.png", 10**6) == (24, 40)
    np.testing.assert_array_equal(readers.read_image(tmp_path / "photo.png", 10**6), upright)
    raw.save(tmp_path / "photo.jpg", exif=exif, quality=100)
    seen = readers.read_image(tmp_path / "photo.jpg", 10**6)
    assert seen.shape == (24, 40, 3) and (from_pixels(seen) == mask).mean() > 0.98


def test_palette_masks_give_their_indices(tmp_path):
    mask = np.array([[0, 1, 2], [IGNORE, 1, 0]], np.uint8)
    picture = Image.fromarray(mask, mode="L").convert("P")
    picture.putpalette([v for k in range(256) for v in (k, 255 - k, 0)])
    picture.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    np.testing.assert_array_equal(readers.read_mask(tmp_path / "m.png", 100), mask)


def test_a_batch_reads_only_its_own_pictures(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "own", n=40)
    data = folders.FolderData(root, canvas=16, seed=1)
    read = []
    monkeypatch.setattr(folders, "read_image", lambda path, cap: read.append(path.stem)
                        or readers.read_image(path, cap))
    images, masks = data.sample(5, step=3)
    assert images.shape == (5, 16, 16, 3) and masks.shape == (5, 16, 16) and len(read) == 5
    again, _ = data.sample(5, step=3)  # batch k is the same whenever it is drawn
    np.testing.assert_array_equal(images, again)
    # An epoch shows every training pair once: 28 pairs in batches of 7.
    seen = []
    for step in range(4):
        read.clear()
        data.sample(7, step=step)
        seen += read
    assert sorted(seen) == sorted(data.split_names()["train"])


# ---- augmentation keeps image and mask together

def test_crop_at_whole_pixels_is_the_pictures_own_pixels():
    rng = np.random.default_rng(4)
    image, mask = boxes(rng, 30, 40)
    view, labels = folders.crop(image, mask, 16, 5, 9)
    np.testing.assert_array_equal(np.round((view + 1) * 127.5), image[5:21, 9:25])
    np.testing.assert_array_equal(labels, mask[5:21, 9:25])
    view, labels = folders.crop(image, mask, 16, 20, 30)  # off the bottom right corner
    assert (labels[10:, :] == IGNORE).all() and (labels[:, 10:] == IGNORE).all()
    np.testing.assert_array_equal(labels[:10, :10], mask[20:, 30:])


def test_flips_scales_and_colours_move_image_and_mask_together():
    rng = np.random.default_rng(5)
    image, mask = boxes(rng, 48, 48)
    plain, plain_mask = folders.crop(image, mask, 24, 6.5, 3.25, 1.3)
    flipped, flipped_mask = folders.crop(image, mask, 24, 6.5, 3.25, 1.3, flip=True)
    np.testing.assert_array_equal(flipped, plain[:, ::-1])
    np.testing.assert_array_equal(flipped_mask, plain_mask[:, ::-1])
    for scale in (0.75, 1.0, 1.33):
        view, labels = folders.crop(image, mask, 24, 4.3, 7.8, scale, flip=True,
                                    colour=(20.0, 1.2, 0.8))
        _, uncoloured = folders.crop(image, mask, 24, 4.3, 7.8, scale, flip=True)
        np.testing.assert_array_equal(labels, uncoloured)  # colour touches the image only
        agree = from_pixels((view + 1) * 127.5) == labels
        assert agree.mean() > 0.93, (scale, agree.mean())  # only box edges may blur


def test_augmented_batches_stay_aligned(tmp_path):
    root = write_folder(tmp_path / "own", n=20, sizes=((40, 56), (64, 30)))
    data = folders.FolderData(root, canvas=24, seed=2)
    images, masks = data.sample(16, step=0)
    labelled = masks != IGNORE
    assert labelled.mean() > 0.5
    agree = from_pixels((images + 1) * 127.5) == masks
    assert agree[labelled].mean() > 0.95


# ---- the unlabelled value in loss and metrics

def test_unlabelled_pixels_count_in_no_loss():
    rng = np.random.default_rng(6)
    truth = rng.integers(0, 3, (2, 6, 6))
    logits = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    hidden = truth.copy()
    hidden[0, :3] = IGNORE
    loss = SegmentationLoss(3, dice_weight=1.0).call(hidden, logits).numpy()
    for b in range(2):  # numpy on the labelled pixels alone
        keep = hidden[b] != IGNORE
        logp = logits[b] - np.log(np.exp(logits[b]).sum(-1, keepdims=True))
        ce = -logp[keep, truth[b][keep]].mean()
        probs, onehot = np.exp(logp[keep])[:, 1:], np.eye(3)[truth[b][keep]][:, 1:]
        dice = (2 * (probs * onehot).sum() + 1) / ((probs + onehot).sum() + 1)
        assert loss[b] == pytest.approx(ce + 1 - dice, rel=1e-5)


def threshold_model(side):
    """A Keras model calling a pixel class 1 where its red channel is bright, else 0."""
    inputs = keras.Input((side, side, 3))
    red = keras.layers.Lambda(lambda x: x[..., :1] * 10.0)(inputs)
    return keras.Model(inputs, keras.layers.Concatenate()([-red, red]))


def test_scores_over_whole_pictures_skip_unlabelled_pixels():
    rng = np.random.default_rng(7)
    pictures = []
    for height, width in ((16, 16), (23, 37)):
        image, mask = boxes(rng, height, width, classes=(1,))
        image[:, :4, 0] = 250  # false alarms, but unlabelled: they count nowhere
        mask[:, :4] = IGNORE
        image[-2:, -3:, 0] = 250  # false alarms that count
        mask[-2:, -3:] = 0
        pictures.append((image, mask))
    scores = predict.score_pictures(threshold_model(16), pictures, 2, batch_size=3)
    truth = np.concatenate([m.ravel() for _, m in pictures])
    guess = np.concatenate([(i[..., 0] > 127).ravel() for i, _ in pictures])
    keep = truth != IGNORE
    inter = ((truth == 1) & guess & keep).sum()
    union = (((truth == 1) | guess) & keep).sum()
    assert scores["fg_iou"] == pytest.approx(inter / union) and inter < union
    assert scores["class_pixels"] == [int(((truth == 0) & keep).sum()), int((truth == 1).sum())]
    assert scores["n_images"] == 2


# ---- end to end: train, evaluate, predict, export

@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder_run")
    root = write_folder(base / "own", n=24, sizes=((32, 40), (40, 28)))
    out, printed = base / "run", io.StringIO()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stdout(printed):
            status = main.main([str(a) for a in (
                "--data_dir", root, "--canvas", "16", "--batch_size", "8", "--steps", "6",
                "--eval_every", "3", "--model", "fcn", "--sample_rows", "2", "--out_dir", out,
                "--tensorboard")])
    finally:
        signal.signal(signal.SIGTERM, handler)  # main() makes SIGTERM a Ctrl-C; not pytest's
    assert status == 0, printed.getvalue()
    return root, out, printed.getvalue()


def test_a_folder_run_records_its_split_and_counts_every_test_pixel(folder_run):
    root, out, stdout = folder_run
    config = json.loads((out / "config.json").read_text())
    assert config["source"] == "folder" and config["num_classes"] == 3
    scores = json.loads((out / "metrics.json").read_text())
    masks = [np.asarray(Image.open(root / "masks" / f"{n}.png")) for n in config["split"]["test"]]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=3)
    assert scores["class_pixels"] == counts.tolist() and scores["n_images"] == len(masks)
    assert re.search(r"2 class 2 +IoU", stdout) and f"({counts[2]:,} labelled pixels)" in stdout
    for name in ("model.keras", "best.keras", "samples_fcn.png", "input_data.png"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard" / "train").glob("events.out.tfevents.*"))


def test_best_keras_holds_the_interval_best_on_validation(folder_run):
    import csv
    _, out, _ = folder_run
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    best = max(range(len(rows)), key=lambda i: float(rows[i]["val_miou"]))  # first of ties
    step = int(model.load_model(out / "best.keras").optimizer.iterations.numpy())
    assert step == 3 * (best + 1)


def test_evaluate_uses_the_recorded_split_and_says_which_model(folder_run, capsys, tmp_path):
    root, out, _ = folder_run
    status, stdout, err = call_main(capsys, "--evaluate", "--out_dir", out)
    assert status == 0, err
    assert "scoring" in stdout and "model.keras (the last checkpoint;" in stdout
    assert json.loads(stdout.strip().splitlines()[-1]) == json.loads(
        (out / "eval_own_5_images_seed2024.json").read_text())
    other = write_folder(tmp_path / "other", n=4, seed=9)  # another folder: every pair scored
    status, stdout, err = call_main(capsys, "--evaluate", "--out_dir", out, "--data_dir", other,
                                    "--checkpoint", out / "best.keras")
    assert status == 0 and json.loads(stdout.strip().splitlines()[-1])["n_images"] == 4, err
    assert (out / "eval_other_4_images_seed2024_best.json").is_file()
    status, _, err = call_main(capsys, "--evaluate", "--out_dir", out, "--data_dir", tmp_path)
    assert status == 1 and "does not hold the run's images/ and masks/" in one_sentence(err)


@pytest.mark.slow
def test_export_serves_the_same_outputs_without_project_code(folder_run, tmp_path, capsys):
    _, out, _ = folder_run
    status, stdout, err = call_main(capsys, "--export", tmp_path / "served", "--out_dir", out)
    assert status == 0 and "tf.saved_model.load" in stdout, err
    status, _, err = call_main(capsys, "--export", tmp_path / "served", "--out_dir", out)
    assert status == 2 and "already exists" in one_sentence(err)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = ("import numpy as np, tensorflow as tf; "
              "m = tf.saved_model.load('served'); "
              "np.save('y.npy', m.serve(tf.constant(np.load('x.npy'))).numpy())")
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = model.load_model(out / "model.keras")(x, training=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)
