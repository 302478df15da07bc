"""Every picture the project draws, on bare matplotlib Figures, each written atomically."""
import csv

import numpy as np

import files


def subplots(rows=1, cols=1, **kwargs):
    """(figure, axes) drawn off-screen: a bare Figure, so no pyplot state and no backend to set."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(rows, cols, **kwargs)


def save(fig, path, dpi=100):
    """Write fig as a PNG that appears whole or not at all."""
    with files.atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


def class_colours(num_classes):
    """(K, 3) RGB: black background; white digits, or a distinct colour per digit class."""
    import matplotlib
    if num_classes == 2:
        return np.array([(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)])
    tab10 = [matplotlib.colormaps["tab10"](i)[:3] for i in range(10)]
    return np.array([(0.0, 0.0, 0.0)] + tab10)[:num_classes]


def colour_mask(mask, num_classes):
    return class_colours(num_classes)[mask]                        # (H, W, 3)


def class_legend(fig, num_classes):
    """A legend naming each class colour, under the panels (11 classes only)."""
    from matplotlib.patches import Patch
    handles = [Patch(color=c, label="background" if k == 0 else f"digit {k - 1}")
               for k, c in enumerate(class_colours(num_classes))]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8)


def error_overlay(image, truth, pred):
    """Grey image; missed digit pixels blue, false digit pixels red, wrong digit yellow."""
    grey = np.repeat(image.mean(-1, keepdims=True), 3, -1) * 0.6   # (H, W, 3)
    grey[(truth > 0) & (pred == 0)] = (0.2, 0.4, 1.0)
    grey[(truth == 0) & (pred > 0)] = (1.0, 0.2, 0.2)
    grey[(truth > 0) & (pred > 0) & (truth != pred)] = (1.0, 0.9, 0.1)
    return grey


def samples(shown, masks, preds, num_classes, title, path):
    """Rows of input | ground truth | prediction | errors; shown are RGB images in [0, 1]."""
    rows = len(shown)
    fig, axes = subplots(rows, 4, figsize=(8, 2.2 * rows + 1.0), squeeze=False)
    for r in range(rows):
        inter = ((masks[r] > 0) & (preds[r] > 0)).sum()
        union = ((masks[r] > 0) | (preds[r] > 0)).sum()
        panels = (shown[r], colour_mask(masks[r], num_classes),
                  colour_mask(preds[r], num_classes), error_overlay(shown[r], masks[r], preds[r]))
        names = ("input", "ground truth", "prediction",
                 f"errors (IoU {inter / union:.2f})" if union else "errors")
        for ax, panel, name in zip(axes[r], panels, names):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    if num_classes > 2:
        class_legend(fig, num_classes)
    fig.suptitle(title + "\nerrors: blue = missed digit, red = false digit, yellow = wrong digit",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.05 if num_classes > 2 else 0, 1, 1))
    save(fig, path)


def learning_curves(log_path, eval_every, title, path):
    """Loss and IoU against step, from the CSV log; False if the log has no rows yet."""
    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return False
    steps = [(int(r["epoch"]) + 1) * eval_every for r in rows]
    iou = "fg_iou" if "fg_iou" in rows[0] else "miou"
    fig, (left, right) = subplots(1, 2, figsize=(10, 3.6))
    iou_name = {"fg_iou": "foreground IoU", "miou": "mean IoU"}[iou]
    for ax, key, label in ((left, "loss", "loss"), (right, iou, iou_name)):
        ax.plot(steps, [float(r[key]) for r in rows], "o-", label="training batches (interval)")
        ax.plot(steps, [float(r["val_" + key]) for r in rows], "s-", label="held-out images")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    right.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)
    return True


def prediction(shown, pred, num_classes, title, path):
    """image | predicted mask | overlay for one image of any size."""
    overlay = shown * 0.5 + colour_mask(pred, num_classes) * 0.5
    fig, axes = subplots(1, 3, figsize=(12, 4.3))
    for ax, panel, name in zip(axes, (shown, colour_mask(pred, num_classes), overlay),
                               ("image", "predicted mask", "overlay")):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    if num_classes > 2:
        class_legend(fig, num_classes)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if num_classes > 2 else 0, 1, 0.95))
    save(fig, path)


def input_grid(images, masks, num_classes, title, path, cols=4):
    """Pairs of input | mask in a grid, as the generator makes them; images in [0, 1]."""
    rows = -(-len(images) // cols)
    fig, axes = subplots(rows, 2 * cols, figsize=(2.2 * cols, 1.2 * rows + 0.4),
                             squeeze=False)
    for ax, image, mask in zip(axes.reshape(-1, 2), images, masks):
        ax[0].imshow(image, interpolation="nearest")
        ax[1].imshow(colour_mask(mask, num_classes), interpolation="nearest")
    for ax, name in zip(axes[0], ["input", "mask"] * cols):
        ax.set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=7, wrap=True)
    fig.tight_layout()
    save(fig, path)
