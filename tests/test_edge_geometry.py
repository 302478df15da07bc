"""Edge geometry (segm/edge_geometry.py) and SplineConv: against dense numpy, on the grid
against DirectionalGraphConv, the region models batch by batch and saved, graphs cached."""
import numpy as np
import pytest

import model
from segm import edge_geometry, pipeline, region_layers, regions
from segm.graph_ops import to_sparse_tensor
from segm.tf_quiet import keras, tf
from test_regions_model import blocks, randomise

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def hat_weights(u, pseudo, size, radius):
    """B_k(u) for every k, written out independently: products of max(0, 1 - |v - k|)."""
    if pseudo == "distance":
        v = min(np.hypot(*u) / radius, 1.0) * (size - 1)
        return np.array([max(0.0, 1 - abs(v - k)) for k in range(size)])
    vy, vx = ((min(max(c / radius, -1.0), 1.0) + 1) / 2 * (size - 1) for c in u)
    return np.array([max(0.0, 1 - abs(vy - ky)) * max(0.0, 1 - abs(vx - kx))
                     for ky in range(size) for kx in range(size)])


def small_graph(seed, n=7):
    """A random graph with self-loops: (rows, cols, offsets) with a few offsets on knots."""
    rng = np.random.default_rng(seed)
    pairs = {(i, i) for i in range(n)} | {tuple(rng.integers(0, n, 2)) for _ in range(15)}
    rows, cols = (np.array(v) for v in zip(*sorted(pairs)))
    offsets = rng.uniform(-4, 4, (len(rows), 2))
    offsets[rows == cols] = 0
    offsets[:3] = [[3.0, 0.0], [-1.5, 1.5], [9.0, -9.0]]  # a knot, a midpoint, clipped
    return rows, cols, offsets


@pytest.mark.parametrize("pseudo,size,mean,separable", [
    ("offset", 3, True, False), ("offset", 4, False, False), ("distance", 3, True, False),
    ("distance", 5, False, False), ("offset", 3, True, True), ("distance", 4, False, True)])
def test_spline_conv_equals_the_dense_message_sum(pseudo, size, mean, separable):
    rows, cols, offsets = small_graph(seed=size)
    n, c, units = 7, 3, 4
    kernels = edge_geometry.kernel_count(pseudo, size)
    bases = edge_geometry.spline_bases(rows, cols, offsets, n, pseudo, size, 3.0, mean)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c)).astype(np.float32)
    kernel = rng.standard_normal((kernels, c, units)).astype(np.float32)
    if separable:  # W_k = diag(a_k) W
        depthwise, shared = rng.standard_normal((kernels, c)), rng.standard_normal((c, units))
        kernel = (depthwise[:, :, None] * shared[None]).astype(np.float32)
    expected = np.zeros((n, units))
    degree = np.bincount(rows, minlength=n)
    for i, j, u in zip(rows, cols, offsets):
        weight = hat_weights(u, pseudo, size, 3.0) / (degree[i] if mean else 1)
        expected[i] += np.einsum("k,c,kcu->u", weight, x[j], kernel)
    layer = region_layers.SplineConv(units, kernels, use_bias=False, separable=separable)
    layer.build([(None, c), None])
    if separable:
        layer.depthwise.assign(depthwise)
        layer.kernel.assign(shared)
    else:
        layer.kernel.assign(kernel)
    got = layer([tf.constant(x), to_sparse_tensor(bases)]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_bases_sum_to_one_are_one_hot_on_knots_and_distances_ignore_direction():
    rng = np.random.default_rng(2)
    offsets = rng.uniform(-5, 5, (50, 2))
    _, weight = edge_geometry.basis_entries(offsets, "offset", 3, 3.0)
    np.testing.assert_allclose(weight.sum(axis=1), 1.0, atol=1e-12)
    knots = np.array([[dy, dx] for dy in (-2, 0, 2) for dx in (-2, 0, 2)], float)
    index, weight = edge_geometry.basis_entries(knots, "offset", 3, 2.0)
    assert (weight.max(axis=1) == 1.0).all() and (weight.sum(axis=1) == 1.0).all()
    assert list(index[np.arange(9), weight.argmax(axis=1)]) == list(range(9))
    turned = offsets[:, ::-1] * [1, -1]                   # each offset turned a quarter
    for a, b in zip(edge_geometry.basis_entries(offsets, "distance", 4, 3.0),
                    edge_geometry.basis_entries(turned, "distance", 4, 3.0)):
        np.testing.assert_allclose(a, b)


def test_sparse_product_gradient_is_the_transposed_product():
    rows, cols, offsets = small_graph(seed=3)
    bases = edge_geometry.spline_bases(rows, cols, offsets, 7, "offset", 3, 2.0)
    x = tf.constant(np.random.default_rng(4).standard_normal((7, 2)).astype(np.float32))
    upstream = np.random.default_rng(5).standard_normal((7 * 9, 2)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = region_layers.sparse_product(to_sparse_tensor(bases), x)
    dense = bases.toarray()
    np.testing.assert_allclose(y.numpy(), dense @ x.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(y, x, upstream).numpy(), dense.T @ upstream,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h,w", [(6, 5), (4, 4)])
def test_on_the_grid_it_is_directional_graph_conv_so_a_3x3_convolution(h, w):
    rng = np.random.default_rng(h)
    x = rng.standard_normal((1, h, w, 3)).astype(np.float32)
    directional = model.DirectionalGraphConv(4, use_bias=False)
    directional.build(x.shape)
    directional.kernel.assign(rng.standard_normal(directional.kernel.shape))
    # DirectionalGraphConv's kernel[d] is direction directions[d]'s, itself first.
    directions = ((0, 0),) + model.DIRECTIONS[8]
    spline = np.zeros((9, 3, 4), np.float32)
    for d, (dy, dx) in enumerate(directions):
        spline[(dy + 1) * 3 + dx + 1] = directional.kernel.numpy()[d]
    rows, cols, offsets = edge_geometry.grid_edges(h, w)
    bases = edge_geometry.spline_bases(rows, cols, offsets, h * w, "offset", 3, 1.0, mean=False)
    assert bases.nnz == len(rows)  # every edge on exactly one knot
    layer = region_layers.SplineConv(4, 9, use_bias=False)
    layer.build([(None, 3), None])
    layer.kernel.assign(spline)
    got = layer([tf.constant(x.reshape(-1, 3)), to_sparse_tensor(bases)]).numpy()
    np.testing.assert_allclose(got.reshape(1, h, w, 4), directional(x).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_graphs_built_ahead_in_the_pipeline_equal_those_built_in_the_step():
    images = blocks(4, 16, seed=9)
    layer = region_layers.RegionGraph(n_segments=30, pseudo="offset")
    region_layers.CACHE.entries.clear()
    cold = layer.graphs(images)
    before = len(region_layers.CACHE.entries)
    region_layers.CACHE.entries.clear()
    layer.warm(images)
    assert len(region_layers.CACHE.entries) == before == 4
    warm = layer.graphs(images)
    for a, b in zip(cold, warm):
        np.testing.assert_array_equal(a, b)
    # The union's L~ is the L~ of the block-diagonal union, bit for bit (regions' old way).
    plain = region_layers.RegionGraph(n_segments=30)
    _, indices, values, shape = plain.graphs(images)
    union = regions.batch_graphs([(np.zeros((len(np.unique(one)), 1)), regions.region_adjacency(
        regions.superpixels(image, 30))) for image, one in zip(images, cold[0])]).adjacency
    coo = regions.rescaled_laplacian(union).tocoo()
    order = np.lexsort((coo.col, coo.row))
    np.testing.assert_array_equal(indices, np.stack([coo.row[order], coo.col[order]], 1))
    np.testing.assert_array_equal(values, coo.data[order])
    assert list(shape) == list(coo.shape)


def test_bases_and_laplacian_from_one_slic_equal_each_built_alone():
    images = blocks(3, 16, seed=13)
    both = region_layers.RegionGraph(n_segments=30, pseudo="offset", laplacian=True)
    bases = region_layers.RegionGraph(n_segments=30, pseudo="offset").graphs(images)
    plain = region_layers.RegionGraph(n_segments=30).graphs(images)
    got = both.graphs(images)
    assert len(got) == 7 and both.blocks == (9, 1)
    for a, b in zip(got, bases[:1] + bases[1:] + plain[1:]):
        np.testing.assert_array_equal(a, b)
    labels, matrix, rescaled = both(tf.constant(images))
    assert labels.shape == (3, 16, 16) and rescaled.shape[0] * 9 == matrix.shape[0]


def test_the_pipeline_prepares_each_batch():
    seen = []

    class Gen:
        canvas = 8

        def sample(self, batch_size, split, step, rows):
            return np.full((batch_size, 8, 8, 3), step, np.float32), np.zeros((batch_size, 8, 8),
                                                                             np.int32)

    stream = iter(pipeline.make_dataset(Gen(), 2, prepare=lambda x: seen.append(x[0, 0, 0, 0])))
    first, _ = next(stream)
    assert first.numpy()[0, 0, 0, 0] == 0 and 0 in seen


@pytest.mark.parametrize("name", ["regions_offset", "regions_distance"])
def test_a_batch_gives_what_each_image_gives_alone_and_it_saves(name, tmp_path):
    images = blocks(3, 16, seed=5)
    net = model.build_model(name, num_classes=3, height=16, width=16)
    randomise(net, seed=6)
    together = net(images, training=False).numpy()
    alone = np.concatenate([net(images[i:i + 1], training=False).numpy() for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
    net.save(tmp_path / "net.keras")
    again = model.load_model(tmp_path / "net.keras")
    assert again.name == name and again.get_layer(index=1).get_config() == \
        net.get_layer(index=1).get_config()
    np.testing.assert_array_equal(again(images, training=False).numpy(), together)


def test_spline_layers_config_round_trip():
    for layer in (region_layers.SplineConv(5, 9, use_bias=False, separable=True),
                  region_layers.RegionGraph(pseudo="distance", size=4, radius=2.5, knn=2),
                  region_layers.RegionGraph(pseudo="offset", laplacian=True)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="pseudo"):
        region_layers.RegionGraph(pseudo="angle")


def test_a_region_model_trains_a_step_with_graphs_from_the_pipeline():
    net = model.build_model("regions_offset", num_classes=2, height=16, width=16)
    net.compile(keras.optimizers.Adam(1e-3), model.SegmentationLoss(2))
    images = blocks(4, 16, seed=11)
    masks = (images[..., 0] > 0).astype(np.int32)
    model.graph_builder(net)(images)
    before = [w.numpy().copy() for w in net.trainable_weights]
    loss = net.train_on_batch(images, masks)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, net.trainable_weights))
    assert model.graph_builder(model.build_model("unet", 2, 16, 16)) is None


@pytest.mark.parametrize("heads", [1, 3])
def test_region_context_is_each_images_softmax_readout(heads):
    rng = np.random.default_rng(12)
    labels = regions.stacked(np.stack([rng.integers(0, 3, (4, 4)) for _ in range(2)]))
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)  # nodes 0..N-1
    n = labels.max() + 1
    x = rng.standard_normal((n, 3)).astype(np.float32)
    layer = region_layers.RegionContext(heads)
    layer.build([(None, 3), None])
    score, kernel = rng.standard_normal((3, heads)), rng.standard_normal((heads * 3, 3))
    layer.score.assign(score)
    layer.kernel.assign(kernel)
    expected = np.zeros((n, 3))
    for b in range(2):
        nodes = np.unique(labels[b])
        readouts = []
        for h in range(heads):                                    # each head's weighted mean
            w = np.exp(x[nodes] @ score[:, h])
            readouts.append((w / w.sum()) @ x[nodes])
        expected[nodes] = np.concatenate(readouts) @ kernel
    got = layer([tf.constant(x), tf.constant(labels.astype(np.int32))]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert type(layer).from_config(layer.get_config()).heads == heads
