"""Graphs as scipy.sparse matrices: the pixel grid, its Laplacians, and Graclus coarsening.

Pure functions of numpy and scipy (never a dense (H*W)^2 matrix), each with its
formula in the docstring; model.py's layers turn them into TensorFlow products.
"""
import functools

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg

CONNECTIVITIES = (4, 8)
# (dy, dx) of each neighbour in raster order; the 4-neighbours are a subset.
DIRECTIONS = {
    4: ((-1, 0), (0, -1), (0, 1), (1, 0)),
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
}


def check_connectivity(connectivity):
    if connectivity not in CONNECTIVITIES:
        raise ValueError(
            f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}.")


# ---------------------------------------------------------------- the grid graph

def direction_adjacencies(height, width, connectivity=8):
    """{(dy, dx): A_d} with A_d[i, j] = 1 when pixel j is pixel i moved by (dy, dx)."""
    check_connectivity(connectivity)
    n = height * width
    ys, xs = np.divmod(np.arange(n), width)
    adjacencies = {}
    for dy, dx in DIRECTIONS[connectivity]:
        inside = (ys + dy >= 0) & (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)
        rows = np.flatnonzero(inside)
        cols = rows + dy * width + dx
        ones = np.ones(len(rows), np.float32)
        adjacencies[(dy, dx)] = sp.csr_matrix((ones, (rows, cols)), shape=(n, n))
    return adjacencies


def grid_adjacency(height, width, connectivity=4):
    """A: the symmetric 0/1 adjacency of the 4- or 8-connected pixel grid."""
    return sum(direction_adjacencies(height, width, connectivity).values()).tocsr()


def degree(adjacency):
    """d_i = sum_j A_ij."""
    return np.asarray(adjacency.sum(axis=1)).ravel()


def inv_sqrt(d):
    """d^-1/2, with 0 where d = 0 (an isolated pixel)."""
    safe = np.where(d > 0, d, 1.0)
    return np.where(d > 0, safe ** -0.5, 0.0).astype(np.float32)


def normalized_laplacian(adjacency):
    """L = I - D^-1/2 A D^-1/2"""
    s = sp.diags(inv_sqrt(degree(adjacency)))
    return (sp.identity(adjacency.shape[0], np.float32, format="csr")
            - s @ adjacency @ s).astype(np.float32).tocsr()


def grid_laplacian(height, width, connectivity=4):
    """L = I - D^-1/2 A D^-1/2 of the pixel grid."""
    return normalized_laplacian(grid_adjacency(height, width, connectivity))


def gcn_propagation(height, width, connectivity=4):
    """Â = D~^-1/2 (A + I) D~^-1/2, with D~ the degrees of A + I."""
    a = grid_adjacency(height, width, connectivity)
    a = a + sp.identity(a.shape[0], np.float32, format="csr")
    s = sp.diags(inv_sqrt(degree(a)))
    return (s @ a @ s).tocsr()


def rescaled_laplacian(height, width, connectivity=4, lmax=2.0):
    """L~ = 2 L / lmax - I; lmax=None computes the largest eigenvalue of L."""
    lap = grid_laplacian(height, width, connectivity)
    if lmax is None:
        lmax = scipy.sparse.linalg.eigsh(lap, k=1, which="LM", return_eigenvectors=False)[0]
    return (2.0 / lmax * lap - sp.identity(lap.shape[0], np.float32, format="csr")).tocsr()


# ------------------------------------------------------- coarsening, for pooling

def graclus_clusters(adjacency):
    """cluster[i]: node i paired with its free neighbour j of largest A_ij (1/d_i + 1/d_j).

    The greedy normalised-cut matching of Graclus (Dhillon, Guan & Kulis, "Weighted
    graph cuts without eigenvectors: a multilevel approach", IEEE TPAMI 2007) as used
    for pooling by Defferrard, Bresson & Vandergheynst, "Convolutional neural networks
    on graphs with fast localized spectral filtering", NeurIPS 2016. Nodes are visited
    by increasing degree, ties by index, as in Defferrard's later levels (not his
    random first order): the same graph always gives the same clusters, so a saved
    model rebuilds its graphs. A node with no free neighbour stays alone.
    """
    a = adjacency.tocsr(copy=True)
    a.sort_indices()  # argmax takes the first of equal cuts: the lowest index
    d = degree(a)
    cluster = np.full(a.shape[0], -1)
    count = 0
    for i in np.argsort(d, kind="stable"):
        if cluster[i] >= 0:
            continue
        neighbours = a.indices[a.indptr[i]:a.indptr[i + 1]]
        free = cluster[neighbours] < 0
        cluster[i] = count
        if free.any():
            cut = a.data[a.indptr[i]:a.indptr[i + 1]][free] * (1 / d[i] + 1 / d[neighbours[free]])
            cluster[neighbours[free][np.argmax(cut)]] = count
        count += 1
    return cluster


def assignment(cluster):
    """S (n x n_c): S_ic = 1 when node i is in cluster c."""
    n = len(cluster)
    return sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), cluster)),
                         shape=(n, cluster.max() + 1))


def coarsen(adjacency, matchings=2):
    """(S, A_c): `matchings` Graclus passes composed into S, A_c = S^T A S without self loops."""
    s = sp.identity(adjacency.shape[0], np.float32, format="csr")
    for _ in range(matchings):
        step = assignment(graclus_clusters(adjacency))
        adjacency = (step.T @ adjacency @ step).tolil()
        adjacency.setdiag(0)  # edges inside a cluster are no longer edges
        adjacency = adjacency.tocsr()
        adjacency.eliminate_zeros()
        s = (s @ step).tocsr()
    return s, adjacency


def cluster_mean(s):
    """P = D_c^-1 S^T, D_c = diag(cluster sizes): P X is each cluster's mean of X."""
    return (sp.diags(1 / degree(s.T)) @ s.T).astype(np.float32).tocsr()


@functools.lru_cache(maxsize=None)  # every layer of a level asks; callers must not modify
def grid_pyramid(height, width, level, connectivity=4):
    """(S, A) of `level`: 0 is the pixel grid (S = I), level l is level l-1 coarsened ~4x."""
    if level == 0:
        a = grid_adjacency(height, width, connectivity)
        return sp.identity(a.shape[0], np.float32, format="csr"), a
    return coarsen(grid_pyramid(height, width, level - 1, connectivity)[1])


def grid_stencil(height, width, connectivity, self_loop):
    """(n, k) with D^-1/2 (A + self_loop I) D^-1/2 X = n * conv(n * X, k) on the grid."""
    a = grid_adjacency(height, width, connectivity)
    n = inv_sqrt(degree(a) + self_loop).reshape(height, width, 1)
    k = np.zeros((3, 3), np.float32)
    for dy, dx in DIRECTIONS[connectivity]:
        k[dy + 1, dx + 1] = 1.0
    k[1, 1] = self_loop
    return n, k
