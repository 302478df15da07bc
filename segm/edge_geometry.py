"""Edge geometry of a graph and the B-spline bases that turn it into message weights.

A graph layer that sees direction needs to know where each neighbour lies. On the
pixel grid that is one of 8 directions; between superpixels it is any offset. Each edge
j -> i gets pseudo-coordinates u_ij (SplineCNN, Fey et al. 2018):

    offset    (dy, dx) = centroid_j - centroid_i, scaled by 1 / radius and clipped
              to [-1, 1]: sees direction, so it is not rotation invariant
    distance  |(dy, dx)| / radius, clipped to [0, 1]: blind to direction, so it is

and the layer's message weight is a learned function of u: W(u) = sum_k B_k(u) W_k,
B_k the degree-1 (linear) B-splines on a uniform grid of `size` knots per dimension
(size^2 kernels for offsets, size for distances). They are the hat functions of
bilinear interpolation, so W(u) interpolates between the learned W_k at the knots.

Why B-splines rather than MoNet's Gaussians (Monti et al. 2017): (1) on the grid with
size 3 and radius 1 the 8 neighbours and the node itself sit exactly on the 9 knots, so
each gets one W_k alone and the layer is DirectionalGraphConv, a 3x3 convolution,
exactly, where a Gaussian leaks into every other kernel; (2) the B_k depend only on the
geometry, not on weights, so they are computed once per graph (in the input pipeline,
numpy) and the layer is one sparse product with constants plus one matmul; Gaussians
with learned means and widths need gradients through every edge weight; (3) each edge
touches at most 4 kernels (2 for distances), so the product stays sparse.

Pure numpy and scipy; the layer is region_layers.SplineConv.
"""
import numpy as np
import scipy.sparse as sp

from segm.graphs import direction_adjacencies

PSEUDO = ("offset", "distance")


def check_kernel(pseudo, size, radius):
    if pseudo not in PSEUDO:
        raise ValueError(f"pseudo must be one of {PSEUDO}, got {pseudo!r}.")
    if int(size) < 2 or not float(radius) > 0:
        raise ValueError(f"size must be >= 2 knots and radius > 0, got {size!r}, {radius!r}.")


def kernel_count(pseudo, size):
    """How many kernels W_k a layer with these bases has."""
    return size * size if pseudo == "offset" else size


def hat(v, size):
    """Linear B-splines on knots 0..size-1 at v in [0, size - 1]: (lower knot, its weight);
    the upper knot lower + 1 gets 1 - weight. At a knot the weight is exactly 1."""
    lower = np.minimum(np.floor(v), size - 2).astype(np.int64)
    return lower, 1.0 - (v - lower)


def basis_entries(offsets, pseudo, size, radius):
    """(E, P) kernel indices and (E, P) weights of each edge's B_k(u), P = 4 or 2, from its
    (E, 2) offsets (dy, dx) in pixels. Each row's weights sum to 1."""
    check_kernel(pseudo, size, radius)
    offsets = np.asarray(offsets, np.float64)
    if pseudo == "distance":
        v = np.minimum(np.hypot(offsets[:, 0], offsets[:, 1]) / radius, 1.0) * (size - 1)
        lo, w = hat(v, size)
        return np.stack([lo, lo + 1], 1), np.stack([w, 1.0 - w], 1)
    v = (np.clip(offsets / radius, -1.0, 1.0) + 1.0) / 2.0 * (size - 1)       # (E, 2)
    (ly, lx), (wy, wx) = zip(*(hat(v[:, d], size) for d in (0, 1)))
    index = np.stack([ly * size + lx, ly * size + lx + 1,
                      (ly + 1) * size + lx, (ly + 1) * size + lx + 1], 1)
    weight = np.stack([wy * wx, wy * (1 - wx), (1 - wy) * wx, (1 - wy) * (1 - wx)], 1)
    return index, weight


def spline_bases(rows, cols, offsets, n, pseudo="offset", size=3, radius=1.0, mean=True):
    """B: the (N*K, N) sparse matrix with B[i*K + k, j] = B_k(u_ij) for each edge j -> i
    (divided by i's number of edges when mean), so that (B @ X)[i*K + k] is the k-th
    kernel's share of i's messages, and B @ X reshaped to (N, K*C) holds each node's K
    shares side by side. Edges are given as rows i, cols j and their offsets."""
    index, weight = basis_entries(offsets, pseudo, size, radius)
    rows = np.asarray(rows, np.int64)
    if mean:
        weight = weight / np.bincount(rows, minlength=n)[rows, None]
    k = kernel_count(pseudo, size)
    b = sp.coo_matrix((weight.ravel().astype(np.float32),
                       ((rows[:, None] * k + index).ravel(), np.repeat(cols, index.shape[1]))),
                      shape=(n * k, n)).tocsr()   # duplicates summed
    b.eliminate_zeros()
    return b


def grid_edges(height, width, connectivity=8):
    """Every pixel's edges to its neighbours and to itself on the grid, with their offsets:
    (rows i, cols j, (E, 2) offsets (dy, dx) of j from i), raster-order pixels."""
    n = height * width
    adjacencies = {(0, 0): sp.identity(n, format="coo"),
                   **direction_adjacencies(height, width, connectivity)}
    coos = {d: a.tocoo() for d, a in adjacencies.items()}
    return (np.concatenate([c.row for c in coos.values()]),
            np.concatenate([c.col for c in coos.values()]),
            np.concatenate([np.tile(d, (c.nnz, 1)) for d, c in coos.items()]))


def region_edges(adjacency, centroids):
    """Edges of a region graph, each node's self-loop included, with offsets between the
    regions' centroids (R, 2) in pixels: (rows, cols, (E, 2) offsets)."""
    coo = (adjacency + sp.identity(adjacency.shape[0], format="csr")).tocoo()
    return coo.row, coo.col, centroids[coo.col] - centroids[coo.row]
