"""graphs.py: the grid graph, its Laplacians and its coarsening against dense numpy."""
import itertools
import time

import numpy as np
import pytest
import scipy.sparse

from segm import graphs

GRIDS = [(3, 4), (5, 5)]
RNG = np.random.default_rng(0)


def brute_adjacency(h, w, connectivity):
    """A by comparing every pair of pixels: the definition, O((HW)^2)."""
    pixels = list(itertools.product(range(h), range(w)))
    a = np.zeros((h * w, h * w))
    for (i, (yi, xi)), (j, (yj, xj)) in itertools.product(enumerate(pixels), repeat=2):
        dy, dx = abs(yi - yj), abs(xi - xj)
        a[i, j] = (dy + dx == 1) if connectivity == 4 else (max(dy, dx) == 1)
    return a


def sym_normalise(a):
    """D^-1/2 A D^-1/2 in dense numpy."""
    s = np.diag(1 / np.sqrt(a.sum(1)))
    return s @ a @ s


# ------------------------------------------------------------------ graph math

@pytest.mark.parametrize("h, w", GRIDS)
@pytest.mark.parametrize("connectivity", [4, 8])
def test_adjacency_matches_definition_and_counts(h, w, connectivity):
    a = graphs.grid_adjacency(h, w, connectivity).toarray()
    np.testing.assert_array_equal(a, brute_adjacency(h, w, connectivity))
    edges = 2 * h * w - h - w + (2 * (h - 1) * (w - 1) if connectivity == 8 else 0)
    assert a.sum() / 2 == edges
    deg = graphs.degree(graphs.grid_adjacency(h, w, connectivity)).reshape(h, w)
    corner, side, inner = (2, 3, 4) if connectivity == 4 else (3, 5, 8)
    assert deg[0, 0] == deg[0, -1] == deg[-1, 0] == deg[-1, -1] == corner
    assert deg[0, 1] == deg[1, 0] == deg[-1, 1] == deg[1, -1] == side
    assert deg[1, 1] == inner


@pytest.mark.parametrize("h, w", GRIDS)
@pytest.mark.parametrize("connectivity", [4, 8])
def test_laplacian_and_propagation_match_dense_formulas(h, w, connectivity):
    a = brute_adjacency(h, w, connectivity)
    eye = np.eye(h * w)
    lap = graphs.grid_laplacian(h, w, connectivity).toarray()
    np.testing.assert_allclose(lap, eye - sym_normalise(a), atol=1e-6)
    np.testing.assert_allclose(lap, lap.T, atol=1e-7)
    eig = np.linalg.eigvalsh(lap)
    assert eig.min() > -1e-5 and eig.max() < 2 + 1e-5
    assert abs(eig.min()) < 1e-5, "a connected graph has exactly one zero eigenvalue"
    prop = graphs.gcn_propagation(h, w, connectivity).toarray()
    np.testing.assert_allclose(prop, sym_normalise(a + eye), atol=1e-6)
    for lmax in (2.0, None):
        rescaled = graphs.rescaled_laplacian(h, w, connectivity, lmax=lmax).toarray()
        eig = np.linalg.eigvalsh(rescaled)
        assert eig.min() > -1 - 1e-5 and eig.max() < 1 + 1e-5
    np.testing.assert_allclose(rescaled, 2 * lap / np.linalg.eigvalsh(lap).max() - eye, atol=1e-5)
    assert abs(eig.max() - 1) < 1e-4, "lmax=None rescales the top eigenvalue to exactly 1"


def test_isolated_pixel_has_no_nan():
    assert graphs.grid_laplacian(1, 1).toarray().tolist() == [[1.0]]
    assert graphs.gcn_propagation(1, 1).toarray().tolist() == [[1.0]]


@pytest.mark.parametrize("connectivity", [4, 8])
def test_direction_adjacencies_shift_pixels(connectivity):
    h, w = 3, 4
    directions = graphs.direction_adjacencies(h, w, connectivity)
    assert set(directions) == set(graphs.DIRECTIONS[connectivity])
    image = RNG.standard_normal((h, w))
    padded = np.pad(image, 1)
    for (dy, dx), a in directions.items():
        # (A_d x)[y, x] is the pixel at (y + dy, x + dx), zero outside the image.
        shifted = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        np.testing.assert_allclose((a @ image.ravel()).reshape(h, w), shifted, atol=1e-6)
        np.testing.assert_array_equal(a.T.toarray(), directions[(-dy, -dx)].toarray())
    total = sum(a.toarray() for a in directions.values())
    np.testing.assert_array_equal(total, brute_adjacency(h, w, connectivity))


def test_large_grid_builds_sparse_and_fast():
    start = time.perf_counter()
    prop = graphs.gcn_propagation(256, 256, 8)
    lap = graphs.grid_laplacian(256, 256, 8)
    assert time.perf_counter() - start < 1.0
    assert prop.nnz == 256 * 256 + 2 * (4 * 256 * 256 - 6 * 256 + 2)
    assert lap.data.nbytes + lap.indices.nbytes < 5e6


# ------------------------------------------------------------ coarsening, pooling

def graclus_reference(a):
    """Graclus' greedy matching from its definition, on a dense matrix."""
    n, d = len(a), a.sum(1)
    cluster, count = -np.ones(n, int), 0
    for i in sorted(range(n), key=lambda i: (d[i], i)):
        if cluster[i] >= 0:
            continue
        best, best_cut = i, 0.0
        for j in range(n):
            cut = a[i, j] * (1 / d[i] + 1 / d[j]) if a[i, j] > 0 else 0.0
            if j != i and cluster[j] < 0 and cut > best_cut:
                best, best_cut = j, cut
        cluster[i] = cluster[best] = count
        count += 1
    return cluster


def random_graph(n, seed):
    """A symmetric graph with random positive weights on about a third of the pairs."""
    rng = np.random.default_rng(seed)
    a = np.triu(rng.uniform(0.1, 1, (n, n)) * (rng.uniform(size=(n, n)) < 0.35), 1)
    return a + a.T


GRAPHS = {"grid 5x6/4": graphs.grid_adjacency(5, 6, 4).toarray(),
          "grid 4x7/8": graphs.grid_adjacency(4, 7, 8).toarray(),
          "weighted coarse grid": graphs.grid_pyramid(8, 8, 1)[1].toarray(),
          "random": random_graph(12, 0)}


@pytest.mark.parametrize("name", GRAPHS)
def test_graclus_matches_dense_reference_and_pairs_neighbours(name):
    a = GRAPHS[name]
    cluster = graphs.graclus_clusters(scipy.sparse.csr_matrix(a))
    np.testing.assert_array_equal(cluster, graclus_reference(a))
    sizes = np.bincount(cluster)
    assert sizes.min() >= 1 and sizes.max() <= 2 and sizes.sum() == len(a)
    for members in (np.flatnonzero(cluster == c) for c in np.flatnonzero(sizes == 2)):
        assert a[members[0], members[1]] > 0, "a pair is always joined by an edge"


@pytest.mark.parametrize("name", GRAPHS)
def test_coarsening_and_pooling_match_dense_formulas(name):
    a = GRAPHS[name]
    s, coarse = graphs.coarsen(scipy.sparse.csr_matrix(a))
    s, coarse = s.toarray(), coarse.toarray()
    assert set(np.unique(s)) == {0, 1} and np.all(s.sum(1) == 1), "one cluster per node"
    assert np.all(s.sum(0) >= 1) and np.all(s.sum(0) <= 4), "two matchings: 1 to 4 nodes"
    expected = s.T @ a @ s
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(coarse, expected, rtol=1e-6)
    pool = graphs.cluster_mean(scipy.sparse.csr_matrix(s)).toarray()
    np.testing.assert_allclose(pool, np.diag(1 / s.sum(0)) @ s.T, rtol=1e-6)
    x = RNG.standard_normal((len(a), 3))
    back = s @ pool @ x                                   # unpool(pool(x))
    for c in range(s.shape[1]):
        members = np.flatnonzero(s[:, c])
        np.testing.assert_allclose(back[members], np.tile(x[members].mean(0), (len(members), 1)),
                                   rtol=1e-5)
    np.testing.assert_allclose(pool @ np.full((len(a), 2), 7.0), 7.0, rtol=1e-6)
    again = graphs.coarsen(scipy.sparse.csr_matrix(a))
    np.testing.assert_array_equal(again[0].toarray(), s)  # deterministic: a saved model rebuilds it


@pytest.mark.parametrize("h, w, connectivity", [(8, 8, 4), (10, 12, 8)])
def test_pyramid_laplacians_have_spectra_in_0_2(h, w, connectivity):
    sizes = []
    for level in range(4):
        s, a = graphs.grid_pyramid(h, w, level, connectivity)
        sizes.append(a.shape[0])
        assert s.shape == (sizes[level - 1] if level else h * w, a.shape[0])
        eig = np.linalg.eigvalsh(graphs.normalized_laplacian(a).toarray())
        assert eig.min() > -1e-5 and eig.max() < 2 + 1e-5, "Chebyshev with lmax=2 needs [0, 2]"
        assert np.sum(eig < 1e-5) == 1, "coarsening keeps the graph connected"
    assert sizes[0] > sizes[1] > sizes[2] > sizes[3] >= sizes[0] / 4 ** 3
