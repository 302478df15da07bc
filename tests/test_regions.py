"""regions.py: superpixel region graphs against loops over pixels and dense numpy."""
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from segm import graphs
from segm import regions

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)

# Regions 0 and 3, and 1 and 2, meet only at a corner: not neighbours in the 4-neighbourhood.
CORNERS = np.array([[0, 0, 1, 1],
                    [0, 0, 1, 1],
                    [2, 2, 3, 3],
                    [2, 4, 4, 3]])
CORNER_EDGES = {(0, 1), (0, 2), (1, 3), (2, 3), (2, 4), (3, 4)}


def random_labels(h, w, n, seed):
    """(h, w) labels 0..R-1, R <= n, every number used; regions need not be connected."""
    drawn = np.random.default_rng(seed).integers(n, size=(h, w))
    return np.unique(drawn, return_inverse=True)[1].reshape(h, w)


def brute_adjacency(labels):
    """Touching regions from their definition: every pixel and its 4 neighbours, one by one."""
    h, w = labels.shape
    n = labels.max() + 1
    a = np.zeros((n, n))
    for y in range(h):
        for x in range(w):
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= y + dy < h and 0 <= x + dx < w and labels[y, x] != labels[y + dy, x + dx]:
                    a[labels[y, x], labels[y + dy, x + dx]] = 1
    return a


def brute_centroids(labels):
    """(R, 2) mean (y + 1/2) / H and (x + 1/2) / W of each region's pixels, region by region."""
    h, w = labels.shape
    return np.array([[(np.mean(ys) + 0.5) / h, (np.mean(xs) + 0.5) / w]
                     for ys, xs in (np.nonzero(labels == r) for r in range(labels.max() + 1))])


def dense_laplacian(a):
    """I - D^-1/2 A D^-1/2 in dense numpy, an isolated node's row left as I's."""
    d = a.sum(1)
    s = np.diag([x ** -0.5 if x > 0 else 0.0 for x in d])
    return np.eye(len(a)) - s @ a @ s


# ------------------------------------------------------------------ graph

def test_adjacency_of_hand_labelled_image():
    a = regions.region_adjacency(CORNERS)
    assert isinstance(a, scipy.sparse.csr_matrix) and a.dtype == np.float32
    expected = np.zeros((5, 5))
    for i, j in CORNER_EDGES:
        expected[i, j] = expected[j, i] = 1
    np.testing.assert_array_equal(a.toarray(), expected)
    np.testing.assert_array_equal(a.toarray(), brute_adjacency(CORNERS))


@pytest.mark.parametrize("seed", range(3))
def test_adjacency_matches_brute_force_count(seed):
    labels = random_labels(7, 9, 12, seed)
    a = regions.region_adjacency(labels).toarray()
    np.testing.assert_array_equal(a, brute_adjacency(labels))
    assert set(np.unique(a)) <= {0.0, 1.0} and not a.diagonal().any()


def test_knn_adds_each_regions_nearest_centroids():
    labels, k = random_labels(9, 11, 10, 3), 3
    centroids = brute_centroids(labels)
    expected = brute_adjacency(labels)
    for i, c in enumerate(centroids):
        distance = np.linalg.norm(centroids - c, axis=1)
        order = np.argsort(distance)
        assert order[0] == i and distance[order[k]] < distance[order[k + 1]], "no ties"
        for j in order[1:k + 1]:
            expected[i, j] = expected[j, i] = 1
    a = regions.region_adjacency(labels, knn=k).toarray()
    np.testing.assert_array_equal(a, expected)
    assert (a != brute_adjacency(labels)).any(), "the k nearest add edges here"
    # a ring's centroid is the centroid of the region inside it: neither is its own neighbour
    ring = np.array([[0, 0, 0, 2],
                     [0, 1, 0, 3],
                     [0, 0, 0, 3]])
    a = regions.region_adjacency(ring, knn=1).toarray()
    assert not a.diagonal().any() and a[0, 1] == a[1, 0] == 1
    # more neighbours than there are regions: every pair
    np.testing.assert_array_equal(regions.region_adjacency(CORNERS, knn=10).toarray(),
                                  1 - np.eye(5))


def test_laplacians_match_dense_formulas_and_spectrum():
    for labels in (CORNERS, random_labels(8, 8, 15, 4), np.zeros((3, 3), int)):
        a = regions.region_adjacency(labels)
        dense, eye = a.toarray(), np.eye(a.shape[0])
        lap = graphs.normalized_laplacian(a).toarray()
        np.testing.assert_allclose(lap, dense_laplacian(dense), atol=1e-6)
        eig = np.linalg.eigvalsh(lap)
        assert eig.min() > -1e-5 and eig.max() < 2 + 1e-5
        np.testing.assert_allclose(regions.rescaled_laplacian(a).toarray(), lap - eye, atol=1e-6)
        np.testing.assert_allclose(regions.gcn_propagation(a).toarray(),
                                   eye - dense_laplacian(dense + eye), atol=1e-6)
    assert lap.tolist() == [[1.0]], "one region alone: no edge, no NaN"


# ------------------------------------------------------------------ features

def test_features_match_a_loop_over_regions():
    h, w = 6, 8
    labels, image = random_labels(h, w, 7, 5), RNG.uniform(size=(h, w, 3))
    features = regions.region_features(image, labels)
    assert features.shape == (labels.max() + 1, len(regions.FEATURES))
    assert features.dtype == np.float32
    centroids = brute_centroids(labels)
    for r in range(labels.max() + 1):
        pixels = image[labels == r]                                   # (n_r, 3)
        expected = [*pixels.mean(0), *pixels.std(0), *centroids[r], len(pixels) / (h * w)]
        np.testing.assert_allclose(features[r], expected, rtol=1e-5, atol=1e-6)
    assert np.isclose(features[:, -1].sum(), 1)
    # the same means as gunet's pooling matrix would give
    pooling = graphs.cluster_mean(graphs.assignment(labels.ravel()))
    np.testing.assert_allclose(regions.region_means(labels, image.reshape(-1, 3)),
                               pooling @ image.reshape(-1, 3), rtol=1e-5)


def test_shape_features_match_a_loop_over_regions():
    h, w = 6, 8
    labels, image = random_labels(h, w, 7, 6), RNG.uniform(size=(h, w, 3))
    features = regions.region_features(image, labels, shape=True)
    columns = len(regions.FEATURES) + len(regions.SHAPE_FEATURES)
    assert features.shape == (labels.max() + 1, columns)
    np.testing.assert_array_equal(features[:, :len(regions.FEATURES)],
                                  regions.region_features(image, labels))
    for r in range(labels.max() + 1):
        ys, xs = np.nonzero(labels == r)
        dy, dx = ys - ys.mean(), xs - xs.mean()                       # pixels from the centroid
        bright = image[ys, xs].mean(axis=1)
        bright = bright - bright.mean()
        expected = [np.mean(dy * dy), np.mean(dy * dx), np.mean(dx * dx),
                    np.mean(bright * dy), np.mean(bright * dx)]
        np.testing.assert_allclose(features[r, len(regions.FEATURES):], expected, atol=1e-5)


def test_shape_features_by_hand():
    # a 2x2 region lit at its bottom right, and a 1x3 bar along x, dark
    labels = np.array([[0, 0, 1, 1, 1], [0, 0, 2, 2, 2]])
    image = np.zeros((2, 5, 3))
    image[1, 1] = 1.0
    shape = regions.region_features(image, labels, shape=True)[:, len(regions.FEATURES):]
    # brightness 1 - 1/4 at offset (1/2, 1/2), -1/4 at the other three: mean (1/8, 1/8)
    np.testing.assert_allclose(shape[0], [0.25, 0, 0.25, 0.125, 0.125], atol=1e-7)
    np.testing.assert_allclose(shape[1], [0, 0, 2 / 3, 0, 0], atol=1e-7)


def test_centroid_of_whole_image_is_its_centre():
    features = regions.region_features(np.ones((5, 4, 3)), np.zeros((5, 4), int))
    np.testing.assert_allclose(features[0], [1, 1, 1, 0, 0, 0, 0.5, 0.5, 1], atol=1e-6)


# ------------------------------------------------------------------ labels and pixels

def test_majority_labels_and_paint_on_hand_made_segmentation():
    labels = np.array([[0, 0, 1, 3],
                       [0, 2, 1, 3],
                       [2, 2, 1, 4]])
    mask = np.array([[1, 0, 0, 1],
                     [1, 1, 0, 0],
                     [0, 1, 1, 0]])
    # 0: two of three digit; 1: one of three; 2: two of three; 3: a tie, to background; 4: one 0
    np.testing.assert_array_equal(regions.majority_labels(labels, mask, 2), [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(regions.paint(labels, [1, 0, 1, 0, 0]),
                                  [[1, 1, 0, 0],
                                   [1, 1, 0, 0],
                                   [1, 1, 0, 0]])


def test_majority_of_many_classes_ties_to_lowest_and_paints_vectors():
    labels = np.array([[0, 0, 0, 0, 1, 1]])
    mask = np.array([[3, 2, 3, 2, 5, 0]])       # region 0: 2 and 3 tie; region 1: 0 and 5 tie
    np.testing.assert_array_equal(regions.majority_labels(labels, mask, 11), [2, 0])
    values = np.array([[0.5, 1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(regions.paint(labels, values), values[[[0, 0, 0, 0, 1, 1]]])


def brute_majority(labels, mask):
    """Each region's class with the most pixels, lowest class on a tie, region by region."""
    out = []
    for r in range(labels.max() + 1):
        counts = Counter(mask[labels == r].tolist())
        out.append(min(counts, key=lambda k: (-counts[k], k)))
    return np.array(out)


def test_ceiling_confusion_matches_image_by_image_count():
    labels = np.stack([random_labels(6, 7, n, s) for s, n in enumerate((4, 9, 5))])
    masks = RNG.integers(3, size=labels.shape)
    confusion = np.zeros((3, 3), int)
    for lab, mask in zip(labels, masks):
        painted = brute_majority(lab, mask)[lab]
        for t, p in zip(mask.ravel(), painted.ravel()):
            confusion[t, p] += 1
    np.testing.assert_array_equal(regions.ceiling_confusion(labels, masks, 3), confusion)
    assert np.trace(confusion) < confusion.sum(), "mixed regions lose pixels"


# ------------------------------------------------------------------ batches

def test_batch_is_each_graph_alone():
    labels = [random_labels(5, 6, n, s) for s, n in enumerate((6, 1, 9, 4))]
    parts = [(RNG.standard_normal((lab.max() + 1, 3)).astype(np.float32),
              regions.region_adjacency(lab)) for lab in labels]
    batch = regions.batch_graphs(parts)
    sizes = [len(f) for f, _ in parts]
    assert sizes[1] == 1, "a graph of one region is part of the batch"
    np.testing.assert_array_equal(batch.graph_index, np.repeat(np.arange(4), sizes))
    np.testing.assert_array_equal(batch.offsets, [0, *np.cumsum(sizes)])
    np.testing.assert_array_equal(batch.features, np.concatenate([f for f, _ in parts]))
    # L @ X (and Â X, L~ X) of the batch = each graph's own: no edge joins two graphs
    for operator in (graphs.normalized_laplacian, regions.gcn_propagation,
                     regions.rescaled_laplacian):
        alone = np.concatenate([operator(a) @ f for f, a in parts])
        np.testing.assert_allclose(operator(batch.adjacency) @ batch.features, alone, atol=1e-6)
    a = batch.adjacency.toarray()
    for b, (_, own) in enumerate(parts):
        rows = slice(batch.offsets[b], batch.offsets[b + 1])
        np.testing.assert_array_equal(a[rows, rows], own.toarray())
        assert a[rows].sum() == own.sum()
    # the batch's pixels name its stacked nodes: targets and paint-back in one call
    nodes = regions.stacked(np.stack(labels))
    masks = RNG.integers(2, size=nodes.shape)
    targets = regions.majority_labels(nodes, masks, 2)
    np.testing.assert_array_equal(
        targets, np.concatenate([brute_majority(lab, m) for lab, m in zip(labels, masks)]))
    np.testing.assert_array_equal(regions.paint(nodes, batch.graph_index),
                                  np.arange(4)[:, None, None] * np.ones_like(nodes))


# ------------------------------------------------------------------ superpixels

def stroke_image(seed):
    """32x32 textured background with bright strokes (+200 clipped, as the data), some of
    them one pixel wide: scikit-image's default min_size_factor=0.5 merges those away."""
    rng = np.random.default_rng(seed)
    background = rng.uniform(0, 180, (8, 8, 3)).repeat(4, 0).repeat(4, 1)
    mask = np.zeros((32, 32), int)
    mask[8:24, 14:16] = 1
    mask[8:10, 10:20] = 1
    mask[12 + np.arange(12), 18 + np.arange(12) // 2] = 1
    mask[20, 4:12] = 1
    return np.minimum(background + 200 * mask[..., None], 255) / 255, mask


def test_superpixels_are_contiguous_cover_the_image_and_follow_a_stroke():
    image, mask = stroke_image(1)
    labels = regions.superpixels(image)
    assert labels.shape == mask.shape and labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))
    assert 30 < labels.max() + 1 < 32 * 32 // 2
    # SLIC stretches each image to [0, 1] first: the models' [-1, 1] inputs give the same.
    np.testing.assert_array_equal(regions.superpixels(2 * image - 1), labels)
    painted = regions.paint(labels, regions.majority_labels(labels, mask, 2))
    np.testing.assert_array_equal(painted, mask)
    coarse = regions.superpixels(image, min_size_factor=0.5)
    assert (regions.paint(coarse, regions.majority_labels(coarse, mask, 2)) != mask).any()
    labels, features, adjacency = regions.region_graph(image, knn=4)
    assert features.shape[0] == adjacency.shape[0] == labels.max() + 1


def test_import_leaves_tensorflow_out():
    code = "import sys; from segm import regions; assert 'tensorflow' not in sys.modules, 'tensorflow loaded'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
