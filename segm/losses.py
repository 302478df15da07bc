"""The training loss: pixel cross-entropy plus soft Dice, registered so saved models load."""
import numpy as np

from segm.readers import IGNORE
from segm.tf_quiet import keras

# none: every pixel counts the same; auto: median-frequency balancing (Eigen and Fergus),
# class c's pixels weighted median(f) / f_c by its share f_c of the training pixels.
CLASS_WEIGHTS = ("none", "auto")


def class_weights(choice, count):
    """[w_c] for the cross-entropy of classes with count()[c] training pixels (counted only
    for auto), or None; a class with no pixels takes the largest weight, so it is not
    ignored should it appear."""
    if choice == "none":
        return None
    pixels = np.asarray(count(), np.float64)
    present = pixels > 0
    share = pixels / pixels.sum()
    weights = np.where(present, np.median(share[present]) / np.where(present, share, 1), 0)
    weights[~present] = weights.max()
    return [round(float(w), 4) for w in weights]


@keras.saving.register_keras_serializable(package="segm")
class SegmentationLoss(keras.losses.Loss):
    """Pixel cross-entropy on logits plus a soft-Dice term on the digit classes."""

    def __init__(self, num_classes=2, dice_weight=1.0, class_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.dice_weight = dice_weight
        self.class_weights = class_weights  # per class, on the cross-entropy; None: all 1

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "int32")                      # (B, H, W)
        # Unlabelled pixels (IGNORE) count in neither term. Dividing by the labelled
        # share keeps a fully labelled image's loss bit for bit the plain mean.
        labelled = keras.ops.cast(keras.ops.not_equal(y_true, IGNORE), y_pred.dtype)
        share = keras.ops.maximum(keras.ops.mean(labelled, axis=(1, 2)), 1e-9)   # (B,)
        ce = keras.losses.sparse_categorical_crossentropy(
            y_true, y_pred, from_logits=True, ignore_class=IGNORE)
        weight = labelled
        if self.class_weights:  # each pixel's weight is its true class's; IGNORE's is 0
            table = keras.ops.convert_to_tensor(
                list(self.class_weights) + [0.0] * (256 - len(self.class_weights)), y_pred.dtype)
            weight = keras.ops.take(table, y_true)                     # (B, H, W)
        ce = keras.ops.mean(ce * weight, axis=(1, 2)) / share         # (B,)
        if not self.dice_weight:
            return ce
        probs = keras.ops.softmax(y_pred)[..., 1:] * labelled[..., None]  # (B, H, W, K-1)
        truth = keras.ops.one_hot(y_true, self.num_classes)[..., 1:]  # IGNORE: all zeros
        overlap = keras.ops.sum(probs * truth, axis=(1, 2, 3))
        total = keras.ops.sum(probs + truth, axis=(1, 2, 3))
        dice = (2 * overlap + 1) / (total + 1)  # +1: an image without digits scores 1, not 0/0
        return ce + self.dice_weight * (1 - dice)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "dice_weight": self.dice_weight, "class_weights": self.class_weights}
