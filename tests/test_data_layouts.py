"""Data as people have it: 0/255 masks, colour masks with classes.csv, Pascal VOC and
Ultralytics folders, each trained and scored on its own test split; --check_data."""
import json

import numpy as np
import pytest
from PIL import Image

from helpers import call_main, says
from segm import layouts, losses, masks
from segm.errors import UsageError

TRAIN = ["--canvas", "16", "--batch_size", "8", "--steps", "2", "--model", "fcn",
         "--sample_rows", "2"]
COLOURS = [(0, 0, 0), (200, 30, 30), (30, 200, 30)]  # background, cat, dog


def scene(rng, classes=(1, 2), size=(24, 32)):
    """An image with a bright square per class on a dark ground, and its index mask."""
    image = rng.integers(0, 90, (*size, 3), dtype=np.uint8)
    mask = np.zeros(size, np.uint8)
    for k in classes:
        y, x = rng.integers(0, size[0] - 8), rng.integers(0, size[1] - 8)
        mask[y:y + 8, x:x + 8] = k
        image[..., k - 1][mask == k] = 230
    return image, mask


def write_pairs(images_dir, masks_dir, names, save_mask, seed=0, classes=(1, 2)):
    """A picture and mask per name; save_mask(index mask, path) writes the mask as wanted."""
    rng = np.random.default_rng(seed)
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        image, mask = scene(rng, classes)
        Image.fromarray(image).save(images_dir / f"{name}.jpg", quality=95)
        save_mask(mask, masks_dir / f"{name}.png")


def grey(mask, path):
    Image.fromarray(mask).save(path)


def binary(mask, path):  # 0/255, as many tools save a single class
    Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(path)


def coloured(mask, path):
    Image.fromarray(np.array(COLOURS, np.uint8)[mask]).save(path)


def palette(mask, path):  # Pascal VOC: palette PNG, 255 the unlabelled border
    framed = mask.copy()
    framed[0], framed[-1], framed[:, 0], framed[:, -1] = 255, 255, 255, 255
    picture = Image.fromarray(framed, mode="P")
    picture.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    picture.save(path)


NAMES = [f"p{i:02d}" for i in range(12)]


def trained(capsys, tmp_path, root, *flags):
    """Train a few steps on root; (config.json, metrics.json) of the run."""
    out = tmp_path / "run"
    status, stdout, err = call_main(capsys, "--data_dir", root, "--out_dir", out, *TRAIN, *flags)
    assert status == 0, err
    return (json.loads((out / "config.json").read_text()),
            json.loads((out / "metrics.json").read_text()), stdout)


def test_a_binary_folder_is_refused_without_a_map_and_trains_with_one(tmp_path, capsys):
    root = tmp_path / "binary"
    write_pairs(root / "images", root / "masks", NAMES, binary)
    status, _, err = call_main(capsys, "--data_dir", root, "--out_dir", tmp_path / "run", *TRAIN)
    assert status == 1 and says(err, "255 means unlabelled", "--mask_map 255:1")
    assert not (tmp_path / "run").exists()
    config, scores, _ = trained(capsys, tmp_path, root, "--mask_map", "255:1")
    assert config["mask_map"] == "255:1" and config["num_classes"] == 2
    # Every test pixel counted, as the mapped masks hold them: 255 read as class 1.
    truth = [np.asarray(Image.open(root / "masks" / f"{n}.png")) for n in config["split"]["test"]]
    assert scores["class_pixels"][1] == sum(int((m == 255).sum()) for m in truth) > 0
    # --evaluate reads the run's map from config.json: the same pixels, the same scores.
    status, out, err = call_main(capsys, "--evaluate", "--out_dir", tmp_path / "run")
    assert status == 0, err
    again = json.loads(out.strip().splitlines()[-1])
    assert again["class_pixels"] == scores["class_pixels"] and again["miou"] == scores["miou"]
    # --resume trains on with the map; --predict of the run segments a picture.
    status, _, err = call_main(capsys, "--resume", "--out_dir", tmp_path / "run", "--steps", "4")
    resumed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert status == 0 and resumed["class_pixels"] == scores["class_pixels"], err
    status, _, err = call_main(capsys, "--predict", root / "images" / "p00.jpg", "--out_dir",
                               tmp_path / "run")
    assert status == 0 and (tmp_path / "run" / "prediction_p00.png").is_file(), err


def test_colour_masks_read_through_classes_csv_and_name_the_classes(tmp_path, capsys):
    root = tmp_path / "camvid"
    write_pairs(root / "images", root / "masks", NAMES, coloured)
    (root / "classes.csv").write_text("name,r,g,b\n" + "".join(
        f"{n},{r},{g},{b}\n" for n, (r, g, b) in zip(["void", "cat", "dog"], COLOURS)))
    config, scores, stdout = trained(capsys, tmp_path, root)
    assert config["num_classes"] == 3 and len(scores["per_class_iou"]) == 3
    assert scores["class_names"] == config["class_names"] == ["void", "cat", "dog"]
    assert " dog " in stdout.split("test set")[-1]  # the printed report names them
    # An unknown colour: one sentence naming the file, the colour and its pixels.
    bad = np.array(Image.open(root / "masks" / "p03.png"))
    bad[:2, :5] = (9, 9, 9)
    Image.fromarray(bad).save(root / "masks" / "p03.png")
    status, _, err = call_main(capsys, "--data_dir", root, "--out_dir", tmp_path / "run2",
                               *TRAIN)
    assert status == 1 and says(err, "p03.png", "(9, 9, 9)", "10 pixels")
    assert not (tmp_path / "run2").exists()


def test_a_voc_folder_trains_on_train_txt_and_is_scored_on_val_txt(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    write_pairs(root / "JPEGImages", root / "SegmentationClass", NAMES, palette)
    Image.new("RGB", (32, 24)).save(root / "JPEGImages" / "detection_only.jpg")  # no mask: fine
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(NAMES[:8]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(NAMES[8:]) + "\n")
    assert layouts.kind(root) == "voc"
    config, scores, _ = trained(capsys, tmp_path, root)
    assert config["layout"] == "voc" and config["split"]["test"] == NAMES[8:]
    assert sorted(config["split"]["train"] + config["split"]["valid"]) == NAMES[:8]
    assert config["num_classes"] == 3 and len(scores["per_class_iou"]) == 3
    # The border (255) counts nowhere: the scored pixels are the labelled ones of val.txt.
    truth = [np.asarray(Image.open(root / "SegmentationClass" / f"{n}.png")) for n in NAMES[8:]]
    assert sum(scores["class_pixels"]) == sum(int((m != 255).sum()) for m in truth)


def test_an_ultralytics_folder_takes_val_as_its_test_split_and_its_yaml_names(tmp_path, capsys):
    root = tmp_path / "ultra"
    for part, names in (("train", NAMES[:9]), ("val", ["q0", "q1", "p00"])):  # p00 in both
        write_pairs(root / "images" / part, root / "masks" / part, names, grey, seed=len(part))
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                    "names:\n  0: background\n  1: cell\n  2: nucleus\n")
    config, scores, _ = trained(capsys, tmp_path, root, "--class_weights", "auto")
    assert config["layout"] == "ultralytics" and config["class_weights"] == "auto"
    assert config["split"]["test"] == ["val/p00", "val/q0", "val/q1"]
    assert scores["class_names"] == ["background", "cell", "nucleus"] and scores["n_images"] == 3


def test_check_data_lists_every_planted_problem_and_exits_1(tmp_path, capsys):
    root = tmp_path / "broken"
    write_pairs(root / "images", root / "masks", NAMES, grey)
    (root / "masks" / "p01.png").unlink()                                   # image alone
    grey(np.zeros((20, 20), np.uint8), root / "masks" / "p02.png")           # wrong size
    big = np.zeros((24, 32), np.uint8)
    big[3, 3] = 7
    grey(big, root / "masks" / "p04.png")                                   # class beyond
    (root / "images" / "notes.txt").write_text("hi")                         # not a picture
    (root / "classes.csv").write_text("name\nbackground\ncat\ndog\n")
    status, out, err = call_main(capsys, "--data_dir", root, "--check_data", "--out_dir",
                                 tmp_path / "check")
    assert status == 1 and says(err, "4 problems")
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    for planted in ("p01.jpg has no mask", "p02.jpg is 32x24 pixels but its mask p02.png is "
                    "20x20", "p04.png holds class 7", "notes.txt is not a PNG"):
        assert sum(planted in line for line in problems) == 1, (planted, problems)
    assert len(problems) == 4
    # Training refuses with the first of the same sentences, and says how to see them all.
    status, _, err = call_main(capsys, "--data_dir", root, "--out_dir", tmp_path / "run", *TRAIN)
    assert status == 1 and says(err, problems[0].removeprefix("problem: "), "--check_data")


def test_check_data_on_a_good_folder_reports_and_draws(tmp_path, capsys):
    root = tmp_path / "good"
    write_pairs(root / "images", root / "masks", NAMES, grey, classes=(1,))
    (root / "classes.csv").write_text("name\nsky\nkite\n")
    status, out, err = call_main(capsys, "--data_dir", root, "--check_data", "--out_dir",
                                 tmp_path / "check")
    assert status == 0, err
    kite = sum(int((np.asarray(Image.open(p)) == 1).sum()) for p in (root / "masks").iterdir())
    share = kite / (12 * 24 * 32)
    assert "layout: own" in out and "12 train" in out and "32x24 to 32x24" in out
    assert "1 kite" in " ".join(out.split()) and f"{share:.2%}" in out
    assert (tmp_path / "check" / "check_data.png").is_file()


def test_median_frequency_weights_and_the_weighted_loss_by_hand():
    weights = losses.class_weights("auto", lambda: [900, 90, 10])
    shares = np.array([0.9, 0.09, 0.01])
    assert weights == pytest.approx(list(0.09 / shares), rel=1e-3)
    assert losses.class_weights("none", lambda: [1, 2]) is None
    assert losses.class_weights("auto", lambda: [50, 0, 50])[1] == 1.0  # absent: the largest
    truth = np.array([[[0, 1], [2, 255]]])
    logits = np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype(np.float32)
    loss = losses.SegmentationLoss(3, 0.0, [1.0, 2.0, 5.0])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    by_hand = -(1.0 * logp[0, 0, 0, 0] + 2.0 * logp[0, 0, 1, 1] + 5.0 * logp[0, 1, 0, 2]) / 3
    assert float(loss.call(truth, logits)[0]) == pytest.approx(by_hand, rel=1e-5)


def test_mask_maps_and_their_bad_flags(tmp_path, capsys):
    assert masks.parse_map("1:1,2:0,3:255") == {1: 1, 2: 0, 3: 255} and masks.parse_map("") == {}
    for bad in ("255", "1:256", "a:b"):
        with pytest.raises(UsageError):
            masks.parse_map(bad)
    status, _, err = call_main(capsys, "--mask_map", "255-1")
    assert status == 2 and says(err, "--mask_map", "255:1")
    trimap = tmp_path / "trimap.png"
    grey(np.array([[1, 2, 3]], np.uint8), trimap)
    fmt = masks.MaskFormat(None, None, masks.parse_map("1:1,2:0,3:255"), "")
    assert fmt.read(trimap, 100).tolist() == [[1, 0, 255]]


def test_a_class_count_that_contradicts_classes_csv_is_refused(tmp_path, capsys):
    root = tmp_path / "own"
    write_pairs(root / "images", root / "masks", NAMES, grey)
    (root / "classes.csv").write_text("name\nbackground\ncat\ndog\n")
    status, _, err = call_main(capsys, "--data_dir", root, "--out_dir", tmp_path / "run",
                               "--num_classes", "5", *TRAIN)
    assert status == 1 and says(err, "classes.csv names 3 classes", "5")


def test_scene_groups_give_each_digit_its_class():
    from segm.benchmarks.folder import scene_classes
    table = scene_classes("012,345,6789")
    assert table.tolist() == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3]  # label 0 is background
    assert scene_classes("9").tolist() == [0] * 10 + [1]
