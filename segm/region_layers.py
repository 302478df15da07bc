"""Graph layers on SLIC region graphs, for the `regions` model (model.regions).

The nodes are superpixels (regions.py), a different graph for every image, so the
graph is built inside the model, batch by batch, as the block-diagonal union of the
batch's graphs (N nodes in all):

    RegionGraph       images -> each pixel's node (B, H, W), L~ (N, N) sparse; numpy
    RegionFeatures    regions.region_features of every node, in TensorFlow: (N, 9)
    RegionChebConv    ChebConv with the batch's L~: (N, C) -> (N, units)
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
import numpy as np
import scipy.sparse as sp

from segm import regions as region_graphs
from segm.graph_ops import chebyshev
from segm.tf_quiet import keras, tf


@keras.saving.register_keras_serializable(package="segm")
class RegionGraph(keras.layers.Layer):
    """SLIC region graphs of a batch (regions.py): (B, H, W, 3) images -> (labels (B, H, W),
    L~ (N, N)), N the batch's regions, as one block-diagonal graph (the disjoint union).

    labels are regions.stacked: each pixel's node, numbered across the batch. L~ = L - I
    (lmax = 2) is a tf.SparseTensor. SLIC is numpy (tf.numpy_function), not differentiable
    and not XLA-compilable; the pixel values flow on through RegionFeatures.
    """

    def __init__(self, n_segments=region_graphs.N_SEGMENTS,
                 compactness=region_graphs.COMPACTNESS,
                 min_size_factor=region_graphs.MIN_SIZE_FACTOR, knn=0, **kwargs):
        super().__init__(**kwargs)
        self.n_segments, self.compactness = int(n_segments), float(compactness)
        self.min_size_factor, self.knn = float(min_size_factor), int(knn)
        self.supports_jit = False

    def graphs(self, images):
        """The numpy half: (stacked labels, L~'s (E, 2) indices and (E,) values, N)."""
        labels = np.stack([region_graphs.superpixels(
            image, self.n_segments, self.compactness, self.min_size_factor) for image in images])
        # Normalisation is per node, so the union's L~ is the block diagonal of each one's.
        adjacency = sp.block_diag([region_graphs.region_adjacency(one, self.knn)
                                   for one in labels], format="csr", dtype=np.float32)
        coo = region_graphs.rescaled_laplacian(adjacency).tocoo()
        order = np.lexsort((coo.col, coo.row))  # the order a tf.SparseTensor wants
        return (region_graphs.stacked(labels).astype(np.int32),
                np.stack([coo.row[order], coo.col[order]], axis=1).astype(np.int64),
                coo.data[order].astype(np.float32), np.int64(adjacency.shape[0]))

    def call(self, images):
        labels, indices, values, n = tf.numpy_function(
            self.graphs, [images], (tf.int32, tf.int64, tf.float32, tf.int64), stateful=False)
        labels = tf.ensure_shape(labels, images.shape[:3])                    # (B, H, W)
        indices = tf.ensure_shape(indices, (None, 2))                         # (E, 2)
        values = tf.ensure_shape(values, (None,))                             # (E,)
        return labels, tf.SparseTensor(indices, values, tf.stack([n, n]))     # (N, N)

    def get_config(self):
        return {**super().get_config(), "n_segments": self.n_segments,
                "compactness": self.compactness, "min_size_factor": self.min_size_factor,
                "knn": self.knn}


@keras.saving.register_keras_serializable(package="segm")
class RegionFeatures(keras.layers.Layer):
    """regions.region_features in TensorFlow: [images (B, H, W, C), labels (B, H, W)] ->
    (N, 2C + 3) mean colour, colour std, centroid (y, x) in (0, 1), share of the image."""

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
        size = tf.math.unsorted_segment_sum(tf.ones_like(flat, images.dtype), flat, n) / (h * w)
        return tf.concat([mean, spread, means(grid), size[:, None]], axis=1)

    def compute_output_shape(self, input_shape):
        return (None, 2 * input_shape[0][-1] + 3)


def symmetric_matmul(matrix, x):
    """matrix @ x for a symmetric (N, N) tf.SparseTensor and x (N, C).

    As graph_ops.sparse_matmul, TensorFlow's CSR product (~5x faster here than
    tf.sparse.sparse_dense_matmul, 15k regions, 64 channels), which has no gradient; the
    matrix is symmetric, so the gradient is the same product.
    """
    @tf.custom_gradient
    def product(x):
        csr = tf.raw_ops.SparseTensorToCSRSparseMatrix(
            indices=matrix.indices, values=matrix.values, dense_shape=matrix.dense_shape)
        return (tf.raw_ops.SparseMatrixMatMul(a=csr, b=x),
                lambda upstream: tf.raw_ops.SparseMatrixMatMul(a=csr, b=upstream))
    return product(x)


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
class PaintRegions(keras.layers.Layer):
    """Each pixel takes its node's values: [nodes (N, K), labels (B, H, W)] -> (B, H, W, K)."""

    def call(self, inputs):
        nodes, labels = inputs
        return tf.gather(nodes, labels)

    def compute_output_shape(self, input_shape):
        return (*input_shape[1], input_shape[0][-1])
