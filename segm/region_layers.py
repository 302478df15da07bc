"""Graph layers on SLIC region graphs, for the region models (model.regions and its kin).

The nodes are superpixels (regions.py), a different graph for every image, so the
graph is the block-diagonal union of the batch's graphs (N nodes in all). Each image's
graph is built in numpy once, by the input pipeline ahead of its step (GraphCache), or
by the model itself for images it has not seen (scoring, prediction):

    RegionGraph       images -> each pixel's node (B, H, W), and L~ (N, N), the spline
                      bases (N*K, N) of edge_geometry.py, or both, sparse; numpy
    RegionFeatures    regions.region_features of every node, in TensorFlow: (N, 9 or 14)
    RegionChebConv    ChebConv with the batch's L~: (N, C) -> (N, units)
    SplineConv        messages weighted by each edge's geometry: (N, C) -> (N, units)
    PaintRegions      each pixel takes its node's values: (N, K) -> (B, H, W, K)

The loss is the pixels' (model.SegmentationLoss on the painted logits), so a region
counts as often as it has pixels. Its cross-entropy is then its pixel count times that
against its pixels' class shares, least where its softmax equals those shares, whose
argmax is the region's majority class: the label regions.ceiling_confusion paints
with. So the pixel loss trains towards the majority labels (weighting big regions
more, and keeping a mixed region's doubt where a one-hot majority target would drop
it); the Dice term pushes the same way, though not exactly. Scored on pixels, the
model compares with the ceiling and with every other model.
"""
import collections
import hashlib
import threading

import numpy as np

from segm import edge_geometry, regions as region_graphs
from segm.graph_ops import chebyshev
from segm.tf_quiet import keras, tf


class GraphCache:
    """A bounded, thread-safe memo of each image's graph, keyed by its bytes and settings.

    The input pipeline fills it (RegionGraph.warm, on tf.data's threads) while the
    previous step trains, and the step then only joins the batch's graphs. The same
    function computes an entry either way, so warm and cold give the same graphs.
    """

    def __init__(self, capacity=2048):  # ~60 KB per image, bases and L~: ~120 MB when full
        self.capacity, self.lock = capacity, threading.Lock()
        self.entries = collections.OrderedDict()

    def get(self, key, compute):
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        value = compute()  # outside the lock: the pipeline's threads build graphs in parallel
        with self.lock:
            self.entries[key] = value
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
        return value


CACHE = GraphCache()


def _entries(matrix):
    """A scipy matrix's (rows, cols, float32 values), sorted as a tf.SparseTensor wants."""
    coo = matrix.tocoo()
    order = np.lexsort((coo.col, coo.row))
    return (coo.row[order].astype(np.int32), coo.col[order].astype(np.int32),  # half the cache
            coo.data[order].astype(np.float32))


@keras.saving.register_keras_serializable(package="segm")
class RegionGraph(keras.layers.Layer):
    """SLIC region graphs of a batch (regions.py): (B, H, W, 3) images -> (labels (B, H, W),
    M sparse), N the batch's regions, as one block-diagonal graph (the disjoint union).

    labels are regions.stacked: each pixel's node, numbered across the batch. M is a
    tf.SparseTensor: with pseudo=None L~ = L - I (N, N) (lmax = 2), for RegionChebConv;
    with pseudo "offset" or "distance" the (N*K, N) spline bases of edge_geometry.py on
    the offsets between region centroids (in pixels, over `radius`), for SplineConv; with
    a pseudo and laplacian, both: (labels, bases, L~) from one SLIC. SLIC is numpy
    (tf.numpy_function), not differentiable and not XLA-compilable; the pixel values flow
    on through RegionFeatures.
    """

    def __init__(self, n_segments=region_graphs.N_SEGMENTS,
                 compactness=region_graphs.COMPACTNESS,
                 min_size_factor=region_graphs.MIN_SIZE_FACTOR, knn=0, pseudo=None, size=3,
                 radius=3.0, laplacian=False, **kwargs):
        super().__init__(**kwargs)
        self.n_segments, self.compactness = int(n_segments), float(compactness)
        self.min_size_factor, self.knn = float(min_size_factor), int(knn)
        self.pseudo, self.size, self.radius = pseudo, int(size), float(radius)
        self.laplacian = pseudo is None or bool(laplacian)
        if pseudo is not None:
            edge_geometry.check_kernel(pseudo, self.size, self.radius)
        self.kernels = 1 if pseudo is None else edge_geometry.kernel_count(pseudo, self.size)
        # each matrix's kernels: its rows are node * kernels + kernel
        self.blocks = (self.kernels,) * (pseudo is not None) + (1,) * self.laplacian
        self.supports_jit = False

    def graph(self, image):
        """One image's (labels (H, W) int32, nodes R, and each matrix's rows, cols and
        float32 values: the bases, then L~)."""
        labels = region_graphs.superpixels(image, self.n_segments, self.compactness,
                                           self.min_size_factor)
        adjacency = region_graphs.region_adjacency(labels, self.knn)
        n = adjacency.shape[0]
        matrices = []
        if self.pseudo is not None:
            h, w = labels.shape
            centroids = region_graphs.region_means(
                labels, region_graphs.pixel_coordinates(h, w) * (h, w))       # pixels
            matrices.append(edge_geometry.spline_bases(
                *edge_geometry.region_edges(adjacency, centroids), n, self.pseudo, self.size,
                self.radius))
        if self.laplacian:
            matrices.append(region_graphs.rescaled_laplacian(adjacency))
        return labels, n, [_entries(matrix) for matrix in matrices]

    def cached_graph(self, image):
        image = np.ascontiguousarray(image)
        key = (self.n_segments, self.compactness, self.min_size_factor, self.knn, self.pseudo,
               self.size, self.radius, self.laplacian, image.shape, image.dtype.str,
               hashlib.blake2b(image.tobytes(), digest_size=16).digest())
        return CACHE.get(key, lambda: self.graph(image))

    def warm(self, images):
        """Build and cache the graphs of a batch ahead of its step (the input pipeline)."""
        for image in images:
            self.cached_graph(image)

    def graphs(self, images):
        """The numpy half: stacked labels, then each matrix's (E, 2) indices, (E,) values
        and shape."""
        parts = [self.cached_graph(image) for image in images]
        sizes = np.array([part[1] for part in parts], np.int64)
        n, offsets = int(sizes.sum()), np.cumsum(sizes) - sizes
        out = [region_graphs.stacked(np.stack([part[0] for part in parts])).astype(np.int32)]
        for m, kernels in enumerate(self.blocks):
            entries = [part[2][m] for part in parts]
            # Each image's block of rows moves down by its node offset times kernels, its
            # columns by its node offset; the blocks stay in order.
            rows = np.concatenate([e[0] + offset * kernels  # offsets are int64
                                   for e, offset in zip(entries, offsets)])
            cols = np.concatenate([e[1] + offset for e, offset in zip(entries, offsets)])
            out += [np.stack([rows, cols], axis=1), np.concatenate([e[2] for e in entries]),
                    np.array([n * kernels, n], np.int64)]
        return tuple(out)

    def call(self, images):
        out = tf.numpy_function(self.graphs, [images],
                                (tf.int32,) + (tf.int64, tf.float32, tf.int64) * len(self.blocks),
                                stateful=False)
        matrices = [tf.SparseTensor(tf.ensure_shape(indices, (None, 2)),          # (E, 2)
                                    tf.ensure_shape(values, (None,)),             # (E,)
                                    tf.ensure_shape(shape, (2,)))
                    for indices, values, shape in zip(*[iter(out[1:])] * 3)]
        return tf.ensure_shape(out[0], images.shape[:3]), *matrices               # (B, H, W)

    def get_config(self):
        return {**super().get_config(), "n_segments": self.n_segments,
                "compactness": self.compactness, "min_size_factor": self.min_size_factor,
                "knn": self.knn, "pseudo": self.pseudo, "size": self.size,
                "radius": self.radius, "laplacian": self.laplacian}


@keras.saving.register_keras_serializable(package="segm")
class RegionFeatures(keras.layers.Layer):
    """regions.region_features in TensorFlow: [images (B, H, W, C), labels (B, H, W)] ->
    (N, 2C + 3) mean colour, colour std, centroid (y, x) in (0, 1), share of the image;
    with shape, then (N, 5) more: regions.SHAPE_FEATURES."""

    def __init__(self, shape=False, **kwargs):
        super().__init__(**kwargs)
        self.shape = bool(shape)

    def call(self, inputs):
        images, labels = inputs
        shape = tf.shape(images)
        flat = tf.reshape(labels, (-1,))                                      # (B*H*W,)
        n = tf.reduce_max(flat) + 1

        def means(values):                                                    # (B*H*W, k)
            return tf.math.unsorted_segment_mean(values, flat, n)             # (N, k)

        colours = tf.reshape(images, (-1, images.shape[-1]))                  # (B*H*W, C)
        mean = means(colours)
        variance = means((colours - tf.gather(mean, flat)) ** 2)
        # sqrt's gradient at 0 (a one-pixel region) is infinite: take it only where positive
        spread = tf.where(variance > 0, tf.sqrt(tf.where(variance > 0, variance, 1.0)), 0.0)
        h, w = tf.cast(shape[1], images.dtype), tf.cast(shape[2], images.dtype)
        ys = (tf.range(h) + 0.5) / h
        xs = (tf.range(w) + 0.5) / w
        grid = tf.stack(tf.meshgrid(ys, xs, indexing="ij"), axis=-1)          # (H, W, 2)
        grid = tf.reshape(tf.broadcast_to(grid, (shape[0], shape[1], shape[2], 2)), (-1, 2))
        centroid = means(grid)
        size = tf.math.unsorted_segment_sum(tf.ones_like(flat, images.dtype), flat, n) / (h * w)
        columns = [mean, spread, centroid, size[:, None]]
        if self.shape:
            d = (grid - tf.gather(centroid, flat)) * tf.stack([h, w])         # pixels
            brightness = tf.reduce_mean(colours, axis=1, keepdims=True)
            brightness -= tf.gather(means(brightness), flat)
            columns += [means(tf.stack([d[:, 0] ** 2, d[:, 0] * d[:, 1], d[:, 1] ** 2], 1)),
                        means(brightness * d)]
        return tf.concat(columns, axis=1)

    def compute_output_shape(self, input_shape):
        return (None, 2 * input_shape[0][-1] + 3 + 5 * self.shape)

    def get_config(self):
        return {**super().get_config(), "shape": self.shape}


def sparse_product(matrix, x, symmetric=False):
    """matrix @ x for an (M, N) tf.SparseTensor and x (N, C); matrix is a constant, so no
    gradient goes to its values.

    As graph_ops.sparse_matmul, TensorFlow's CSR product (~5x faster here than
    tf.sparse.sparse_dense_matmul, 15k regions, 64 channels), which has no gradient. The
    gradient is the transposed product: for a symmetric matrix the same one; otherwise
    the transpose as a CSR matrix of its own, ~8x faster here on this path than
    SparseMatrixMatMul's transpose_a.
    """
    @tf.custom_gradient
    def product(x):
        csr = tf.raw_ops.SparseTensorToCSRSparseMatrix(
            indices=matrix.indices, values=matrix.values, dense_shape=matrix.dense_shape)

        def gradient(upstream):
            transpose = csr if symmetric else tf.raw_ops.SparseMatrixTranspose(
                input=csr, type=tf.float32)
            return tf.raw_ops.SparseMatrixMatMul(a=transpose, b=upstream)
        return tf.raw_ops.SparseMatrixMatMul(a=csr, b=x), gradient
    return product(x)


def symmetric_matmul(matrix, x):
    """matrix @ x for a symmetric (N, N) tf.SparseTensor: sparse_product's cheaper gradient."""
    return sparse_product(matrix, x, symmetric=True)


@keras.saving.register_keras_serializable(package="segm")
class RegionChebConv(keras.layers.Layer):
    """Y = sum_{k<K} T_k(L~) X W_k + b on nodes: [X (N, C), L~ (N, N) sparse] -> (N, units).

    ChebConv's recurrence (graph_ops.chebyshev) with L~ given per batch, not baked in.
    """

    def __init__(self, units, K, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        if int(K) < 1:
            raise ValueError(f"K (the Chebyshev order) must be an integer >= 1, got {K!r}.")
        self.units, self.K, self.use_bias = int(units), int(K), bool(use_bias)

    def build(self, input_shape):
        c = input_shape[0][-1]
        self.kernel = self.add_weight((self.K, c, self.units), "glorot_uniform", name="kernel")
        self.bias = self.add_weight((self.units,), "zeros", name="bias") if self.use_bias else None

    def call(self, inputs):
        x, rescaled = inputs
        y = chebyshev(x, lambda t: symmetric_matmul(rescaled, t), self.kernel)
        return y + self.bias if self.use_bias else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "K": self.K,
                "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="segm")
class SplineConv(keras.layers.Layer):
    """Y_i = sum_j sum_k B_k(u_ij) X_j W_k + b, W(u) = sum_k B_k(u) W_k a learned function of
    each edge's geometry u_ij (SplineCNN; edge_geometry.py): [X (N, C), B (N*K, N) sparse]
    -> (N, units), B the bases RegionGraph(pseudo=...) or edge_geometry.spline_bases give.

    With the grid's 3x3 bases (edge_geometry.grid_edges, size 3, radius 1, no mean) it
    is DirectionalGraphConv: kernel k = (dy + 1) * 3 + dx + 1 is direction (dy, dx)'s.
    separable: W_k = diag(a_k) W, a per-channel weight a_k (C,) per kernel and one W
    (C, units), as a depthwise 3x3 convolution followed by a 1x1 one is on the grid:
    K*C + C*units weights instead of K*C*units. Not faster here: its product and sum over
    the N*K*C shares cost what the matmul it saves did (20 ms either way, forward and
    backward, 15k nodes of 64 channels, timed side by side; its matmuls take 13.6 ms).
    """

    def __init__(self, units, kernels, use_bias=True, separable=False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.kernels, self.use_bias = int(units), int(kernels), bool(use_bias)
        self.separable = bool(separable)

    def build(self, input_shape):
        c = input_shape[0][-1]
        if self.separable:
            self.depthwise = self.add_weight((self.kernels, c), "glorot_uniform",
                                             name="depthwise")
            self.kernel = self.add_weight((c, self.units), "glorot_uniform", name="kernel")
        else:
            self.kernel = self.add_weight((self.kernels, c, self.units), "glorot_uniform",
                                          name="kernel")
        self.bias = self.add_weight((self.units,), "zeros", name="bias") if self.use_bias else None

    def call(self, inputs):
        x, bases = inputs
        k, c = self.kernels, x.shape[-1]
        shares = tf.reshape(sparse_product(bases, x), (-1, k, c))            # (N, K, C)
        if self.separable:
            y = tf.reduce_sum(shares * self.depthwise, axis=1) @ self.kernel  # (N, units)
        else:
            y = tf.reshape(shares, (-1, k * c)) @ tf.reshape(self.kernel, (k * c, self.units))
        return y + self.bias if self.use_bias else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "kernels": self.kernels,
                "use_bias": self.use_bias, "separable": self.separable}


@keras.saving.register_keras_serializable(package="segm")
class RegionContext(keras.layers.Layer):
    """Each image's attention readouts, sent back to its nodes: [X (N, C), labels (B, H, W)]
    -> (N, C). Head h reads g_bh = sum_i softmax_b(X_i a_h) X_i over image b's nodes; the
    heads' readouts side by side, [g_b1 .. g_bH] W, go to each of b's nodes.

    The global block of a graph network (Battaglia et al. 2018), ParseNet's image-level
    context on a graph: a region far from the rest of its digit learns what the digit is.
    With several heads (multi-head attention pooling, as the Set Transformer's PMA, Lee et
    al. 2019), each can attend to another part of the digit, so the readout keeps more of
    its shape than one weighted mean can.
    """

    def __init__(self, heads=1, **kwargs):
        super().__init__(**kwargs)
        if int(heads) < 1:
            raise ValueError(f"heads must be an integer >= 1, got {heads!r}.")
        self.heads = int(heads)

    def build(self, input_shape):
        c = input_shape[0][-1]
        self.score = self.add_weight((c, self.heads), "glorot_uniform", name="score")
        self.kernel = self.add_weight((self.heads * c, c), "glorot_uniform", name="kernel")

    def call(self, inputs):
        x, labels = inputs
        n, b = tf.shape(x)[0], tf.shape(labels)[0]
        pixels_image = tf.broadcast_to(tf.range(b)[:, None, None], tf.shape(labels))
        image = tf.math.unsorted_segment_max(tf.reshape(pixels_image, (-1,)),
                                             tf.reshape(labels, (-1,)), n)     # (N,)
        # Nodes are numbered image by image (regions.stacked), so `image` is sorted and
        # the sorted segment ops apply: twice as fast here as the unsorted ones.
        score = x @ self.score                                                # (N, heads)
        score -= tf.gather(tf.math.segment_max(score, image), image)          # stable
        weight = tf.exp(score)
        weight /= tf.gather(tf.math.segment_sum(weight, image), image)
        readout = tf.concat([tf.math.segment_sum(weight[:, h:h + 1] * x, image)   # (B, C)
                             for h in range(self.heads)], axis=1)             # (B, heads*C)
        return tf.gather(readout @ self.kernel, image)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "heads": self.heads}


@keras.saving.register_keras_serializable(package="segm")
class PaintRegions(keras.layers.Layer):
    """Each pixel takes its node's values: [nodes (N, K), labels (B, H, W)] -> (B, H, W, K)."""

    def call(self, inputs):
        nodes, labels = inputs
        return tf.gather(nodes, labels)

    def compute_output_shape(self, input_shape):
        return (*input_shape[1], input_shape[0][-1])
