"""Graph layers on a Graclus pyramid of the pixel grid, for the graph U-Net (model.gunet).

Graclus matching coarsens the grid into ever smaller graphs (graphs.grid_pyramid);
these layers work on any level's nodes with sparse products only:

    PyramidChebConv   ChebConv with the level's L~: (B, N, C) -> (B, N, units)
    GraphPool         X_c = D_c^-1 S^T X, each cluster's mean (S: node-to-cluster 0/1)
    GraphUnpool       X = S X_c, each node takes its cluster's value
"""
import numpy as np
import scipy.sparse as sp

from segm.graph_ops import chebyshev, sparse_matmul
from segm.graphs import check_connectivity, cluster_mean, grid_pyramid, normalized_laplacian
from segm.tf_quiet import keras


@keras.saving.register_keras_serializable(package="segm")
class PyramidChebConv(keras.layers.Layer):
    """ChebConv on pyramid level `level`, nodes only: (B, N_level, C) -> (B, N_level, units)."""

    def __init__(self, units, K, height, width, level=0, connectivity=4, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        if int(K) < 1:
            raise ValueError(f"K (the Chebyshev order) must be an integer >= 1, got {K!r}.")
        check_connectivity(connectivity)
        self.units, self.K, self.height, self.width = int(units), int(K), int(height), int(width)
        self.level, self.connectivity, self.use_bias = int(level), int(connectivity), bool(use_bias)

    def build(self, input_shape):
        c = input_shape[-1]
        self.kernel = self.add_weight((self.K, c, self.units), "glorot_uniform", name="kernel")
        self.bias = self.add_weight((self.units,), "zeros", name="bias") if self.use_bias else None
        a = grid_pyramid(self.height, self.width, self.level, self.connectivity)[1]
        self.rescaled = normalized_laplacian(a) - sp.identity(a.shape[0], np.float32)  # lmax = 2

    def call(self, x):
        y = chebyshev(x, lambda t: sparse_matmul(self.rescaled, t), self.kernel)
        return y + self.bias if self.use_bias else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "K": self.K, "height": self.height,
                "width": self.width, "level": self.level, "connectivity": self.connectivity,
                "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="segm")
class GraphPool(keras.layers.Layer):
    """X_c = D_c^-1 S^T X, cluster means: level-1 nodes (B, N, C) -> `level` nodes (B, N_c, C)."""

    def __init__(self, height, width, level, connectivity=4, **kwargs):
        super().__init__(**kwargs)
        check_connectivity(connectivity)
        self.height, self.width, self.level = int(height), int(width), int(level)
        self.connectivity = int(connectivity)

    def operator(self):
        return cluster_mean(grid_pyramid(self.height, self.width, self.level, self.connectivity)[0])

    def build(self, input_shape):
        self.matrix = self.operator()

    def call(self, x):
        return sparse_matmul(self.matrix, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.operator().shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "level": self.level, "connectivity": self.connectivity}


@keras.saving.register_keras_serializable(package="segm")
class GraphUnpool(GraphPool):
    """X = S X_c, each node takes its cluster's value: `level` nodes -> level-1 nodes."""

    def operator(self):
        return grid_pyramid(self.height, self.width, self.level, self.connectivity)[0]
