"""load_data.py: the generator on tiny real-format files, its folder rules and its seeds
(the files themselves: test_data_files.py)."""
import gzip
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import load_data
from segm import readers
from load_data import Datagen
from segm.errors import DataError

SCRIPT = Path(load_data.__file__)
T10K = 100  # train digit i is drawn as shape number i, t10k digit i as shape number T10K + i


# ---------------------------------------------------------------- tiny files in the real formats

def write_idx(path, array, magic, count=None):
    """An IDX file (gzipped if path ends in .gz) holding a uint8 array."""
    header = struct.pack(f">II{'I' * (array.ndim - 1)}", magic, len(array) if count is None
                         else count, *array.shape[1:])
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def shape_digits(n, first=0):
    """n 28x28 digits; digit i is a block whose size names shape number first + i (< 144).

    Shrunk 2x2 to the default 14 pixels, shape c is a (2 + c // 12) x (2 + c % 12) block of
    intensity 150/255, then one column of 64/255: inked, but not above 0.3, so not digit.
    """
    digits = np.zeros((n, 28, 28), np.uint8)
    for digit, shape in zip(digits, range(first, first + n)):
        rows, cols = 2 * (2 + shape // 12), 2 * (2 + shape % 12)
        digit[:rows, :cols] = 150
        digit[:rows, cols:cols + 2] = 64
    return digits


def write_mnist(folder, n=40, sep="-", ext=".gz", t10k=0):
    """Train IDX files with n digits (none if n is 0), and t10k files if t10k > 0."""
    folder.mkdir(parents=True, exist_ok=True)
    files = ([("train", n, 0)] if n else []) + ([("t10k", t10k, T10K)] if t10k else [])
    for stem, count, first in files:
        write_idx(folder / f"{stem}-images{sep}idx3-ubyte{ext}", shape_digits(count, first), 2051)
        write_idx(folder / f"{stem}-labels{sep}idx1-ubyte{ext}", np.arange(count) % 10, 2049)


def cifar_batch(images, str_keys=False):
    """A CIFAR-10 python batch dict: (N, 3072) uint8 rows of R, G, B planes."""
    batch = {b"batch_label": b"tiny", b"labels": [int(i % 10) for i in range(len(images))],
             b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),
             b"filenames": [b"x.png"] * len(images)}
    return {k.decode(): v for k, v in batch.items()} if str_keys else batch


def write_cifar(folder, n=10, nested=False, test=0, str_keys=False):
    """data_batch_1..5 (none if n is 0) and test_batch (if test > 0) of flat backgrounds."""
    folder = folder / "cifar-10-batches-py" if nested else folder
    folder.mkdir(parents=True, exist_ok=True)
    files = [(name, n, i * n) for i, name in enumerate(readers.CIFAR_TRAIN) if n]
    for name, count, first in files + ([("test_batch", test, 0)] if test else []):
        images = np.zeros((count, 32, 32, 3), np.uint8)
        images[..., 0] = (first + np.arange(count))[:, None, None]  # red: the record number
        images[..., 1] = 5 if name == "test_batch" else 0  # green tells test_batch apart
        images[..., 2] = 250  # blue: +200 must clip at 255
        with open(folder / name, "wb") as f:
            pickle.dump(cifar_batch(images, str_keys), f, protocol=2)


def tiny_data(root, **mnist):
    """A data folder with tiny MNIST and CIFAR files."""
    write_mnist(root / "mnist", **mnist)
    write_cifar(root / "cifar")
    return root


def decode(images, masks):
    """(shape number, background record) per image of a one-digit sample of shape_digits."""
    rows, cols = masks.any(axis=2).sum(axis=1), masks.any(axis=1).sum(axis=1)  # (B,) its box
    assert ((masks > 0).sum(axis=(1, 2)) == rows * cols).all()  # each mask is one solid block
    red = np.round((images[..., 0].astype(np.float64) + 1) * 127.5)  # (B, C, C)
    background = [r[m == 0][0] for r, m in zip(red, masks)]  # the background is flat
    return (rows - 2) * 12 + cols - 2, np.array(background, int)


# ---------------------------------------------------------------- an independent reference

def paste_by_loop(gen, layout):
    """The expected images and masks, one image and one digit at a time."""
    data = gen.data[layout.split]
    images, masks = [], []
    for b in range(len(layout.background)):
        background = data.backgrounds[layout.background[b]].astype(np.float64)
        ink = np.zeros((gen.canvas, gen.canvas))
        owner = np.zeros((gen.canvas, gen.canvas), int)
        for k in range(layout.digit.shape[1]):
            raw = data.digits[layout.digit[b, k]]
            side = layout.size[b, k]
            # Mean first, then /255: a 2x2 mean of exactly 0.3 must stay 0.3 (not a digit pixel).
            digit = (raw.reshape(14, 2, 14, 2).mean(axis=(1, 3)) if side == 14
                     else load_data.resize(raw, side)) / 255
            y, x = layout.y[b, k], layout.x[b, k]
            box = (slice(y, y + side), slice(x, x + side))
            ink[box] = np.where(digit > 0, digit, ink[box])
            owner[box] = np.where(digit > 0, data.labels[layout.digit[b, k]] + 1, owner[box])
        on = ink > 0.3
        masks.append(np.where(on, owner, 0) if gen.num_classes == 11 else on.astype(int))
        if gen.canvas != 32:
            background = np.moveaxis(load_data.resize(np.moveaxis(background, -1, 0), gen.canvas),
                                     0, -1)
        # A flat +200 on the mask pixels only: fainter ink leaves the background as it is.
        images.append(np.minimum(background + 200 * on[..., None], 255) / 127.5 - 1)
    return np.array(images), np.array(masks)


def check_against_loop(gen, batch=8, split="train"):
    """render() equals the per-image loop on a fresh layout."""
    layout = gen.draw(batch, split)
    images, masks = gen.render(layout)
    want_images, want_masks = paste_by_loop(gen, layout)
    assert images.dtype == np.float32 and masks.dtype == np.int32
    assert images.shape == (batch, gen.canvas, gen.canvas, 3) and masks.shape == images.shape[:3]
    np.testing.assert_array_equal(masks, want_masks)
    np.testing.assert_allclose(images, want_images, atol=1e-5)
    assert masks.any()


# ---------------------------------------------------------------- the generator

@pytest.mark.parametrize("num_classes,per_image", [(2, 1), (11, 1), (11, 3), (2, 4)])
def test_masks_equal_the_pasted_digit_pixels(tmp_path, num_classes, per_image):
    root = tiny_data(tmp_path)
    gen = Datagen(root, num_classes=num_classes, digits_per_image=per_image, seed=3)
    check_against_loop(gen, batch=16)


def test_masks_on_real_data(real_data_dir):
    check_against_loop(Datagen(real_data_dir, num_classes=11, digits_per_image=2), batch=32)
    gen = Datagen(real_data_dir)
    assert gen.source == "real" and "22,699" not in gen.describe()  # the held-out part is shown
    assert "20,429 train / 2,270 test digits" in gen.describe()


def test_scaled_digits_on_a_larger_canvas(tmp_path):
    gen = Datagen(tiny_data(tmp_path), canvas=64, digits_per_image=3, num_classes=11,
                  digit_scale=(0.5, 2.0))
    layout = gen.draw(64)
    assert layout.size.min() == 7 and layout.size.max() == 28  # both ends are reachable
    check_against_loop(gen, batch=12)


@pytest.mark.parametrize("scale,side", [((2, 2), 28), ((0.01, 0.02), 1)])
def test_a_fixed_scale_gives_that_size(tmp_path, scale, side):
    gen = Datagen(tiny_data(tmp_path), digit_scale=scale)
    layout = gen.draw(5)
    assert (layout.size == side).all()
    images, masks = gen.render(layout)
    want_images, want_masks = paste_by_loop(gen, layout)
    np.testing.assert_array_equal(masks, want_masks)
    np.testing.assert_allclose(images, want_images, atol=1e-5)


def test_values_follow_the_seed_protocol(tmp_path):
    images, masks = Datagen(tiny_data(tmp_path)).sample(32)
    shapes, records = decode(images, masks)  # blocks exact through the 2x2 shrink, rims left out
    assert set(shapes) <= set(range(40)) and set(np.unique(masks)) == {0, 1}
    background = np.zeros(images.shape)  # (B, C, C, 3) as write_cifar made them
    background[..., 0], background[..., 2] = records[:, None, None], 250
    # +200 on the mask, clipped (blue); the faint rims and the rest keep their background.
    want = np.where(masks[..., None] == 1, np.minimum(background + 200, 255), background)
    np.testing.assert_array_equal(np.round((images.astype(np.float64) + 1) * 127.5), want)


def test_same_seed_same_images_and_fixed_test_set(tmp_path):
    root = tiny_data(tmp_path)
    first, second = Datagen(root, seed=5), Datagen(root, seed=5)
    for split in ("train", "test", "train"):
        a, b = first.sample(8, split), second.sample(8, split)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    next_a, next_b = first.sample(8)[0], Datagen(root, seed=6).sample(8)[0]
    assert not np.array_equal(next_a, next_b)
    assert not np.array_equal(next_a, first.sample(8)[0])  # successive calls advance
    fixed = first.test_set(20)
    np.testing.assert_array_equal(fixed[0], Datagen(root, seed=5).test_set(20)[0])
    np.testing.assert_array_equal(fixed[1], first.test_set(20)[1])
    assert not np.array_equal(fixed[0], Datagen(root, seed=6).test_set(20)[0])


def test_held_out_test_split_never_meets_the_train_split(tmp_path):
    gen = Datagen(tiny_data(tmp_path, n=40), seed=1)  # no t10k/test_batch: a held-out part
    train_shapes, train_bgs = decode(*gen.sample(400, "train"))
    test_shapes, test_bgs = decode(*gen.test_set(200))
    # The last 10% of each train file is held out: digits 36..39 and backgrounds 45..49.
    assert set(train_shapes) == set(range(36))
    assert set(test_shapes) == set(range(36, 40))
    assert set(train_bgs) == set(range(45)) and set(test_bgs) == set(range(45, 50))


def test_t10k_files_make_the_test_split(tmp_path):
    gen = Datagen(tiny_data(tmp_path, n=20, t10k=8))
    shapes, _ = decode(*gen.sample(100, "test"))
    assert set(shapes) == set(T10K + np.arange(8))
    shapes, _ = decode(*gen.sample(100, "train"))
    assert set(shapes) == set(range(20))


def test_a_step_names_the_same_batch_whatever_ran_before(tmp_path):
    root = tiny_data(tmp_path)
    gen, fresh = Datagen(root, seed=4), Datagen(root, seed=4)
    first = gen.sample(8, step=7)
    gen.sample(8)
    gen.sample(8, "test", step=2)
    for again in (gen.sample(8, step=7), fresh.sample(8, step=7)):
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[1], again[1])
    for other in (gen.sample(8, step=8), gen.sample(8, "test", step=7),
                  Datagen(root, seed=5).sample(8, step=7)):
        assert not np.array_equal(first[0], other[0])
    # Stepped batches leave the split's own generator alone: gen took one unstepped batch.
    fresh.sample(8)
    np.testing.assert_array_equal(gen.sample(8)[0], fresh.sample(8)[0])


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("ext", ["", ".gz"])
def test_a_folder_of_only_the_test_files_scores_but_does_not_train(tmp_path, nested, ext):
    write_mnist(tmp_path / "mnist", n=0, ext=ext, t10k=6)
    write_cifar(tmp_path / "cifar", n=0, nested=nested, test=4)
    assert readers.has_real_files(tmp_path)
    gen = Datagen(tmp_path)
    assert gen.source == "real" and "only holds the test files" in gen.describe()
    shapes, records = decode(*gen.test_set(60))
    assert set(shapes) == set(T10K + np.arange(6)) and set(records) == set(range(4))
    for step in (None, 0):
        with pytest.raises(DataError, match="holds only the test files.*data_batch_1..5; run "
                                            "`python download.py --data_dir") as error:
            gen.sample(4, "train", step)
        assert str(error.value).endswith(".") and "\n" not in str(error.value)


@pytest.mark.parametrize("breakage,expected", [
    (lambda r: (r / "mnist/t10k-labels-idx1-ubyte.gz").unlink(), "only one of the two t10k"),
    (lambda r: (r / "cifar/test_batch").unlink(), "lacks train-images-idx3-ubyte"),
    (lambda r: write_cifar(r / "cifar", n=3), "lacks train-images-idx3-ubyte"),
], ids=["lone t10k file", "no test_batch", "some train batches"])
def test_a_broken_folder_of_test_files_gives_one_clear_sentence(tmp_path, breakage, expected):
    write_mnist(tmp_path / "mnist", n=0, t10k=6)
    write_cifar(tmp_path / "cifar", n=0, test=4)
    breakage(tmp_path)
    with pytest.raises(DataError, match=expected):
        Datagen(tmp_path)


def test_synthetic_stand_in_only_for_an_empty_default_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(load_data, "DEFAULT_DATA_DIR", tmp_path / "data")
    gen = Datagen(num_classes=11, digits_per_image=2)
    assert gen.source == "synthetic" and "`python download.py` gets them" in gen.describe()
    monkeypatch.chdir(tmp_path)
    assert "default folder data;" in gen.describe()  # inside the working folder: from there
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert f"default folder {tmp_path / 'data'};" in gen.describe()  # outside: its whole path
    monkeypatch.chdir(tmp_path)
    tiny_data(tmp_path / "data")
    assert Datagen().source == "real"  # the same call, once the files are there


@pytest.mark.parametrize("folder,state", [("missing", "does not exist"),
                                          ("empty", "holds no MNIST or CIFAR-10 files"),
                                          ("only_meta", "holds no MNIST or CIFAR-10 files")])
@pytest.mark.parametrize("source", ["auto", "real"])
def test_a_folder_named_explicitly_must_hold_the_real_files(tmp_path, folder, state, source):
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_meta" / "cifar").mkdir(parents=True)
    (tmp_path / "only_meta" / "cifar" / "batches.meta").write_bytes(b"label names")
    with pytest.raises(DataError) as error:
        Datagen(tmp_path / folder, source=source)
    assert str(error.value) == (
        f"the data folder {tmp_path / folder} {state}; run `python download.py --data_dir "
        f"{tmp_path / folder}` or put the MNIST files in {tmp_path / folder / 'mnist'} and the "
        f"CIFAR-10 batches in {tmp_path / folder / 'cifar'}; or, to train on your own pictures, "
        f"put them in {tmp_path / folder / 'images'} and their masks in "
        f"{tmp_path / folder / 'masks'}.")


def test_synthetic_source_when_asked(tmp_path):
    gen = Datagen(tmp_path / "missing", num_classes=11, digits_per_image=2, source="synthetic")
    assert gen.source == "synthetic" and "(as asked)" in gen.describe()
    check_against_loop(gen, batch=16, split="test")
    images, masks = gen.sample(64)
    assert -1 <= images.min() and images.max() <= 1
    assert 0.02 < (masks > 0).mean() < 0.3
    assert set(np.unique(masks)) == set(range(11))
    train, test = gen.data["train"].digits, gen.data["test"].digits
    assert not set(map(bytes, train)) & set(map(bytes, test))  # disjoint renderings


def test_synthetic_source_on_request_even_with_real_files(tmp_path):
    gen = Datagen(tiny_data(tmp_path), source="synthetic")
    assert gen.source == "synthetic" and len(gen.data["train"].digits) == 3000


def test_normalize_and_denormalize():
    pixels = np.array([0, 127.5, 255])
    np.testing.assert_allclose(load_data.normalize(pixels), [-1, 0, 1])
    np.testing.assert_allclose(load_data.denormalize([-2, -1, 0, 1, 3]), [0, 0, 0.5, 1, 1])
    assert load_data.normalize(np.uint8([7])).dtype == np.float32


def test_import_is_quiet_and_free_of_tensorflow():
    code = "import sys, load_data; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=SCRIPT.parent, timeout=60)
    assert done.stdout == "False False\n" and done.stderr == ""


def test_rows_render_one_share_of_the_same_batch(tmp_path):
    gen = load_data.Datagen(canvas=24, digits_per_image=2, num_classes=11, seed=3,
                            source="synthetic")
    images, masks = gen.sample(8, step=5)
    share = gen.sample(8, step=5, rows=slice(2, 6))
    np.testing.assert_array_equal(share[0], images[2:6])
    np.testing.assert_array_equal(share[1], masks[2:6])


@pytest.mark.parametrize("degrees,quarters", [(90, 1), (180, 2), (270, 3), (-90, 3), (0, 0)])
def test_turn_by_quarters_equals_numpy_rot90(degrees, quarters):
    patches = np.random.default_rng(0).random((2, 3, 14, 14)).astype(np.float32)
    turned = load_data.turn(patches, np.full((2, 3), 14), np.full((2, 3), degrees))
    np.testing.assert_allclose(turned, np.rot90(patches, quarters, axes=(-2, -1)), atol=1e-6)


def test_a_turned_small_digit_keeps_to_its_own_square():
    # Patches are padded to the largest side; a smaller digit's turned corners must not
    # spill into the padding, where its placement has no room for them.
    patches = np.zeros((1, 2, 14, 14), np.float32)
    patches[0, 0, :8, :8] = 1.0                        # an 8-pixel digit, inked to its corners
    patches[0, 1] = 1.0                                # a 14-pixel one, likewise
    turned = load_data.turn(patches, np.array([[8, 14]]), np.array([[45.0, 45.0]]))
    assert turned[0, 0, :8, :8].sum() > 0 and not turned[0, 0, 8:].any()
    assert not turned[0, 0, :, 8:].any()
    assert turned[0, 1].sum() > 0


def test_scaled_and_turned_digits_stay_on_their_own_canvas():
    gen = Datagen(source="synthetic", canvas=20, digit_size=14, seed=1,
                  digit_scale=(0.5, 1.0), digit_angle=(45, 45))
    layout = gen.draw(64, step=0)
    patches = gen._patches(layout)[:, 0]               # (B, S, S)
    for b in range(64):
        rows, cols = np.nonzero(patches[b])
        assert (layout.y[b, 0] + rows).max() < 20 and (layout.x[b, 0] + cols).max() < 20


def test_turned_digits_carry_their_masks_and_change_nothing_else():
    kwargs = dict(source="synthetic", canvas=24, digit_size=14, seed=4)
    upright = Datagen(**kwargs)
    turned = Datagen(**kwargs, digit_angle=(90, 90))
    layout = upright.draw(8, step=3)
    assert layout.angle is None
    np.testing.assert_array_equal(turned.draw(8, step=3).angle, np.full((8, 1), 90.0))
    images, masks = upright.sample(8, step=3)
    turned_images, turned_masks = turned.sample(8, step=3)
    for b in range(8):
        y, x = layout.y[b, 0], layout.x[b, 0]
        square = (slice(y, y + 14), slice(x, x + 14))
        np.testing.assert_array_equal(turned_masks[b][square], np.rot90(masks[b][square]))
        outside = np.ones((24, 24), bool)
        outside[square] = False
        np.testing.assert_array_equal(turned_images[b][outside], images[b][outside])
    assert turned_masks.sum() == masks.sum()  # a quarter turn keeps every digit pixel


@pytest.mark.parametrize("angle", [(10, 5), (0, float("nan")), "big"])
def test_bad_angles_are_one_sentence(angle):
    with pytest.raises(DataError, match="digit_angle"):
        Datagen(source="synthetic", digit_angle=angle)
