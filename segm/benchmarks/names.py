"""`benchmark.py names`: how well a digit can be named from its mask alone, the bound that
the eleven-class score meets.

An eleven-class model must do two things: find the digit's pixels (the two-class task) and
name the digit. This measures the second on its own, made as easy as it can be: a small CNN
sees only each scene's true mask, the digit's own thresholded pixels with no photo behind
them, and is trained for --steps batches of 64 to say which digit it is. Its names, painted
on the true masks, give the mean IoU that perfect masks with those names would score on the
fixed test set: what a segmentation model trained for as long could hope for at most, if it
named digits as well as a network that does nothing else.
"""
import time

import numpy as np

from segm import metrics
from segm.benchmarks.common import figure_name, record

BATCH = 64


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


def classifier(keras, side):
    """Masks (B, side, side, 1) -> (B, 10) digit logits: 3x3 convolutions with batch norm,
    32-64-128 channels, max pooling between them, the strongest response of each feature."""
    inputs = keras.Input((side, side, 1))
    x = inputs
    for i, filters in enumerate((32, 64, 128)):
        for _ in range(1 if i == 0 else 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="digit_namer")


def train_and_name(keras, gen, steps, test_masks, seed):
    """(accuracy, names): a classifier trained for steps batches of gen's training masks, and
    its name for each test mask."""
    keras.utils.set_random_seed(seed)
    model = classifier(keras, test_masks.shape[1])
    rate = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=3e-3,
                                                  warmup_steps=min(100, steps // 10))
    model.compile(keras.optimizers.AdamW(rate, weight_decay=1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def batches():  # endless: fit stops after steps
        for step in range(10 ** 9):
            masks = gen.sample(BATCH, step=step)[1]
            digits = digit_of(masks)
            inked = digits >= 0  # a digit on a near-white photo can lose every pixel
            yield (masks[inked, ..., None] > 0).astype(np.float32), digits[inked]

    parts = 10 if steps % 10 == 0 else 1  # a log line every tenth of the steps
    model.fit(batches(), steps_per_epoch=steps // parts, epochs=parts, shuffle=False, verbose=2)
    truth = digit_of(test_masks)
    logits = model.predict((test_masks[..., None] > 0).astype(np.float32), batch_size=256,
                           verbose=0)
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
    test_masks = tests.test_set(args.eval_images)[1]
    rows = []
    for steps in args.steps:
        began = time.perf_counter()
        accuracy, names = train_and_name(keras, gen, steps, test_masks, args.seed)
        scores = metrics.metrics_from_confusion(
            confusion(test_masks, named_masks(test_masks, names)), len(test_masks))
        rows.append([steps, f"{100 * accuracy:.2f}%", f"{scores['miou']:.4f}",
                     f"{time.perf_counter() - began:.0f}"])
        print(f"{steps} steps: {accuracy:.2%} of the test digits named right; perfect masks "
              f"so named score mean IoU {scores['miou']:.4f}")
    caption = (f"A CNN that sees only each scene's true mask (no photo) learns to name the "
               f"digit, for each budget of steps of {BATCH}; the last column is its own "
               f"training time. Mean IoU: the true masks of the {args.eval_images:,} test "
               f"scenes, each digit painted with the name the CNN gave it.")
    best = rows[-1]
    name = figure_name("names", args)
    record(args, name, ["steps", "digits named right", "mean IoU, perfect masks so named",
                        "training s"], rows, caption,
           headline=(f"eleven classes' bound: perfect masks, digits named from the masks "
                     f"alone ({best[0]} steps)", f"mean IoU {best[2]}, {best[1]} named right"),
           section="Eleven classes")
