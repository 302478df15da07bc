"""`benchmark.py plots`: the teaching pictures, what the graph layers see and reach.

Four pictures in --out_dir: regions_example.png (SLIC regions of test images and their
ceiling), laplacian_eigenvectors.png, chebyshev_response.png (a trained cheb model's
filters, or example ones) and receptive_field.png.
"""
from pathlib import Path

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from segm import graphs, plots, readers
from segm.tf_quiet import keras


def run(args, trio):
    """The teaching pictures: eigenvectors, Chebyshev responses, receptive fields, regions."""
    out = Path(args.out_dir)  # made by the first picture written, so a failure leaves none
    # The regions picture first: the one that reads data, so a wrong --data_dir stops
    # the command before any picture is written.
    for path, draw in ((out / "regions_example.png",
                        lambda: plot_regions(args.data_dir, trio)),
                       (out / "laplacian_eigenvectors.png", plot_eigenvectors),
                       (out / "chebyshev_response.png",
                        lambda: plot_chebyshev(args.checkpoint, trio.model.ChebConv)),
                       (out / "receptive_field.png", plot_receptive_field)):
        plots.save(draw(), path)
        print(f"wrote {path}")


def plot_regions(data_dir, trio, searched=500, typical=2, worst=2):
    """SLIC regions of test images and their ceiling: each region painted with its pixels'
    majority class, as a perfect region classifier would; the first test images, then the
    worst ceilings among the first `searched`, on the data main.py's defaults describe."""
    from segm import regions
    from skimage.segmentation import mark_boundaries
    cfg = trio.main.parse_config(["--data_dir", data_dir] if data_dir else [])
    images, masks = trio.load_data.make_datagen(cfg, seed=cfg.test_seed).test_set(searched)
    labels = [regions.superpixels(image) for image in images]
    painted = [regions.paint(lab, regions.majority_labels(lab, mask, 2))
               for lab, mask in zip(labels, masks)]
    iou = np.array([np.sum((p > 0) & (m > 0)) / max(1, np.sum((p > 0) | (m > 0)))
                    for p, m in zip(painted, masks)])
    shown = list(range(typical)) + list(np.argsort(iou, kind="stable")[:worst])

    def big(a):
        return np.repeat(np.repeat(a, 8, axis=0), 8, axis=1)

    fig, axes = plots.subplots(len(shown), 5, figsize=(11, 2.35 * len(shown) + 0.6))
    for row, i in zip(axes, shown):
        picture = readers.denormalize(images[i])
        means = regions.region_means(labels[i], picture.reshape(-1, 3))[labels[i]]
        for ax, (title, drawn) in zip(row, (
                (f"test image {i}", picture),
                (f"{labels[i].max() + 1} SLIC regions",  # drawn 8x larger: thin borders
                 mark_boundaries(big(picture), big(labels[i]), color=(1, 0.85, 0))),
                ("region mean colours", means),
                ("true mask", masks[i] > 0),
                (f"ceiling: majority painted (IoU {iou[i]:.2f})",
                 plots.error_overlay(picture, masks[i], painted[i])))):
            ax.imshow(drawn, cmap="gray" if drawn.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"Region graphs: SLIC n_segments={regions.N_SEGMENTS}, compactness="
                 f"{regions.COMPACTNESS}, min_size_factor={regions.MIN_SIZE_FACTOR}\n"
                 f"rows {typical + 1}-{len(shown)}: the worst ceilings of {searched} test "
                 f"scenes; errors: blue = digit pixel in a background region, red = the "
                 f"reverse", fontsize=9)
    fig.tight_layout()
    return fig


def plot_eigenvectors(side=32, count=16):
    """The grid Laplacian's lowest-frequency eigenvectors: the graph's Fourier basis."""
    laplacian = graphs.grid_laplacian(side, side)
    # Shift-invert around a point just below 0 finds the smallest eigenvalues fast.
    values, vectors = scipy.sparse.linalg.eigsh(laplacian.tocsc(), k=count, sigma=-1e-3)
    order = np.argsort(values)
    fig, axes = plots.subplots(2, count // 2, figsize=(count * 0.9, 4.2))
    for ax, i in zip(axes.ravel(), order):
        v = vectors[:, i].reshape(side, side)
        limit = np.abs(v).max()
        ax.imshow(v, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"λ = {values[i]:.3f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"First {count} eigenvectors of the normalised Laplacian of a {side}x{side} "
                 "4-connected grid (red +, blue -): the graph's low frequencies", fontsize=10)
    fig.tight_layout()
    return fig


def plot_chebyshev(checkpoint, cheb_conv):
    """g(λ) = Σ_k θ_k T_k(λ - 1) of learned ChebConv filters (cheb_conv: model.ChebConv), or
    of example ones."""
    lam = np.linspace(0, 2, 400)
    x = lam - 1  # rescaled Laplacian eigenvalues, lmax = 2
    basis = [np.ones_like(x), x]
    fig, ax = plots.subplots(figsize=(7, 4.2))
    layers = []
    if checkpoint and Path(checkpoint).is_file():
        trained = keras.saving.load_model(checkpoint)
        layers = [l for l in trained.layers if isinstance(l, cheb_conv)]
    if layers:
        kernel = layers[0].kernel.numpy()                             # (K, C, units)
        K = kernel.shape[0]
        while len(basis) < K:
            basis.append(2 * x * basis[-1] - basis[-2])
        rng = np.random.default_rng(0)
        pairs = rng.choice(kernel.shape[1] * kernel.shape[2], 8, replace=False)
        for p in pairs:
            theta = kernel[:, p // kernel.shape[2], p % kernel.shape[2]]
            ax.plot(lam, sum(t * b for t, b in zip(theta, basis[:K])), alpha=0.8)
        title = (f"Frequency responses of 8 learned filters (first ChebConv of "
                 f"{Path(checkpoint).parent.name}, K={K})")
    else:
        basis.append(2 * x * basis[-1] - basis[-2])
        for theta, name in (((0.5, -0.5, 0.0), "low-pass: θ = (½, -½, 0)"),
                            ((0.5, 0.5, 0.0), "high-pass: θ = (½, ½, 0)"),
                            ((0.5, 0.0, -0.5), "band-pass: θ = (½, 0, -½)")):
            ax.plot(lam, sum(t * b for t, b in zip(theta, basis)), label=name)
        ax.legend()
        title = "Frequency responses of example Chebyshev filters (K=3)"
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("Laplacian eigenvalue λ (0 = smooth, 2 = checkerboard)")
    ax.set_ylabel("gain g(λ)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_receptive_field(side=33, depths=(1, 2, 4, 8)):
    """Where an impulse at the centre reaches after k GCN layers and after k 3x3 convs."""
    impulse = np.zeros(side * side)
    impulse[(side // 2) * side + side // 2] = 1.0
    gcn = graphs.gcn_propagation(side, side)                           # Â, 4-connected
    box = graphs.grid_adjacency(side, side, connectivity=8) + scipy.sparse.identity(side * side)
    fig, axes = plots.subplots(2, len(depths) + 1, figsize=(3 * (len(depths) + 1), 6.2))
    reach = {"GCN (Â, 4-neighbours)": [], "3x3 convolution": []}
    for row, (label, step) in enumerate(zip(reach, (gcn, box / 9.0))):
        field = impulse
        for k in range(1, max(depths) + 1):
            field = step @ field
            reach[label].append(np.count_nonzero(field > 1e-12))
            if k in depths:
                ax = axes[row, depths.index(k)]
                ax.imshow(field.reshape(side, side) / field.max(), cmap="magma")
                ax.set_title(f"{label}\n{k} layer{'s' if k > 1 else ''}", fontsize=9)
                ax.axis("off")
    ax = axes[0, -1]
    gs = ax.get_gridspec()
    for a in axes[:, -1]:
        a.remove()
    ax = fig.add_subplot(gs[:, -1])
    for label, radii in reach.items():
        ax.plot(range(1, max(depths) + 1), radii, "o-", label=label)
    ax.set_xlabel("layers k")
    ax.set_ylabel("pixels that can influence the centre")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle("Where one pixel's information reaches after k layers: a square of (2k+1)² "
                 "pixels for 3x3 convolutions, a diamond of 2k²+2k+1 for the 4-neighbour GCN, "
                 "whose fixed weights fade like a diffusion", fontsize=10)
    fig.tight_layout()
    return fig
