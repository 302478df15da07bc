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
        known = keras.ops.not_equal(y_true, IGNORE)
        labelled = keras.ops.cast(known, y_pred.dtype)
        share = keras.ops.maximum(keras.ops.mean(labelled, axis=(1, 2)), 1e-9)   # (B,)
        # Both terms from one log-sum-exp: log p(true class) = its logit - logsumexp, so
        # neither a softmax over every class nor one-hot masks are ever made.
        lse = keras.ops.logsumexp(y_pred, axis=-1)                    # (B, H, W)
        label = keras.ops.where(known, y_true, 0)                     # IGNORE: any class
        log_p = keras.ops.take_along_axis(y_pred, label[..., None], axis=-1)[..., 0] - lse
        weight = labelled
        if self.class_weights:  # each pixel's weight is its true class's; IGNORE's is 0
            table = keras.ops.convert_to_tensor(
                list(self.class_weights) + [0.0] * (256 - len(self.class_weights)), y_pred.dtype)
            weight = keras.ops.take(table, y_true)                     # (B, H, W)
        ce = keras.ops.mean(-log_p * weight, axis=(1, 2)) / share     # (B,)
        if not self.dice_weight:
            return ce
        # Soft Dice over the digit classes: |P∩T| is the true class's probability summed
        # over digit pixels, |P| the digit probability 1 - p(background) over labelled ones.
        digit = keras.ops.cast(label > 0, y_pred.dtype)  # (B, H, W); IGNORE's label is 0
        overlap = keras.ops.sum(keras.ops.exp(log_p) * digit, axis=(1, 2))
        found = (1 - keras.ops.exp(y_pred[..., 0] - lse)) * labelled
        total = keras.ops.sum(found + digit, axis=(1, 2))
        dice = (2 * overlap + 1) / (total + 1)  # +1: an image without digits scores 1, not 0/0
        return ce + self.dice_weight * (1 - dice)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "dice_weight": self.dice_weight, "class_weights": self.class_weights}
