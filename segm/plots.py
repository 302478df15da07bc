"""Every picture the project draws, on bare matplotlib Figures, each written atomically."""
import csv

import numpy as np

from segm import files
from segm.readers import IGNORE


def subplots(rows=1, cols=1, **kwargs):
    """(figure, axes) drawn off-screen: a bare Figure, so no pyplot state and no backend to set."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=kwargs.pop("figsize", None), layout=kwargs.pop("layout", None))
    return fig, fig.subplots(rows, cols, **kwargs)


def save(fig, path, dpi=100):
    """Write fig as a PNG that appears whole or not at all."""
    with files.atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


def class_colours(num_classes):
    """(K, 3) RGB: black background; white for one class, else a distinct colour per class."""
    import matplotlib
    if num_classes == 2:
        return np.array([(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)])
    palette = "tab10" if num_classes <= 11 else "tab20" if num_classes <= 21 else "turbo"
    cmap = matplotlib.colormaps[palette]
    steps = range(num_classes - 1) if palette != "turbo" else np.linspace(0, 1, num_classes - 1)
    return np.array([(0.0, 0.0, 0.0)] + [cmap(i)[:3] for i in steps])


def colour_mask(mask, num_classes):
    """(H, W, 3) RGB of a mask; unlabelled pixels (IGNORE) mid grey."""
    table = np.full((256, 3), 0.5)
    table[:num_classes] = class_colours(num_classes)
    return table[mask]


def class_names(num_classes, digits=True):
    """A name per class: the digits of the 11-class protocol, or class 1, class 2, ..."""
    if digits and num_classes == 11:
        return ["background"] + [f"digit {k}" for k in range(10)]
    return ["background"] + [f"class {k}" for k in range(1, num_classes)]


def class_legend(fig, num_classes, names=None):
    """A legend naming each class colour, under the panels (more than two classes only)."""
    from matplotlib.patches import Patch
    names = names or class_names(num_classes)
    handles = [Patch(color=c, label=name) for c, name in zip(class_colours(num_classes), names)]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8)


def error_overlay(image, truth, pred):
    """Grey image; missed pixels blue, false alarms red, wrong class yellow, unlabelled as is."""
    grey = np.repeat(image.mean(-1, keepdims=True), 3, -1) * 0.6   # (H, W, 3)
    labelled = truth != IGNORE
    grey[labelled & (truth > 0) & (pred == 0)] = (0.2, 0.4, 1.0)
    grey[labelled & (truth == 0) & (pred > 0)] = (1.0, 0.2, 0.2)
    grey[labelled & (truth > 0) & (pred > 0) & (truth != pred)] = (1.0, 0.9, 0.1)
    return grey


def error_title(mask, pred, num_classes):
    """The errors panel's title: the row's foreground IoU (any class counts as foreground);
    with several classes also the share of the true foreground given its own class."""
    labelled = mask != IGNORE
    truth, found = (mask > 0) & labelled, (pred > 0) & labelled
    union = (truth | found).sum()
    if not union:
        return "errors"
    iou = (truth & found).sum() / union
    if num_classes == 2:
        return f"errors (IoU {iou:.2f})"
    right = (pred[truth] == mask[truth]).mean() if truth.any() else 0.0
    return f"fg IoU {iou:.2f}, {right:.0%} right class"


def samples(shown, masks, preds, num_classes, title, path, names=None, labels=None):
    """Rows of input | ground truth | prediction | errors; shown are RGB images in [0, 1],
    each row's of any size; labels, if given, title each row's input."""
    rows = len(shown)
    fig, axes = subplots(rows, 4, figsize=(8, 2.2 * rows + 1.0), squeeze=False)
    for r in range(rows):
        panels = (shown[r], colour_mask(masks[r], num_classes),
                  colour_mask(preds[r], num_classes), error_overlay(shown[r], masks[r], preds[r]))
        titles = (labels[r] if labels else "input", "ground truth", "prediction",
                  error_title(masks[r], preds[r], num_classes))
        for ax, panel, name in zip(axes[r], panels, titles):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    if num_classes > 2:
        class_legend(fig, num_classes, names)
    fig.suptitle(title + "\nerrors: blue = missed, red = false alarm, yellow = wrong class"
                 + (", grey = unlabelled" if any((m == IGNORE).any() for m in masks) else ""),
                 fontsize=9)
    # Fixed margins in inches (a two-line title above, the legend below, a title per panel):
    # the same picture as tight_layout's, without its measuring pass over every text.
    height = 2.2 * rows + 1.0
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.8 / height, wspace=0.08,
                        hspace=0.12, bottom=(0.05 if num_classes > 2 else 0) + 0.1 / height)
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


def prediction(shown, pred, num_classes, title, path, names=None):
    """image | predicted mask | overlay for one image of any size."""
    overlay = shown * 0.5 + colour_mask(pred, num_classes) * 0.5
    fig, axes = subplots(1, 3, figsize=(12, 4.3))
    for ax, panel, name in zip(axes, (shown, colour_mask(pred, num_classes), overlay),
                               ("image", "predicted mask", "overlay")):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    if num_classes > 2:
        class_legend(fig, num_classes, names)
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


def confusion(cm, names, title, path):
    """The confusion matrix (rows truth, columns prediction), each row as shares of its pixels,
    with the share printed in every cell that holds at least 1%."""
    cm = np.asarray(cm, np.float64)
    shares = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = subplots(figsize=(7.5, 6.5), layout="constrained")
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), share in np.ndenumerate(shares):
        if share >= 0.01:
            ax.text(col, row, f"{100 * share:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if share > 0.6 else "black")
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xlabel="predicted",
           ylabel="true", title=title)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    fig.colorbar(shown, ax=ax, label="share of the true class's pixels")
    save(fig, path)
