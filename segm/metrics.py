"""Segmentation metrics, computed once over a whole data set from one confusion matrix.

Pixels whose mask says readers.IGNORE (255, "not labelled") count nowhere.
"""
import numpy as np

from segm.readers import IGNORE
from segm.tf_quiet import keras


def predict_logits(model, images, batch_size=64):
    """Inference mode (no dropout, batch-norm running statistics), batch by batch."""
    return np.concatenate([model(images[i:i + batch_size], training=False).numpy()
                           for i in range(0, len(images), batch_size)])


def confusion_matrix(model, images, masks, num_classes, batch_size=64, loss_fn=None):
    """One Keras MeanIoU confusion matrix over all the images (rows = truth) and, with
    loss_fn, the mean loss per image from the same forward passes (else None)."""
    miou, loss = keras.metrics.MeanIoU(num_classes, ignore_class=IGNORE), 0.0
    for i in range(0, len(images), batch_size):
        logits = model(images[i:i + batch_size], training=False)     # (B, H, W, K)
        miou.update_state(masks[i:i + batch_size], keras.ops.argmax(logits, axis=-1))
        if loss_fn:
            loss += float(keras.ops.sum(loss_fn.call(masks[i:i + batch_size], logits)))
    return miou.total_cm.numpy(), loss / len(images) if loss_fn else None


def score(model, images, masks, num_classes, batch_size=64):
    """Dataset-level metrics from one confusion matrix over the whole test set."""
    cm, _ = confusion_matrix(model, images, masks, num_classes, batch_size)
    return metrics_from_confusion(cm, len(images))


def metrics_from_confusion(cm, n_images):
    """fg IoU, Dice and accuracy of digit-vs-background; per-class and mean IoU, the mean
    over the classes that occur in truth or prediction (as Keras MeanIoU takes it)."""
    cm = np.asarray(cm, dtype=np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    per_class = [float(i / u) if u else None for i, u in zip(np.diag(cm), union)]
    tp, fp, fn = cm[1:, 1:].sum(), cm[0, 1:].sum(), cm[1:, 0].sum()
    return {"fg_iou": float(tp / max(tp + fp + fn, 1)),
            "miou": float(np.mean([iou for iou in per_class if iou is not None])),
            "per_class_iou": per_class, "dice": float(2 * tp / max(2 * tp + fp + fn, 1)),
            "pixel_accuracy": float(np.trace(cm) / cm.sum()), "n_images": n_images,
            "class_pixels": [int(n) for n in cm.sum(1)]}


def interval_logs(loss, confusion, num_classes, prefix=""):
    """The log row of one interval, as model.fit names its entries."""
    metrics = metrics_from_confusion(confusion, 0)
    logs = {"loss": loss, "miou": metrics["miou"]}
    if num_classes == 2:
        logs["fg_iou"] = metrics["fg_iou"]
    return {prefix + key: value for key, value in logs.items()}


def report(scores, per_class):
    """The scores in one line, and (per_class) a line per class with its pixels."""
    lines = [f"test set ({scores['n_images']} images): foreground IoU {scores['fg_iou']:.4f}, "
             f"mean IoU {scores['miou']:.4f}, Dice {scores['dice']:.4f}, "
             f"pixel accuracy {scores['pixel_accuracy']:.4f}"]
    if per_class:
        for k, (iou, pixels) in enumerate(zip(scores["per_class_iou"], scores["class_pixels"])):
            shown = "   n/a" if iou is None else f"{iou:.4f}"
            lines.append(f"  class {k:3d}: IoU {shown}  ({pixels:,} labelled pixels)")
    return "\n".join(lines)
