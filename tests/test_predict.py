"""predict.py: every common kind of picture read as it displays, the rest refused, no seams."""
import struct
import time
import warnings
import zlib

import numpy as np
import pytest

import load_data
from segm import predict
from segm.errors import DataError
from helpers import call_main, one_sentence, snapshot, temporaries
from segm.tf_quiet import keras

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


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
    pixels = predict.read_image(photo, max_pixels=10**6)
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
             (huge, 1, "shrink it first"), (folder, 2, "holds no files"),
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
        with pytest.raises(DataError, match="is 40x40 pixels, more than the 1,000"):
            predict.read_image(path, max_pixels=1000)
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
    pred, tiles = predict.segment_tiled(model, pixels, batch_size=4)
    assert pred.shape == (37, 50) and tiles > 1
    np.testing.assert_array_equal(pred, logits.argmax(-1))


def test_a_folder_in_gives_a_mask_and_an_overlay_per_picture_out(run_copy, tmp_path, capsys):
    from PIL import Image
    import model
    rng = np.random.default_rng(4)
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {}
    for i in range(19):  # mixed sizes, smaller and larger than the 16-pixel canvas
        size = (int(rng.integers(9, 40)), int(rng.integers(9, 40)))
        sizes[f"p{i:02d}"] = size
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            photos / f"p{i:02d}.{'png' if i % 2 else 'jpg'}")
    (photos / "notes.txt").write_text("not a picture")
    status, out, err = call_main(capsys, "--predict", photos, "--out_dir", run_copy)
    assert status == 0, err
    folder = run_copy / "predictions"
    masks = sorted(p for p in folder.glob("p??.png"))
    assert len(masks) == 19 and len(list(folder.glob("*_overlay.png"))) == 19
    assert "segmented 19 pictures" in out and "notes.txt" in out and str(folder) in out
    net = model.load_model(run_copy / "model.keras")
    for path in masks[:3]:
        mask = Image.open(path)
        assert mask.mode == "P" and mask.size[::-1] == sizes[path.stem]
        pixels = predict.readers.read_image(next(photos.glob(f"{path.stem}.*")), 10**6)
        expected = next(predict.segment_many(net, [pixels], 8))
        np.testing.assert_array_equal(np.asarray(mask), expected)
    status, out, err = call_main(capsys, "--predict", photos, "--out_dir", run_copy)
    assert status == 0 and (run_copy / "predictions2").is_dir()  # nothing is overwritten


def test_samples_show_the_hardest_images_then_typical_ones():
    masks = [np.zeros((4, 4), np.uint8) for _ in range(7)]
    preds = [m.copy() for m in masks]
    for i, wrong in enumerate([0, 5, 1, 9, 2, 3, 4]):  # image i has `wrong` wrong pixels
        preds[i].flat[:wrong] = 1
    masks[3].flat[:4] = predict.IGNORE  # 4 of image 3's are unlabelled: 5 count, not 9
    chosen, labels = predict._hardest_and_typical(masks, preds, 4)
    # By errors: 1 and 3 (5 each, the tie to the first), then 6, 5, 4, 2, 0 (4 to 0 errors),
    # whose middle two are 5 and 4.
    assert chosen == [1, 3, 5, 4]
    assert labels == ["input: 1. most errors of 7", "input: 2. most errors of 7",
                      "input: typical", "input: typical"]
