"""Segmentation metrics, computed once over a whole data set from one confusion matrix.

Pixels whose mask says readers.IGNORE (255, "not labelled") count nowhere.
"""
import weakref

import numpy as np

from segm.readers import IGNORE
from segm.tf_quiet import keras, tf


# Compiled forward passes, one per model and batch size, made at first use.
_COMPILED = weakref.WeakKeyDictionary()


def compiled(model, batch_size):
    """model(x, training=False) as a tf.function of fixed shape (batch_size, H, W, C): traced
    once, it runs the model as one graph instead of layer by layer from Python."""
    passes = _COMPILED.setdefault(model, {})
    if batch_size not in passes:
        spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32)
        held = weakref.ref(model)  # the pass must not keep its model alive, or neither goes
        passes[batch_size] = tf.function(lambda x: held()(x, training=False),
                                         input_signature=[spec])
    return passes[batch_size]


def logits_by_batch(model, images, batch_size=64):
    """Each batch's logits (B, H, W, K), in inference mode (no dropout, batch-norm running
    statistics), through the compiled pass; a short last batch is padded to its shape and
    cut back, which changes no image's logits (inference mode sees each image alone)."""
    run = compiled(model, batch_size)
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i:i + batch_size], np.float32)
        padded = np.zeros((batch_size, *batch.shape[1:]), np.float32)
        padded[:len(batch)] = batch
        yield run(padded).numpy()[:len(batch)]


def predict_logits(model, images, batch_size=64):
    """The logits of all the images, (N, H, W, K)."""
    return np.concatenate(list(logits_by_batch(model, images, batch_size)))


def confusion_matrix(model, images, masks, num_classes, batch_size=64, loss_fn=None):
    """One Keras MeanIoU confusion matrix over all the images (rows = truth) and, with
    loss_fn, the mean loss per image from the same forward passes (else None)."""
    miou, loss = keras.metrics.MeanIoU(num_classes, ignore_class=IGNORE), 0.0
    for i, logits in zip(range(0, len(images), batch_size),
                         logits_by_batch(model, images, batch_size)):        # (B, H, W, K)
        miou.update_state(masks[i:i + batch_size], logits.argmax(-1))
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
            "class_pixels": [int(n) for n in cm.sum(1)],
            "confusion": cm.astype(int).tolist()}  # rows: the true class, columns: predicted


def interval_logs(loss, confusion, num_classes, prefix=""):
    """The log row of one interval, as model.fit names its entries."""
    metrics = metrics_from_confusion(confusion, 0)
    logs = {"loss": loss, "miou": metrics["miou"]}
    if num_classes == 2:
        logs["fg_iou"] = metrics["fg_iou"]
    return {prefix + key: value for key, value in logs.items()}


def report(scores, per_class):
    """The scores in one line, and (per_class) a line per class, by its name, with its pixels."""
    lines = [f"test set ({scores['n_images']} images): foreground IoU {scores['fg_iou']:.4f}, "
             f"mean IoU {scores['miou']:.4f}, Dice {scores['dice']:.4f}, "
             f"pixel accuracy {scores['pixel_accuracy']:.4f}"]
    if per_class:
        names = scores.get("class_names") or [f"class {k}" for k in range(len(scores["confusion"]))]
        for k, (iou, pixels) in enumerate(zip(scores["per_class_iou"], scores["class_pixels"])):
            shown = "   n/a" if iou is None else f"{iou:.4f}"
            lines.append(f"  {k:3d} {names[k]:<20} IoU {shown}  ({pixels:,} labelled pixels)")
    return "\n".join(lines)
