"""Superpixel region graphs: SLIC regions of an image as the nodes of a small graph.

A region graph has one node per superpixel instead of one per pixel (227 instead of
1024 on average at the defaults below), the pixel grid pooled once by a data-dependent
clustering. Nodes carry each region's mean colour, colour spread, centroid and size;
edges join regions that touch. A batch of such graphs of different sizes is one
block-diagonal graph (the "disjoint union" batching of PyTorch Geometric and Spektral),
so the project's sparse layers run on it unchanged. A region's label is the majority
class of its pixels; predictions are painted back to pixels and scored there.

Pure numpy, scipy and scikit-image (no TensorFlow); the Laplacians are graphs.py's.
Superpixels are one level of pooling of the pixel grid, as Graclus' clusters are for
`gunet`: graphs.cluster_mean(graphs.assignment(labels.ravel())) is the pixel-to-region
mean as a sparse matrix, should a model want to pool inside the network.
"""
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.spatial import KDTree

from segm.graphs import normalized_laplacian

# SLIC on the default protocol (32x32 canvas, 14-pixel digits): the ceiling is the pixel
# IoU of every region painted with its majority class (ceiling_confusion), on the 2000
# fixed test images (Datagen seed 2024, 2 classes):
#
#   n_segments  compactness  min_size_factor  regions/image  ceiling fg IoU / mIoU
#        64          10            0.1             117          0.952 / 0.975
#        64           5            0.1             181          0.968 / 0.983
#       100          10            0.1             165          0.967 / 0.983
#       100           7            0.1             193          0.975 / 0.987
#       100           5            0.1             227          0.979 / 0.989
#       100           3            0.1             282          0.984 / 0.992
#       200          10            0.1             283          0.979 / 0.989
#       200           5            0.1             327          0.988 / 0.994
#       200          10            0.5 (default)   236          0.920 / 0.959
#
# The target is a model within 0.02 of its ceiling and at fg IoU >= 0.95, so the ceiling
# must reach 0.97 and then some: 100 / 5 / 0.1 gives 0.979 (0.979 with 11 classes too,
# mIoU 0.980) on 227 regions (123-457), 4.5x fewer nodes than pixels; going to 0.984 costs
# 25% more nodes. scikit-image's default min_size_factor=0.5 merges the one-pixel parts of
# strokes into the background. SLIC starts from a square grid of seeds, so on 32x32
# n_segments acts in steps: 64 to 80 give 8x8 seeds, 100 to 150 give 11x11 (and the same
# regions), 170 to 400 give 16x16; compactness and the merging decide the rest.
# SLIC costs 1.5 to 3 ms per image with any of these settings, 1.5 at the defaults (best
# of 5 runs over 200 images; the 2-core CPU was loaded, medians swung up to 16 ms, so the
# differences between settings are noise); features, adjacency and the batch's Laplacian
# add about 0.2-0.3 ms per image each.
N_SEGMENTS = 100
COMPACTNESS = 5.0
MIN_SIZE_FACTOR = 0.1
# node features, in column order: what region_features returns for an RGB image
FEATURES = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "y", "x", "size")
# with shape=True, then: the second moments of the region's pixel offsets from its
# centroid (pixels^2: its extent and orientation), and its brightness-weighted mean offset
# (pixels: which side of it is bright, where a stroke's edge cuts it)
SHAPE_FEATURES = ("moment_yy", "moment_xy", "moment_xx", "bright_dy", "bright_dx")


# ------------------------------------------------------------------ one image

def superpixels(image, n_segments=N_SEGMENTS, compactness=COMPACTNESS,
                min_size_factor=MIN_SIZE_FACTOR):
    """(H, W) int32 region labels 0..R-1 of an (H, W, 3) image, by SLIC (Achanta et al. 2012).

    SLIC stretches each image to [0, 1] before its Lab conversion, so [0, 1] and the
    models' [-1, 1] inputs give the same regions.
    """
    from skimage.segmentation import slic  # the one user of scikit-image's slow import
    labels = slic(np.asarray(image, np.float64), n_segments=n_segments,
                  compactness=compactness, min_size_factor=min_size_factor, start_label=0)
    # slic can skip numbers when it merges small regions; nodes must be 0..R-1.
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)


def pixel_coordinates(height, width):
    """(H*W, 2) each pixel centre's (y, x) in (0, 1), raster order."""
    ys, xs = np.divmod(np.arange(height * width), width)
    return np.stack([(ys + 0.5) / height, (xs + 0.5) / width], axis=1)


def region_means(labels, values):
    """(R, k) each region's mean of per-pixel values (H*W, k), labels (H, W) in raster order."""
    flat = labels.ravel()
    n = int(flat.max()) + 1
    # One bincount per column: ~6x faster here than the sparse pooling product
    # graphs.cluster_mean(graphs.assignment(flat)) @ values, which computes the same.
    sums = np.stack([np.bincount(flat, column, n) for column in values.T], axis=1)
    return sums / np.bincount(flat, minlength=n)[:, None]


def region_features(image, labels, shape=False):
    """(R, 2C + 3) float32 per region: mean colour, colour std, centroid (y, x) in (0, 1), size;
    with shape, 5 more columns (SHAPE_FEATURES), what a region's mean hides of its inside:

        moments  mean over its pixels p of d d^T, d = p - centroid in pixels: (yy, xy, xx)
        bright   mean of (l_p - mean l) d, l a pixel's brightness (its channels' mean)

    A stroke one or two pixels wide crosses regions of ~4.5 pixels, so where in a region it
    lies is the stroke's shape at a finer scale than the graph's. Size is the region's share
    of the image's pixels.
    """
    h, w, c = image.shape
    flat = labels.ravel()
    colours = np.asarray(image, np.float64).reshape(-1, c)              # (H*W, C)
    mean = region_means(labels, colours)                                # (R, C)
    std = np.sqrt(region_means(labels, (colours - mean[flat]) ** 2))
    centroid = region_means(labels, pixel_coordinates(h, w))            # (R, 2)
    size = np.bincount(flat, minlength=len(mean))[:, None] / (h * w)
    columns = [mean, std, centroid, size]
    if shape:
        d = (pixel_coordinates(h, w) - centroid[flat]) * (h, w)         # (H*W, 2) pixels
        brightness = colours.mean(axis=1, keepdims=True)                # (H*W, 1)
        brightness -= region_means(labels, brightness)[flat]
        moments = np.stack([d[:, 0] ** 2, d[:, 0] * d[:, 1], d[:, 1] ** 2], axis=1)
        columns += [region_means(labels, moments), region_means(labels, brightness * d)]
    return np.concatenate(columns, axis=1).astype(np.float32)


def region_adjacency(labels, knn=0):
    """A: symmetric 0/1 (R, R), A_ij = 1 when regions i and j touch (4-neighbourhood),
    or, with knn > 0, when one is among the other's knn nearest centroids."""
    n = int(labels.max()) + 1
    # Every horizontally or vertically adjacent pixel pair whose regions differ is an edge.
    pairs = [(labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])]
    first = np.concatenate([a[a != b] for a, b in pairs])
    second = np.concatenate([b[a != b] for a, b in pairs])
    rows, cols = [first, second], [second, first]
    if knn > 0 and n > 1:
        centroid = region_means(labels, pixel_coordinates(*labels.shape))
        k = min(knn, n - 1)
        _, near = KDTree(centroid).query(centroid, k + 1)  # (R, k+1), itself among them
        # Itself is not always first: a ring's centroid can coincide with the region it
        # surrounds. Drop it wherever it is, or else the farthest.
        itself = near == np.arange(n)[:, None]
        itself[:, -1] |= ~itself.any(axis=1)
        near = near[~itself]                                   # (R*k,)
        rows += [np.repeat(np.arange(n), k), near]
        cols += [near, np.repeat(np.arange(n), k)]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    a = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
    a.data[:] = 1  # a pair met along many pixel borders is still one edge
    return a


# A region graph's Laplacian L = I - D^-1/2 A D^-1/2 is graphs.normalized_laplacian(A).

def rescaled_laplacian(adjacency):
    """L~ = L - I = 2 L / lmax - I with lmax = 2 (L's eigenvalues lie in [0, 2]), for Chebyshev."""
    return (normalized_laplacian(adjacency)
            - sp.identity(adjacency.shape[0], np.float32)).tocsr()


def gcn_propagation(adjacency):
    """Â = D~^-1/2 (A + I) D~^-1/2 = I - L(A + I), with D~ the degrees of A + I."""
    eye = sp.identity(adjacency.shape[0], np.float32, format="csr")
    return (eye - normalized_laplacian(adjacency + eye)).tocsr()


def region_graph(image, knn=0, **slic_options):
    """(labels (H, W), features (R, F), adjacency (R, R)) of one image; slic_options go to
    superpixels."""
    labels = superpixels(image, **slic_options)
    return labels, region_features(image, labels), region_adjacency(labels, knn)


# ------------------------------------------------------------------ labels and pixels

def majority_labels(labels, mask, num_classes):
    """(R,) each region's most frequent class among its pixels; a tie goes to the lowest class."""
    counts = np.bincount((labels * num_classes + mask).ravel(),
                         minlength=(int(labels.max()) + 1) * num_classes)
    return counts.reshape(-1, num_classes).argmax(axis=1)  # argmax takes the first maximum


def paint(labels, region_classes):
    """Each pixel takes its region's value: (..., H, W) labels -> (..., H, W[, C])."""
    return np.asarray(region_classes)[labels]


def stacked(labels):
    """(B, H, W) per-image labels renumbered across the batch, in batch_graphs' node order.

    majority_labels(stacked(labels), masks, K) are then the targets of a batch's nodes,
    and paint(stacked(labels), node_classes) its pixel predictions, in one call each.
    """
    counts = labels.reshape(len(labels), -1).max(axis=1) + 1
    return labels + (np.cumsum(counts) - counts)[:, None, None]


# ------------------------------------------------------------------ batches

class Batch(NamedTuple):
    """Graphs of different sizes as one: the disjoint union."""
    features: np.ndarray    # (N, F) every graph's nodes, stacked in order
    adjacency: sp.csr_matrix  # (N, N) block-diagonal, one block per graph
    graph_index: np.ndarray  # (N,) which graph each node belongs to
    offsets: np.ndarray     # (B + 1,) graph b's nodes are offsets[b]:offsets[b + 1]


def batch_graphs(graphs):
    """The disjoint union of [(features (R_b, F), adjacency (R_b, R_b)), ...] as a Batch.

    Normalisation is per node, so the batch's Laplacian (or Â, or L~) is the block diagonal of
    every graph's own Laplacian; stacked(labels) numbers the pixels' regions likewise.
    """
    sizes = np.array([len(f) for f, _ in graphs])
    return Batch(np.concatenate([f for f, _ in graphs]),
                 sp.block_diag([a for _, a in graphs], format="csr", dtype=np.float32),
                 np.repeat(np.arange(len(graphs)), sizes),
                 np.concatenate([[0], np.cumsum(sizes)]))


# ------------------------------------------------------------------ the ceiling

def ceiling_confusion(labels, masks, num_classes):
    """(K, K) pixel confusion matrix (rows truth) of (B, H, W) regions each painted with
    the majority class of its pixels in masks (B, H, W): a perfect region classifier."""
    nodes = stacked(labels)
    predicted = paint(nodes, majority_labels(nodes, masks, num_classes))
    return np.bincount((masks * num_classes + predicted).ravel(),
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)
