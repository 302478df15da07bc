"""`benchmark.py names`: how well a digit can be named from its mask alone, the bound that
the eleven-class score meets.

An eleven-class model must do two things: find the digit's pixels (the two-class task) and
name the digit. This measures the second on its own, made as easy as it can be: a small CNN
sees only each scene's true mask, the digit's own thresholded pixels with no photo behind
them, and is trained for --steps batches of 64 to say which digit it is. Its names, painted
on the true masks, give the mean IoU that perfect masks with those names would score on the
fixed test set: what a segmentation model trained for as long could hope for at most, if it
named digits as well as a network that does nothing else.

With --input photo the namer sees what the segmentation model sees instead, the photo, but
centred for it: a 16x16 crop around the digit's true bounding box.
"""
import time

import numpy as np

from segm import metrics
from segm.benchmarks.common import figure_name, record

BATCH = 64
CROP = 16  # --input photo: the side of the crop around each digit
INPUTS = ("mask", "photo")


def digit_of(masks):
    """(B,) the digit (class - 1) of each one-digit 11-class mask; -1 where no pixel is inked."""
    return masks.reshape(len(masks), -1).max(1).astype(np.int64) - 1


def named_masks(masks, names):
    """The true masks with every digit pixel given the class of its scene's name (names: (B,)
    digits 0-9): what a model that finds every pixel and names the digit `names` outputs."""
    return np.where(masks > 0, np.asarray(names)[:, None, None] + 1, 0)


def confusion(truth, predicted, num_classes=11):
    """(K, K) pixel counts, rows the true class, columns the predicted one."""
    return np.bincount(truth.ravel() * num_classes + predicted.ravel(),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def crops(images, masks, side=CROP):
    """(B, side, side, C): each image around its digit's bounding-box centre, the window
    moved inside the image at its edges; a scene whose digit lost every pixel, its centre."""
    out = np.empty((len(images), side, side, images.shape[-1]), images.dtype)
    for i, (image, mask) in enumerate(zip(images, masks)):
        rows, cols = np.nonzero(mask > 0)
        centre = [(a.min() + a.max() + 1) // 2 if a.size else n // 2
                  for a, n in ((rows, mask.shape[0]), (cols, mask.shape[1]))]
        top, left = (int(np.clip(c - side // 2, 0, n - side)) for c, n in zip(centre, mask.shape))
        out[i] = image[top:top + side, left:left + side]
    return out


def namer_input(choice, images, masks):
    """What the namer sees: the thresholded true masks (B, H, W, 1), or photo crops."""
    if choice == "photo":
        return crops(images, masks)
    return (masks[..., None] > 0).astype(np.float32)


def classifier(keras, shape):
    """Inputs of `shape` -> (B, 10) digit logits: 3x3 convolutions with batch norm,
    32-64-128 channels, max pooling between them, the strongest response of each feature."""
    inputs = keras.Input(shape)
    x = inputs
    for i, filters in enumerate((32, 64, 128)):
        for _ in range(1 if i == 0 else 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="digit_namer")


def train_and_name(keras, gen, steps, tests, seed, choice="mask"):
    """(accuracy, names): a classifier trained for steps batches of gen's training scenes (as
    `choice` shows them), and its name for each test scene of tests = (images, masks)."""
    keras.utils.set_random_seed(seed)
    test_images, test_masks = tests
    seen = namer_input(choice, test_images, test_masks)
    model = classifier(keras, seen.shape[1:])
    rate = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=3e-3,
                                                  warmup_steps=min(100, steps // 10))
    model.compile(keras.optimizers.AdamW(rate, weight_decay=1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def batches():  # endless: fit stops after steps
        for step in range(10 ** 9):
            images, masks = gen.sample(BATCH, step=step)
            digits = digit_of(masks)
            inked = digits >= 0  # a digit on a near-white photo can lose every pixel
            yield namer_input(choice, images[inked], masks[inked]), digits[inked]

    parts = 10 if steps % 10 == 0 else 1  # a log line every tenth of the steps
    model.fit(batches(), steps_per_epoch=steps // parts, epochs=parts, shuffle=False, verbose=2)
    truth = digit_of(test_masks)
    logits = model.predict(seen, batch_size=256, verbose=0)
    names = logits.argmax(1)
    inked = truth >= 0
    return float((names[inked] == truth[inked]).mean()), names


def run(args, trio):
    """One row per step budget: the namer's test accuracy and the mean IoU it bounds."""
    from segm.tf_quiet import keras  # only training needs TensorFlow
    data_dir = args.data_dir or None
    gen = trio.load_data.Datagen(data_dir, num_classes=11, seed=args.seed, source="real")
    tests = trio.load_data.Datagen(data_dir, num_classes=11, seed=trio.main.TEST_SEED,
                                   source="real")
    test_images, test_masks = tests.test_set(args.eval_images)
    rows = []
    for steps in args.steps:
        began = time.perf_counter()
        accuracy, names = train_and_name(keras, gen, steps, (test_images, test_masks),
                                         args.seed, args.input)
        scores = metrics.metrics_from_confusion(
            confusion(test_masks, named_masks(test_masks, names)), len(test_masks))
        rows.append([steps, f"{100 * accuracy:.2f}%", f"{scores['miou']:.4f}",
                     f"{time.perf_counter() - began:.0f}"])
        print(f"{steps} steps: {accuracy:.2%} of the test digits named right; perfect masks "
              f"so named score mean IoU {scores['miou']:.4f}")
    sees = ("only each scene's true mask (no photo)" if args.input == "mask" else
            f"a {CROP}x{CROP} crop of the photo around each digit's true bounding box")
    caption = (f"A CNN that sees {sees} learns to name the "
               f"digit, for each budget of steps of {BATCH}; the last column is its own "
               f"training time. Mean IoU: the true masks of the {args.eval_images:,} test "
               f"scenes, each digit painted with the name the CNN gave it.")
    best = rows[-1]
    name = figure_name("names", args)
    record(args, name, ["steps", "digits named right", "mean IoU, perfect masks so named",
                        "training s"], rows, caption,
           headline=(f"eleven classes' bound: perfect masks, digits named from "
                     f"{'the masks alone' if args.input == 'mask' else 'photo crops'} "
                     f"({best[0]} steps)", f"mean IoU {best[2]}, {best[1]} named right"),
           section="Eleven classes")
